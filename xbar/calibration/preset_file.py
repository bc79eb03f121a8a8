"""Write a fitted preset: the TOML file plus, for a measured covariance, its sidecar.

A dense or low-rank ``[correlation]`` chosen by :func:`xbar.calibration.fit` carries
arrays too large for TOML; they go to ``<preset stem>.covariance.h5`` next to the
preset (datasets ``covariance``, or ``eigenvalues`` and ``eigenvectors``), which the
preset names with its SHA-256 (docs/presets.md). Both files are written atomically
and only with ``force`` over existing ones; if the preset cannot be written, the
sidecar written for it is removed.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import tomli_w

from xbar.calibration.result import FitResult
from xbar.fileio import atomic_write_text, check_writable


def sidecar_path(out: str | os.PathLike) -> Path:
    """Where the covariance of the preset ``out`` goes: ``NAME.covariance.h5`` beside it."""
    p = Path(out)
    return p.with_name(f"{p.stem}.covariance.h5")


def needs_sidecar(preset_dict: dict) -> bool:
    corr = preset_dict.get("correlation")
    return isinstance(corr, dict) and any(hasattr(v, "shape") for v in corr.values())


def write_preset(result: FitResult, out: str | os.PathLike, force: bool = False) -> list[Path]:
    """Write the fitted preset to ``out`` (and its covariance sidecar); returns the paths written."""
    from xbar.presets import resolve
    from xbar.presets.covariance import write_sidecar

    out = Path(out)
    check_writable(out, force, create=False)
    doc = dict(result.preset_dict)
    written: list[Path] = []
    if needs_sidecar(doc):
        side = sidecar_path(out)
        check_writable(side, force, create=False)
        cov = result.preset().correlation
        digest = write_sidecar(cov, side, force=force)
        written.append(side)
        table = {k: v for k, v in doc["correlation"].items() if not hasattr(v, "shape")}
        doc["correlation"] = {**table, "file": side.name, "sha256": digest}
    try:
        text = tomli_w.dumps(doc)
        resolve(tomllib.loads(text), origin=str(out), base_dir=out.parent)  # it must load back
        atomic_write_text(out, text, force=force)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return [out, *written]


__all__ = ["needs_sidecar", "sidecar_path", "write_preset"]
