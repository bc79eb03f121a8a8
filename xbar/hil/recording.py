"""A backend wrapper that records every call into an ``xbar-measurements`` file.

The file (``calibration/SCHEMA.md``) gets, from the same calls:

* ``/programming``: one row per device per programming, pairing the target level with
  the first read of that tile after it (device_id, cycle = how often the tile had
  been programmed before, array = tile id, row, col);
* ``/reads``: devices read two or more times after the same programming with no
  ``advance()`` in between (``[m, r]``, r the smallest such count);
* ``/hil``: the whole session log (``xbar.hil.log``), which ``ReplayBackend`` serves.

``/programming`` and ``/reads`` need discrete levels (integer targets) and enough
samples of every level to pass the calibration reader; a group that cannot is left
out and the reason is stored in the root attribute ``hil_omitted`` (and in
:attr:`RecordingBackend.omitted`). Conductances are in level units, or in
microsiemens when the wrapped backend publishes ``level_conductance_uS``.
The file is written atomically (temp + rename) on :meth:`RecordingBackend.close`.
Without ``force`` it never replaces a file: the path is checked when the recorder is
created and again at close, and if a file appeared there during the session the
recording goes beside it (``NAME.1.h5``, ``NAME.2.h5``, ...; :attr:`RecordingBackend.path`
names it and a ``UserWarning`` says so), so neither that file nor the session is lost.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import torch

from xbar.errors import InputError
from xbar.fileio import atomic_write, check_writable
from xbar.hil.log import ADVANCE, MVM, PROGRAM, READ, Call, SessionLog, to_numpy, write_log
from xbar.hil.protocol import CrossbarBackend, SupportsMVM, levels_to_uS

SCHEMA_NAME = "xbar-measurements"
SCHEMA_VERSION = 1
MIN_PROGRAMMING_PER_LEVEL = 3  # the calibration reader's minimum samples per level
MIN_READS_PER_LEVEL = 1


class RecordingBackend:
    """Wrap ``inner`` and record every program, read, mvm and advance into ``path``.

    Use as a context manager (the file is written when the block ends, also when it
    ends with an error, so a failed session can be inspected) or call :meth:`close`.
    ``force`` allows overwriting an existing file.
    """

    def __init__(self, inner: CrossbarBackend, path: str | os.PathLike, force: bool = False, device: str | None = None) -> None:
        self.inner = inner
        self.path = check_writable(path, force)
        self.force = bool(force)
        self.device = device or inner.name
        self.rows, self.cols = inner.rows, inner.cols
        self.levels = inner.levels
        self.level_conductance_uS = inner.level_conductance_uS
        self.name = inner.name
        self.log = SessionLog(inner.name, inner.rows, inner.cols, inner.levels, float(inner.time_s))
        if inner.level_conductance_uS is not None:
            self.log.level_conductance_uS = tuple(float(v) for v in inner.level_conductance_uS)
        self.omitted: dict[str, str] = {}
        self.closed = False
        self._advanced = 0.0

    # --------------------------------------------------------------- protocol
    def tiles(self) -> Sequence[int]:
        return self.inner.tiles()

    @property
    def time_s(self) -> float:
        return self.inner.time_s

    def advance(self, seconds: float) -> None:
        self._open()
        self.inner.advance(seconds)
        self.log.calls.append(Call(ADVANCE, -1, float(self.inner.time_s), float(seconds), (), self._advanced))
        self._advanced += float(seconds)

    def program(self, tile_id: int, targets: torch.Tensor) -> None:
        self._open()
        t = float(self.inner.time_s)
        self.inner.program(tile_id, targets)
        self.log.calls.append(Call(PROGRAM, tile_id, t, 0.0, (to_numpy(targets),), self._advanced))

    def read(self, tile_id: int) -> torch.Tensor:
        self._open()
        t = float(self.inner.time_s)
        g = self.inner.read(tile_id)
        self.log.calls.append(Call(READ, tile_id, t, 0.0, (to_numpy(g),), self._advanced))
        return g

    def mvm(self, tile_id: int, x: torch.Tensor) -> torch.Tensor:
        self._open()
        if not isinstance(self.inner, SupportsMVM):
            raise InputError(f"{self.name}: mvm: this backend computes no matrix-vector products; read() the tile instead")
        t = float(self.inner.time_s)
        y = self.inner.mvm(tile_id, x)
        self.log.calls.append(Call(MVM, tile_id, t, 0.0, (to_numpy(x), to_numpy(y)), self._advanced))
        return y

    @property
    def reports(self) -> dict | None:
        """The wrapped backend's write-verify reports, if it keeps any."""
        return getattr(self.inner, "reports", None)

    def annotate(self, key: str, value: object) -> None:
        """Attach JSON-serialisable metadata (e.g. a model's tile layout) to the recording."""
        self.log.annotations[key] = value

    # -------------------------------------------------------------- lifecycle
    def close(self) -> Path:
        """Write the recording atomically; later calls do nothing. Returns the path written.

        Without ``force`` an existing file is never replaced (see the module docstring).
        """
        if not self.closed:
            self.closed = True
            if self.force:
                atomic_write(self.path, self._write, force=True)
            else:
                wanted = self.path
                self.path = _write_new(self.path, self._write)
                if self.path != wanted:
                    warnings.warn(
                        f"{wanted}: a file appeared there during the recording session; "
                        f"the recording was written to {self.path} instead",
                        stacklevel=2,
                    )
        return self.path

    def __enter__(self) -> RecordingBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        if self.closed:
            raise InputError(f"{self.path}: recording is closed; expected calls before close()")

    # ------------------------------------------------------------------ files
    def _write(self, tmp: Path) -> None:
        groups = measurement_groups(self.log, self.level_conductance_uS)
        self.omitted = {k: v for k, v in groups.items() if isinstance(v, str)}
        with h5py.File(tmp, "w", track_order=True) as fh:
            fh.attrs["schema"] = SCHEMA_NAME
            fh.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
            fh.attrs["device"] = self.device
            fh.attrs["created"] = datetime.now(UTC).replace(microsecond=0).isoformat()
            if self.levels:
                fh.attrs["levels"] = np.int64(self.levels)
            if self.omitted:
                fh.attrs["hil_omitted"] = "; ".join(f"/{k}: {v}" for k, v in self.omitted.items())
            for name, content in groups.items():
                if isinstance(content, str):
                    continue
                attrs, datasets = content
                g = fh.create_group(name, track_order=True)
                g.attrs.update(attrs)
                for dname, (arr, dattrs) in datasets.items():
                    kw = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if arr.size > 4096 else {}
                    d = g.create_dataset(dname, data=arr, track_times=False, **kw)
                    d.attrs.update(dattrs)
            write_log(fh, self.log)


