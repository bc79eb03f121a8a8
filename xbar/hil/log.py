"""The session log of a recording: every backend call, in order, stored in ``/hil``.

Layout of the ``/hil`` group (format ``xbar-hil`` version 1), one row per call:

| dataset | dtype | meaning |
| --- | --- | --- |
| ``op`` | uint8 [n] | 0 program, 1 read, 2 advance, 3 mvm |
| ``tile`` | int64 [n] | tile id (-1 for advance) |
| ``time_s`` | float64 [n] | the backend clock when the call was made (after it, for advance) |
| ``seconds`` | float64 [n] | seconds advanced (0 for the other calls) |
| ``shape`` | int64 [n, 3] | block rows, block cols, mvm batch (0 where unused) |
| ``offset`` | int64 [n] | start of the call's values in ``values`` |
| ``values`` | float [N] | program: targets; read: read-back values; mvm: x then y; row-major |

Attributes: ``format``, ``format_version``, ``backend``, ``rows``, ``cols``, ``levels``,
``units`` ("level", or "uS" for analog storage), ``start_time_s``, optional
``level_conductance_uS`` and JSON ``annotations`` (e.g. the layer -> tile layout of a
model session). ``values`` keeps
the dtype the backend returned, so a replay hands back bit-identical tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from xbar.errors import InputError

FORMAT = "xbar-hil"
FORMAT_VERSION = 1
PROGRAM, READ, ADVANCE, MVM = 0, 1, 2, 3
OP_NAMES = {PROGRAM: "program", READ: "read", ADVANCE: "advance", MVM: "mvm"}
_COMPRESS_ABOVE = 4096


@dataclass
class Call:
    """One backend call: ``data`` holds targets (program), readings (read) or (x, y) (mvm).

    ``advanced_s`` (derived, not stored) is the total of the ``advance()`` calls before
    this one: the simulated schedule, unlike ``time_s``, which a real chip's clock also moves.
    """

    op: int
    tile: int
    time_s: float
    seconds: float = 0.0
    data: tuple[np.ndarray, ...] = ()
    advanced_s: float = 0.0


@dataclass
class SessionLog:
    """Everything a replay needs: geometry, units, clock start and the calls in order."""

    backend: str
    rows: int
    cols: int
    levels: int
    start_time_s: float = 0.0
    calls: list[Call] = field(default_factory=list)
    annotations: dict = field(default_factory=dict)
    level_conductance_uS: tuple[float, ...] | None = None

    @property
    def units(self) -> str:
        return "level" if self.levels else "uS"


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A detached CPU copy of ``t`` as numpy, dtype kept."""
    return t.detach().to("cpu").clone().numpy()


def write_log(parent: h5py.Group, log: SessionLog) -> h5py.Group:
    """Write ``log`` as ``parent/hil``."""
    g = parent.create_group("hil", track_order=True)
    g.attrs.update(
        format=FORMAT,
        format_version=np.int64(FORMAT_VERSION),
        backend=log.backend,
        rows=np.int64(log.rows),
        cols=np.int64(log.cols),
        levels=np.int64(log.levels),
        units=log.units,
        start_time_s=float(log.start_time_s),
        annotations=json.dumps(log.annotations, sort_keys=True),
    )
    if log.level_conductance_uS is not None:
        g.attrs["level_conductance_uS"] = np.asarray(log.level_conductance_uS, np.float64)
    n = len(log.calls)
    shape = np.zeros((n, 3), np.int64)
    offset = np.zeros(n, np.int64)
    chunks: list[np.ndarray] = []
    pos = 0
    for k, c in enumerate(log.calls):
        offset[k] = pos
        if c.op in (PROGRAM, READ):
            shape[k, :2] = c.data[0].shape
        elif c.op == MVM:
            x, y = c.data
            shape[k] = (x.shape[1], y.shape[1], x.shape[0])
        for a in c.data:
            chunks.append(a.reshape(-1))
            pos += a.size
    dtypes = {a.dtype for a in chunks}
    dtype = dtypes.pop() if len(dtypes) == 1 else np.float64
    values = np.concatenate(chunks).astype(dtype) if chunks else np.zeros(0, np.float32)
    cols = {
        "op": np.array([c.op for c in log.calls], np.uint8),
        "tile": np.array([c.tile for c in log.calls], np.int64),
        "time_s": np.array([c.time_s for c in log.calls], np.float64),
        "seconds": np.array([c.seconds for c in log.calls], np.float64),
        "shape": shape,
        "offset": offset,
        "values": values,
    }
    for name, arr in cols.items():
        kw = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if arr.size > _COMPRESS_ABOVE else {}
        g.create_dataset(name, data=arr, track_times=False, **kw)
    return g


