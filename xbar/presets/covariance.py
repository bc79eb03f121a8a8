"""``[correlation] kind = "dense" | "low-rank"``: a measured tile covariance in a preset.

The numbers sit inline in the TOML (small tiles) or in a sidecar file named by
``file`` (relative to the preset's directory) with its ``sha256``, verified on load:

- ``.npy``: dense, the ``[d, d]`` covariance; low-rank, DAT's factor
  ``A_k = V_k D_k^(1/2)`` ``[d, k]`` (Algorithm 1 line 3; its eigenpairs are recovered
  by an SVD);
- ``.h5``: a dataset ``covariance`` (dense) or ``eigenvalues`` ``[k]`` and
  ``eigenvectors`` ``[d, k]`` (low-rank).

``d = rows x cols`` devices of one tile, row-major (index ``r * cols + c``), level
units squared; ``rows`` / ``cols`` default to the mapping's tile. Format and
validation rules: docs/presets.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from xbar.devices.measured import KINDS, MeasuredCovariance
from xbar.errors import InputError, first_line
from xbar.fileio import sha256_of

FIELDS = ("kind", "rows", "cols", "mean", "rank", "file", "sha256", "covariance", "eigenvalues", "eigenvectors")
SIDECAR_SUFFIXES = (".npy", ".h5", ".hdf5")
_loaded: dict[tuple, dict[str, np.ndarray]] = {}  # (path, size, mtime, sha256) -> arrays: a file is read once


def build_measured(table: dict[str, Any], mapping, origin: str, base_dir: Path | None) -> MeasuredCovariance:
    """Validate a dense / low-rank ``[correlation]`` table; one-line ``InputError`` otherwise."""
    where = f"{origin}: [correlation]"
    for key in table:
        if key not in FIELDS:
            raise InputError(f"{where}.{key}: unknown field for kind = {table['kind']!r}; expected one of {', '.join(FIELDS)}")
    kind = table["kind"]
    rows = _integer(table, "rows", mapping.tile_rows, where)
    cols = _integer(table, "cols", mapping.tile_cols, where)
    if (rows, cols) != (mapping.tile_rows, mapping.tile_cols):
        raise InputError(
            f"{where}: rows x cols = {rows} x {cols}: expected the tile of [mapping], "
            f"{mapping.tile_rows} x {mapping.tile_cols} devices"
        )
    rank = _integer(table, "rank", 0, where)
    mean = table.get("mean", 0.0)
    if isinstance(mean, bool) or not isinstance(mean, int | float):
        raise InputError(f"{where}.mean = {mean!r}: expected a number (level units)")
    inline = [k for k in ("covariance", "eigenvalues", "eigenvectors") if k in table]
    if "file" in table:
        if inline:
            raise InputError(f"{where}: both file and inline {', '.join(inline)}; expected one of them")
        arrays, source = _read_sidecar(table, kind, where, base_dir)
    else:
        if "sha256" in table:
            raise InputError(f"{where}.sha256: given without file; expected file = \"NAME.npy\" or \".h5\" next to it")
        arrays, source = {k: table[k] for k in inline}, {}
    need = ("covariance",) if kind == "dense" else ("eigenvalues", "eigenvectors")
    missing = [k for k in need if k not in arrays]
    if missing:
        how = "a [d, d] matrix" if kind == "dense" else "k eigenvalues and a [d, k] matrix of eigenvectors"
        raise InputError(
            f"{where}: {', '.join(missing)}: missing; expected {how} (d = {rows * cols}) inline or in a "
            "sidecar named by file (with its sha256)"
        )
    try:
        return MeasuredCovariance(kind, rows, cols, mean=float(mean), rank=rank, source=source, **arrays)
    except ValueError as exc:
        src = f" ({source['file']})" if source else ""
        raise InputError(f"{where}{src}: {exc}") from None


def _integer(table: dict, key: str, default: int, where: str) -> int:
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise InputError(f"{where}.{key} = {v!r}: expected an integer >= 0")
    return v


def _read_sidecar(table: dict, kind: str, where: str, base_dir: Path | None) -> tuple[dict, dict]:
    name = table["file"]
    if not isinstance(name, str) or not name:
        raise InputError(f"{where}.file = {name!r}: expected a file name (.npy or .h5)")
    digest = table.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
        raise InputError(f"{where}.sha256 = {digest!r}: expected the file's SHA-256 as 64 hex digits")
    path = Path(name)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.suffix.lower() not in SIDECAR_SUFFIXES:
        raise InputError(f"{where}.file = {name!r}: expected a .npy or .h5 file")
    if not path.is_file():
        raise InputError(f"{where}.file = {name!r}: no such file ({path})")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, digest.lower())
    if key not in _loaded:
        actual = sha256_of(path)
        if actual != digest.lower():
            raise InputError(
                f"{where}.sha256: {path} hashes to {actual}, not {digest}; expected the file the preset was written "
                "with (update sha256 if the file was replaced on purpose)"
            )
        _loaded[key] = _read_arrays(path, kind, where)
    return dict(_loaded[key]), {"file": name, "sha256": digest.lower(), "path": str(path.resolve())}


def _read_arrays(path: Path, kind: str, where: str) -> dict[str, np.ndarray]:
    """The arrays of a sidecar file, as float64 numpy."""
    try:
        if path.suffix.lower() == ".npy":
            a = np.load(path, allow_pickle=False)
            if not np.issubdtype(a.dtype, np.number):
                raise ValueError(f"dtype {a.dtype}: expected numbers")
            a = a.astype(np.float64)
            if kind == "dense":
                return {"covariance": a}
            if a.ndim != 2:
                raise ValueError(f"shape {list(a.shape)}: expected the [d, k] factor A_k = V_k D_k^(1/2)")
            u, s, _ = np.linalg.svd(a, full_matrices=False)
            return {"eigenvalues": s**2, "eigenvectors": u}
        import h5py

        with h5py.File(path, "r") as f:
            names = ("covariance",) if kind == "dense" else ("eigenvalues", "eigenvectors")
            missing = [n for n in names if n not in f]
            if missing:
                raise ValueError(f"dataset {', '.join('/' + n for n in missing)} missing; expected {', '.join(names)}")
            return {n: np.asarray(f[n][()], dtype=np.float64) for n in names}
    except (OSError, ValueError) as exc:
        raise InputError(f"{where}.file: {path}: not a readable {kind} covariance ({first_line(exc, 10_000)})") from None


def write_sidecar(cov: MeasuredCovariance, path: str | os.PathLike, force: bool = False) -> str:
    """Write the numbers of ``cov`` to ``path`` (.npy or .h5) atomically; returns its SHA-256.

    Dense: the covariance; low-rank: eigenvalues and eigenvectors (``.h5``) or the
    factor A_k = V_k D_k^(1/2) (``.npy``).
    """
    from xbar.fileio import atomic_write

    p = Path(path)
    if p.suffix.lower() not in SIDECAR_SUFFIXES:
        raise InputError(f"{p}: expected a .npy or .h5 file name for the covariance")

    def write(tmp: Path) -> None:
        if p.suffix.lower() == ".npy":
            a = cov.covariance if cov.kind == "dense" else cov.eigenvectors * cov.eigenvalues.sqrt()
            with open(tmp, "wb") as fh:
                np.save(fh, a.numpy(), allow_pickle=False)
            return
        import h5py

        with h5py.File(tmp, "w") as f:
            if cov.kind == "dense":
                f.create_dataset("covariance", data=cov.covariance.numpy())
            else:
                f.create_dataset("eigenvalues", data=cov.eigenvalues.numpy())
                f.create_dataset("eigenvectors", data=cov.eigenvectors.numpy())
            f.attrs["units"] = "level^2"
            f.attrs["layout"] = f"{cov.rows} x {cov.cols} devices, row-major (index r * cols + c)"

    atomic_write(p, write, force=force)
    return sha256_of(p)


def to_table(cov: MeasuredCovariance, relative_to: Path | None = None, explicit: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The TOML table of ``cov``: its sidecar reference, or the numbers inline.

    ``mean`` and ``rank`` are left out at 0 unless named in ``explicit`` (keys the document gave).
    """
    out: dict[str, Any] = {"kind": cov.kind, "rows": cov.rows, "cols": cov.cols}
    if cov.mean or "mean" in explicit:
        out["mean"] = cov.mean
    if cov.rank or "rank" in explicit:
        out["rank"] = cov.rank
    src = cov.source
    if src.get("path"):
        path = Path(src["path"])
        name = str(path)
        if relative_to is not None:
            try:
                name = str(path.relative_to(Path(relative_to).resolve()))
            except ValueError:
                pass
        out["file"] = name
        out["sha256"] = src["sha256"]
    elif cov.kind == "dense":
        out["covariance"] = cov.covariance.tolist()
    else:
        out["eigenvalues"] = cov.eigenvalues.tolist()
        out["eigenvectors"] = cov.eigenvectors.tolist()
    return out


__all__ = ["KINDS", "build_measured", "sha256_of", "to_table", "write_sidecar"]