MAX_BESIDE = 1000  # NAME.1.h5 ... NAME.999.h5


def _write_new(path: Path, write) -> Path:
    """Write ``path`` (or the first free ``NAME.k.SUFFIX`` beside it) without replacing any file.

    The file is written to a temporary name and hard-linked into place, which fails
    instead of replacing a file that exists (also one created a moment ago).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        for k in range(MAX_BESIDE):
            target = path if k == 0 else path.with_name(f"{path.stem}.{k}{path.suffix}")
            try:
                os.link(tmp, target)
                return target
            except FileExistsError:
                continue
            except OSError:  # no hard links on this file system: check, then rename
                if target.exists():
                    continue
                os.replace(tmp, target)
                return target
        raise InputError(f"{path}: it and {MAX_BESIDE - 1} files beside it exist; expected a free file name")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------
# the schema groups derived from the log
Group = tuple[dict, dict[str, tuple[np.ndarray, dict]]]


def measurement_groups(log: SessionLog, level_conductance_uS: Sequence[float] | None) -> dict[str, Group | str]:
    """``{"programming": group or reason omitted, "reads": ...}`` from a session log."""
    if not log.levels:
        why = "analog storage has no discrete target levels; the session is in /hil only"
        return {"programming": why, "reads": why}
    cycles = _cycles(log)
    return {
        "programming": _programming(log, cycles, level_conductance_uS),
        "reads": _reads(log, cycles, level_conductance_uS),
    }


def _cycles(log: SessionLog) -> list[tuple[int, int, np.ndarray, list[Call]]]:
    """(tile, cycle, targets, reads after it) for every programming in the log."""
    out: list[tuple[int, int, np.ndarray, list[Call]]] = []
    current: dict[int, int] = {}
    count: dict[int, int] = {}
    for c in log.calls:
        if c.op == PROGRAM:
            cycle = count.get(c.tile, 0)
            count[c.tile] = cycle + 1
            current[c.tile] = len(out)
            out.append((c.tile, cycle, c.data[0], []))
        elif c.op == READ and c.tile in current:
            out[current[c.tile]][3].append(c)
    return out


def _levels_ok(log: SessionLog, targets: np.ndarray) -> bool:
    return bool(np.all((targets == np.round(targets)) & (targets >= 0) & (targets <= log.levels - 1)))


ZERO_SNAP = 1e-6  # level steps: reads closer than this to 0 uS (or below it) are stored as 0 uS


def _conductance(values: np.ndarray, level_conductance_uS) -> tuple[np.ndarray, str]:
    """Level units -> uS, with reads at or below 0 uS stored as exactly 0.

    A conductance is >= 0; a backend clips at 0 uS in its own float precision, which the
    conversion through ``G_0`` and the step turns into +-1e-7 uS, so anything within
    ``ZERO_SNAP`` level steps of 0 becomes 0 (what the calibration treats as clipped).
    """
    if level_conductance_uS is None:
        return values.astype(np.float64), "level"
    g = levels_to_uS(torch.from_numpy(values), level_conductance_uS).numpy()
    step = (level_conductance_uS[-1] - level_conductance_uS[0]) / (len(level_conductance_uS) - 1)
    g[g < ZERO_SNAP * step] = 0.0
    return g, "uS"


def _group_attrs(log: SessionLog, level_conductance_uS) -> dict:
    attrs: dict = {"levels": np.int64(log.levels)}
    if level_conductance_uS is not None:
        attrs["level_conductance_uS"] = np.asarray(level_conductance_uS, np.float64)
    return attrs


def _coverage(log: SessionLog, target: np.ndarray, minimum: int, what: str) -> str | None:
    counts = np.bincount(target, minlength=log.levels)
    if np.any(counts < minimum):
        h = int(np.argmin(counts))
        return f"level {h} has {int(counts[h])} {what}; the calibration reader needs at least {minimum} per level"
    return None


def _programming(log: SessionLog, cycles, level_conductance_uS) -> Group | str:
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("target_level", "conductance", "device_id", "cycle", "array", "row", "col")}
    for tile, cycle, targets, reads in cycles:
        if not reads:
            continue
        if not _levels_ok(log, targets):
            return f"tile {tile} was programmed with non-integer or out-of-range levels"
        r, c = targets.shape
        rr, cc = np.meshgrid(np.arange(r), np.arange(c), indexing="ij")
        cols["target_level"].append(targets.reshape(-1).astype(np.int64))
        cols["conductance"].append(reads[0].data[0].reshape(-1))
        cols["device_id"].append((tile * log.rows * log.cols + rr * log.cols + cc).reshape(-1))
        cols["cycle"].append(np.full(r * c, cycle, np.int64))
        cols["array"].append(np.full(r * c, tile, np.int64))
        cols["row"].append(rr.reshape(-1))
        cols["col"].append(cc.reshape(-1))
    if not cols["target_level"]:
        return "no tile was read after it was programmed"
    data = {k: np.concatenate(v) for k, v in cols.items()}
    why = _coverage(log, data["target_level"], MIN_PROGRAMMING_PER_LEVEL, "programmed device(s)")
    if why:
        return why
    g, units = _conductance(data["conductance"], level_conductance_uS)
    datasets = {
        "target_level": (data["target_level"].astype(np.int16 if log.levels <= 32767 else np.int32), {}),
        "conductance": (g, {"units": units}),
    }
    for k in ("device_id", "cycle", "array", "row", "col"):
        datasets[k] = (data[k].astype(np.int64), {})
    return _group_attrs(log, level_conductance_uS), datasets


def _reads(log: SessionLog, cycles, level_conductance_uS) -> Group | str:
    sets: list[tuple[int, np.ndarray, list[np.ndarray]]] = []
    for tile, _cycle, targets, reads in cycles:
        by_epoch: dict[float, list[np.ndarray]] = {}
        for c in reads:  # no advance() in between: read noise only, no drift
            by_epoch.setdefault(c.advanced_s, []).append(c.data[0])
        for same in by_epoch.values():
            if len(same) >= 2:
                sets.append((tile, targets, same))
    if not sets:
        return "no tile was read twice after the same programming without advance() in between"
    r = min(len(s[2]) for s in sets)
    ids, tl, g = [], [], []
    for tile, targets, same in sets:
        if not _levels_ok(log, targets):
            return f"tile {tile} was programmed with non-integer or out-of-range levels"
        rows, cols = targets.shape
        rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        ids.append((tile * log.rows * log.cols + rr * log.cols + cc).reshape(-1))
        tl.append(targets.reshape(-1).astype(np.int64))
        g.append(np.stack([s.reshape(-1) for s in same[:r]], axis=1))
    target = np.concatenate(tl)
    why = _coverage(log, target, MIN_READS_PER_LEVEL, "repeatedly read device(s)")
    if why:
        return why
    conductance, units = _conductance(np.concatenate(g), level_conductance_uS)
    datasets = {
        "device_id": (np.concatenate(ids).astype(np.int64), {}),
        "target_level": (target.astype(np.int16 if log.levels <= 32767 else np.int32), {}),
        "conductance": (conductance, {"units": units}),
    }
    return _group_attrs(log, level_conductance_uS), datasets