def read_log(path: str | Path) -> SessionLog:
    """Read and check the ``/hil`` group of a recording; one-line InputError on any problem."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file; expected a recording written by xbar.hil.RecordingBackend")
    try:
        fh = h5py.File(p, "r")
    except OSError:
        raise InputError(f"{p}: not a readable HDF5 file; expected a recording written by xbar.hil.RecordingBackend") from None
    with fh:
        if "hil" not in fh or not isinstance(fh["hil"], h5py.Group):
            raise InputError(
                f"{p}: /hil: missing group; expected a session log written by xbar.hil.RecordingBackend "
                "(plain measurement files hold no replayable session)"
            )
        g = fh["hil"]
        return _read_group(p, g)


def _read_group(p: Path, g: h5py.Group) -> SessionLog:
    def attr(name: str):
        if name not in g.attrs:
            raise InputError(f"{p}: /hil/@{name}: missing attribute; expected an {FORMAT} session log")
        v = g.attrs[name]
        return v.decode() if isinstance(v, bytes) else v

    if attr("format") != FORMAT:
        raise InputError(f"{p}: /hil/@format = {attr('format')!r}: expected {FORMAT!r}")
    if int(attr("format_version")) != FORMAT_VERSION:
        raise InputError(f"{p}: /hil/@format_version = {attr('format_version')}: expected {FORMAT_VERSION}")
    data = {}
    for name, ndim in (("op", 1), ("tile", 1), ("time_s", 1), ("seconds", 1), ("shape", 2), ("offset", 1), ("values", 1)):
        if name not in g or not isinstance(g[name], h5py.Dataset):
            raise InputError(f"{p}: /hil/{name}: missing dataset; expected an {FORMAT} session log")
        arr = g[name][()]
        if arr.ndim != ndim:
            raise InputError(f"{p}: /hil/{name}: shape {list(arr.shape)}: expected a {ndim}-D dataset")
        data[name] = arr
    n = data["op"].shape[0]
    for name in ("tile", "time_s", "seconds", "shape", "offset"):
        if data[name].shape[0] != n:
            raise InputError(f"{p}: /hil/{name}: {data[name].shape[0]} rows: expected {n} to match /hil/op")
    values = data["values"]
    calls: list[Call] = []
    advanced = 0.0
    for k in range(n):
        op, off = int(data["op"][k]), int(data["offset"][k])
        r, c, b = (int(v) for v in data["shape"][k])
        if op in (PROGRAM, READ):
            sizes = [(r, c)]
        elif op == MVM:
            sizes = [(b, r), (b, c)]
        elif op == ADVANCE:
            sizes = []
        else:
            raise InputError(f"{p}: /hil/op[{k}] = {op}: expected one of {sorted(OP_NAMES)} ({', '.join(OP_NAMES.values())})")
        parts = []
        for shape in sizes:
            size = shape[0] * shape[1]
            if off < 0 or off + size > values.shape[0]:
                raise InputError(f"{p}: /hil/offset[{k}] = {off}: call needs {size} values, but /hil/values has {values.shape[0]}")
            parts.append(values[off : off + size].reshape(shape))
            off += size
        seconds = float(data["seconds"][k])
        calls.append(Call(op, int(data["tile"][k]), float(data["time_s"][k]), seconds, tuple(parts), advanced))
        if op == ADVANCE:
            advanced += seconds
    try:
        annotations = json.loads(attr("annotations")) if "annotations" in g.attrs else {}
    except json.JSONDecodeError:
        raise InputError(f"{p}: /hil/@annotations: not valid JSON") from None
    return SessionLog(
        backend=str(attr("backend")),
        rows=int(attr("rows")),
        cols=int(attr("cols")),
        levels=int(attr("levels")),
        start_time_s=float(attr("start_time_s")),
        calls=calls,
        annotations=annotations,
        level_conductance_uS=tuple(float(v) for v in g.attrs["level_conductance_uS"]) if "level_conductance_uS" in g.attrs else None,
    )
