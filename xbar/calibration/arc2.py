"""Import an ArC TWO session (an ArC2Control data store) into an ``xbar-measurements`` file.

ArC2Control keeps a session in one HDF5 file: ``/crosspoints/WxxByy/timeseries`` is the
biasing history of the crosspoint on word line xx and bit line yy (``current``,
``voltage``, ``pulse_width``, ``read_voltage``, ``op_type``; the ``NROWS`` attribute counts
the valid rows), experiment modules add tables under ``/crosspoints/WxxByy/experiments``
and ``/synthetics``, ``/crossbar/{current,voltage}`` hold the latest raster of the array
and the root attributes ``words`` and ``bits`` its size. The mapping onto the schema
(``calibration/SCHEMA.md``, section "ArC TWO data stores", states it rule by rule):

* conductance of a read = ``|current / read_voltage|`` in siemens;
* ``/programming``: the read that ends each programming (write-verify) sequence of a
  crosspoint named in the plan; the plan CSV gives its target level;
* ``/reads``: runs of two or more reads between programming sequences;
* ``/drift``: retention tables (``read_voltage``, ``current``, ``tstamp_s``, ``tstamp_us``);
* ``/array_maps`` (when asked for): the ``/crossbar`` raster over the planned rectangle,
  in level units, minus the planned pattern;
* ``/switching``: reads after the pulses of crosspoints not in the plan (SET/RESET cycling).

Only h5py and numpy are needed; nothing of ArC2Control is imported.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from xbar.calibration.csv_import import _read_table, write_validated
from xbar.calibration.schema import (
    GROUPS,
    MAX_ROWS,
    ArrayMaps,
    Drift,
    Measurements,
    Programming,
    Reads,
    Switching,
    to_level_units,
)
from xbar.errors import InputError, first_line
from xbar.fileio import check_writable

OP_READ, OP_PULSE = 0b01, 0b10  # ArC2Control's OpType bits (PULSEREAD = both)
TIMESERIES_FIELDS = ("current", "voltage", "pulse_width", "read_voltage", "op_type")
RETENTION_FIELDS = ("read_voltage", "current", "tstamp_s", "tstamp_us")
PLAN_COLUMNS = (("word", "bit", "target_level", "level_conductance_uS"), ("cycle",))
SCHEDULE_TOLERANCE = 0.05  # relative spread of retention read times accepted as one schedule
MAX_LINES = 65_536  # word or bit lines of one array
_CROSSPOINT = re.compile(r"^W(\d+)B(\d+)$")


def crosspoint_name(word: int, bit: int) -> str:
    """ArC2Control's name of a crosspoint group, e.g. ``W03B12``."""
    return f"W{word:02d}B{bit:02d}"


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Plan:
    """The experiment plan: the target level of every programmed crosspoint (and cycle).

    ``targets[(word, bit)]`` maps a cycle (``None``: every cycle) to a level;
    ``lines`` gives the plan line of each crosspoint for messages.
    """

    path: Path
    targets: dict[tuple[int, int], dict[int | None, int]]
    level_conductance_uS: np.ndarray
    lines: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def levels(self) -> int:
        return int(self.level_conductance_uS.size)

    def target(self, xp: tuple[int, int], cycle: int) -> int:
        t = self.targets[xp]
        return t[None] if None in t else t[cycle]


def read_plan(path: str | os.PathLike) -> Plan:
    """Read a plan CSV: ``word,bit,target_level,level_conductance_uS[,cycle]`` (SCHEMA.md).

    Every level 0..L-1 (L = the largest target + 1) needs at least one row, whose
    ``level_conductance_uS`` is the nominal conductance of that level (the same on
    every row of the level, strictly increasing with the level).
    """
    src = Path(path)
    table = _read_table(src, *PLAN_COLUMNS)
    lines = table["_line"]
    has_cycle = "cycle" in table
    word, bit = np.asarray(table["word"]), np.asarray(table["bit"])
    target = np.asarray(table["target_level"])
    g_uS = np.asarray(table["level_conductance_uS"], dtype=np.float64)
    for name, arr in (("word", word), ("bit", bit), ("cycle", np.asarray(table.get("cycle", [0])))):
        if np.any(arr < 0):
            i = int(np.argmax(arr < 0))
            raise InputError(f"{src}: line {lines[i]}: {name} = {int(arr[i])}; expected >= 0")
    if np.any(g_uS < 0):
        i = int(np.argmax(g_uS < 0))
        raise InputError(f"{src}: line {lines[i]}: level_conductance_uS = {g_uS[i]}; expected >= 0 uS")
    L = int(target.max()) + 1
    if L < 2:
        raise InputError(f"{src}: target_level: every row targets level 0; expected at least two levels (0 and 1)")
    nominal = np.full(L, np.nan)
    for i, (h, g) in enumerate(zip(target, g_uS)):
        if np.isnan(nominal[h]):
            nominal[h] = g
        elif nominal[h] != g:
            raise InputError(
                f"{src}: line {lines[i]}: level_conductance_uS = {g:g} for level {h}, which an earlier row "
                f"gives as {nominal[h]:g}; expected one nominal conductance per level"
            )
    if np.any(np.isnan(nominal)):
        h = int(np.argmax(np.isnan(nominal)))
        raise InputError(
            f"{src}: target_level: no row targets level {h}; expected every level 0..{L - 1} on at least one "
            "row (its level_conductance_uS is the level's nominal conductance)"
        )
    if np.any(np.diff(nominal) <= 0):
        h = int(np.argmax(np.diff(nominal) <= 0)) + 1
        raise InputError(
            f"{src}: level_conductance_uS: level {h} ({nominal[h]:g} uS) is not above level {h - 1} "
            f"({nominal[h - 1]:g} uS); expected conductances increasing with the level"
        )
    targets: dict[tuple[int, int], dict[int | None, int]] = {}
    first_line_of: dict[tuple[int, int], int] = {}
    cycles = table.get("cycle", [None] * len(lines))
    for i, (w, b, h, c) in enumerate(zip(word.tolist(), bit.tolist(), target.tolist(), cycles)):
        xp = (w, b)
        per = targets.setdefault(xp, {})
        first_line_of.setdefault(xp, lines[i])
        if c in per:
            what = f"cycle {c} of {crosspoint_name(*xp)}" if has_cycle else crosspoint_name(*xp)
            raise InputError(
                f"{src}: line {lines[i]}: {what} is planned twice; expected one row per "
                + ("crosspoint and cycle" if has_cycle else "crosspoint (add a cycle column for several)")
            )
        per[c] = h
    return Plan(src, targets, nominal, first_line_of)


# -------------------------------------------------------------------------- the store
@dataclass
class _Crosspoint:
    """The valid history of one crosspoint, cut into sequences and read runs."""

    word: int
    bit: int
    rows: np.ndarray  # structured, first NROWS rows
    seq_end: np.ndarray  # row index of the read ending each programming sequence

    @property
    def name(self) -> str:
        return crosspoint_name(self.word, self.bit)

    def conductance_S(self, idx: np.ndarray) -> np.ndarray:
        r = self.rows[idx]
        return np.abs(r["current"].astype(np.float64) / r["read_voltage"].astype(np.float64))


@dataclass
class _Series:
    """One retention series: a crosspoint read at times ``tstamp_s`` (unix seconds)."""

    xp: tuple[int, int]
    table: str  # dataset path, for messages
    column: int | None  # its column in a multi-crosspoint table
    current: np.ndarray  # as stored (float32 for ArC2Control)
    read_voltage: np.ndarray
    tstamp_s: np.ndarray  # float64 seconds

    def fail(self, store: _Store, field: str | None, message: str) -> None:
        column = f" (column {self.column})" if self.column is not None else ""
        store.fail(f"{self.table}{'/' + field if field else ''}{column}", message)

    def check(self, store: _Store) -> None:
        """What the drift fit needs: increasing times, finite nonzero reads."""
        if not np.all(np.isfinite(self.tstamp_s)) or np.any(np.diff(self.tstamp_s) <= 0):
            self.fail(store, "tstamp_s", "read times are not strictly increasing; expected one row per read, in time order")
        for what, arr in (("read_voltage", self.read_voltage), ("current", self.current)):
            a = arr.astype(np.float64)
            bad = ~(np.isfinite(a) & (a != 0))
            if np.any(bad):
                i = int(np.argmax(bad))
                self.fail(store, what, f"row {i}: {what} = {a[i]}; expected a finite, nonzero value "
                          "(G = |current / read_voltage| and the drift law is a ratio of conductances)")


class _Store:
    """Validating reader of an ArC2Control data store; every problem is one ``InputError`` line."""

    def __init__(self, path: Path, fh: h5py.File) -> None:
        self.path, self.fh = path, fh

    def fail(self, where: str, message: str) -> None:
        raise InputError(f"{self.path}: {where}: {message}")

    def int_attr(self, obj, name: str, where: str, meaning: str) -> int:
        if name not in obj.attrs:
            self.fail(where, f"missing; expected {meaning} (an ArC2Control data store)")
        v = np.asarray(obj.attrs[name])
        if v.size != 1 or v.dtype.kind not in "iu":
            self.fail(where, f"= {obj.attrs[name]!r}; expected {meaning} as one integer")
        return int(v.reshape(()))

    def group(self, name: str) -> h5py.Group:
        if name not in self.fh:
            self.fail(f"/{name}", "missing group; expected an ArC2Control data store with /crosspoints, /crossbar and /synthetics")
        g = self.fh[name]
        if not isinstance(g, h5py.Group):
            self.fail(f"/{name}", "is a dataset; expected a group")
        return g

    def structure(self) -> None:
        root = self.fh["/"]
        self.words = self.int_attr(root, "words", "root attribute 'words'", "the number of word lines")
        self.bits = self.int_attr(root, "bits", "root attribute 'bits'", "the number of bit lines")
        for name, v in (("words", self.words), ("bits", self.bits)):
            if not 1 <= v <= MAX_LINES:
                self.fail(f"root attribute '{name}'", f"= {v}; expected 1 to {MAX_LINES} lines")
        self.crosspoints_group = self.group("crosspoints")
        self.crossbar = self.group("crossbar")
        self.synthetics = self.group("synthetics")
        self.title = self.fh.attrs.get("TITLE", self.path.name)
        if isinstance(self.title, bytes):
            self.title = self.title.decode("utf-8", "replace")
        self.title = str(self.title)

    def check_xp(self, w: int, b: int, where: str) -> None:
        if not (0 <= w < self.words and 0 <= b < self.bits):
            self.fail(
                where,
                f"crosspoint {crosspoint_name(w, b)} (word {w}, bit {b}) is outside the array of "
                f"{self.words} word x {self.bits} bit lines; expected words 0..{self.words - 1}, bits 0..{self.bits - 1}",
            )

    # ---------------------------------------------------------------- timeseries
    def crosspoints(self) -> dict[tuple[int, int], _Crosspoint]:
        out: dict[tuple[int, int], _Crosspoint] = {}
        for name, g in self.crosspoints_group.items():
            where = f"/crosspoints/{name}"
            m = _CROSSPOINT.match(name)
            if m is None or not isinstance(g, h5py.Group):
                self.fail(where, "not a crosspoint group; expected groups named WxxByy (word xx, bit yy)")
            w, b = int(m.group(1)), int(m.group(2))
            self.check_xp(w, b, where)
            out[(w, b)] = self.timeseries(w, b, g, where)
        if not out:
            self.fail("/crosspoints", "holds no crosspoint; expected at least one WxxByy group with a timeseries")
        return out

    def nrows(self, d: h5py.Dataset, where: str, required: bool) -> int:
        """Valid rows of a table: ``NROWS`` (required for a timeseries); 0 or absent = every row."""
        n = d.shape[0]
        if "NROWS" not in d.attrs:
            if required:
                self.fail(f"{where}/@NROWS", "missing; expected the number of valid rows")
            return n
        v = np.asarray(d.attrs["NROWS"])
        if v.size != 1 or v.dtype.kind not in "iu" or int(v.reshape(())) < 0:
            self.fail(f"{where}/@NROWS", f"= {d.attrs['NROWS']!r}; expected a row count >= 0")
        k = int(v.reshape(()))
        if k > n:
            self.fail(f"{where}/@NROWS", f"NROWS = {k} is past the data ({n} rows); expected at most {n}")
        return k if required or k > 0 else n

    def table(self, obj, where: str, fields: Sequence[str]) -> h5py.Dataset:
        if not isinstance(obj, h5py.Dataset) or obj.dtype.names is None or obj.ndim != 1:
            self.fail(where, f"expected a 1-D table with fields {', '.join(fields)}")
        missing = [f for f in fields if f not in obj.dtype.names]
        if missing:
            self.fail(where, f"missing field(s) {', '.join(missing)}; expected {', '.join(fields)}")
        if obj.shape[0] > MAX_ROWS:
            self.fail(where, f"absurd size {obj.shape[0]} rows; expected at most {MAX_ROWS:.0e}")
        return obj

    def timeseries(self, w: int, b: int, g: h5py.Group, where: str) -> _Crosspoint:
        where = f"{where}/timeseries"
        if "timeseries" not in g:
            self.fail(where, "missing dataset; expected the crosspoint's biasing history")
        d = self.table(g["timeseries"], where, TIMESERIES_FIELDS)
        rows = d[: self.nrows(d, where, required=True)]
        op = rows["op_type"].astype(np.int64)
        bad = ~np.isin(op, (OP_READ, OP_PULSE, OP_READ | OP_PULSE))
        if np.any(bad):
            i = int(np.argmax(bad))
            self.fail(f"{where}/op_type", f"row {i}: op_type = {int(op[i])}; expected 1 (read), 2 (pulse) or 3 (pulse-read)")
        reads = (op & OP_READ) != 0
        cur, vr = rows["current"].astype(np.float64), rows["read_voltage"].astype(np.float64)
        bad = reads & ~np.isfinite(cur)
        if np.any(bad):
            i = int(np.argmax(bad))
            self.fail(f"{where}/current", f"row {i}: current = {cur[i]} in a read; expected a finite current")
        bad = reads & ~(np.isfinite(vr) & (vr != 0))
        if np.any(bad):
            i = int(np.argmax(bad))
            self.fail(f"{where}/read_voltage", f"row {i}: read_voltage = {vr[i]} in a read; expected a finite, nonzero read voltage")
        return self.segment(w, b, rows, op, where)

    def segment(self, w: int, b: int, rows: np.ndarray, op: np.ndarray, where: str) -> _Crosspoint:
        """Programming sequences: pulses at most one read apart; each ends with its last pulse's read."""
        pulse_idx = np.flatnonzero(op & OP_PULSE)
        if pulse_idx.size == 0:
            empty = np.zeros(0, np.int64)
            return _Crosspoint(w, b, rows, empty)
        new = np.diff(pulse_idx) > 2  # two or more reads between pulses end a sequence
        last = pulse_idx[np.r_[new, True]]
        end = np.where(op[last] & OP_READ, last, last + 1)  # a pulse-read reads itself
        if end[-1] >= rows.shape[0]:
            self.fail(where, f"row {int(last[-1])}: the history ends with a pulse and no read; expected a read after the last pulse")
        return _Crosspoint(w, b, rows, end)

    # ---------------------------------------------------------------- retention
    def retention_series(self, planned: set[tuple[int, int]]) -> list[_Series]:
        """The series of ``planned`` crosspoints in every retention table (crosspoint experiments, /synthetics)."""
        found: list[tuple[str, h5py.Dataset, tuple[int, int] | None]] = []

        def visit(parent_xp):
            def f(name, obj):
                if isinstance(obj, h5py.Dataset) and obj.dtype.names and all(k in obj.dtype.names for k in RETENTION_FIELDS):
                    found.append((obj.name, obj, parent_xp))
            return f

        for name, g in self.crosspoints_group.items():
            if "experiments" in g and isinstance(g["experiments"], h5py.Group):
                m = _CROSSPOINT.match(name)
                g["experiments"].visititems(visit((int(m.group(1)), int(m.group(2)))))
        self.synthetics.visititems(visit(None))
        series: list[_Series] = []
        for where, d, parent in sorted(found, key=lambda t: t[0]):
            series.extend(self.retention_table(where, d, parent, planned))
        return series

    def retention_table(
        self, where: str, d: h5py.Dataset, parent: tuple[int, int] | None, planned: set[tuple[int, int]]
    ) -> list[_Series]:
        self.table(d, where, RETENTION_FIELDS)
        rows = d[: self.nrows(d, where, required=False)]
        if parent is not None and "crosspoints" not in d.attrs:
            xps = np.array([parent])
        else:
            if "crosspoints" not in d.attrs:
                self.fail(f"{where}/@crosspoints", "missing; expected the [[word, bit], ...] the table reads")
            xps = np.asarray(d.attrs["crosspoints"])
            if xps.dtype.kind not in "iu" or xps.ndim != 2 or xps.shape[1] != 2 or xps.shape[0] == 0:
                self.fail(f"{where}/@crosspoints", f"has shape {list(xps.shape)} ({xps.dtype}); expected integer [[word, bit], ...]")
        for w, b in xps.tolist():
            self.check_xp(w, b, f"{where}/@crosspoints")
        k = xps.shape[0]
        cur, vr = rows["current"], rows["read_voltage"]
        if cur.shape[1:] not in ((), (k,)) or vr.shape[1:] not in ((), (k,)) or (parent is not None and k != 1):
            self.fail(where, f"current has shape {list(cur.shape)} for {k} crosspoint(s); expected one column per crosspoint")
        cur = cur.reshape(-1, 1) if cur.ndim == 1 else cur
        vr = np.broadcast_to(vr.reshape(-1, 1) if vr.ndim == 1 else vr, cur.shape)
        cols = [j for j in range(k) if (int(xps[j, 0]), int(xps[j, 1])) in planned]
        if not cols:
            return []  # crosspoints outside the plan: not imported
        t = rows["tstamp_s"].astype(np.float64) + 1e-6 * rows["tstamp_us"].astype(np.float64)
        return [
            _Series((int(xps[j, 0]), int(xps[j, 1])), where, j if k > 1 else None, cur[:, j], vr[:, j], t)
            for j in cols
        ]

    def raster(self) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for name in ("current", "voltage"):
            where = f"/crossbar/{name}"
            if name not in self.crossbar or not isinstance(self.crossbar[name], h5py.Dataset):
                self.fail(where, "missing dataset; expected the raster of the array")
            d = self.crossbar[name]
            if d.shape != (self.bits, self.words) or d.dtype.kind not in "iuf":
                self.fail(where, f"has shape {list(d.shape or ())} ({d.dtype}); expected numbers [bits, words] = [{self.bits}, {self.words}]")
            out.append(d[()].astype(np.float64))
        return out[0], out[1]

    def created(self) -> str:
        """The latest time stamp in the store (experiment tables), else now: ISO 8601 UTC."""
        stamps: list[float] = []

        def f(name, obj):
            if "TSTAMP" in obj.attrs:
                v = np.asarray(obj.attrs["TSTAMP"])
                if v.size == 1 and v.dtype.kind in "iu":
                    stamps.append(int(v.reshape(())) / 1e9)

        self.fh.visititems(f)
        t = max(stamps) if stamps else datetime.now(UTC).timestamp()
        return datetime.fromtimestamp(int(t), UTC).isoformat()


# ------------------------------------------------------------------------ conversion
def _find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """First index where ``needle`` occurs contiguously in ``haystack`` (exact), else -1."""
    T = needle.size
    for i in np.flatnonzero(haystack[: haystack.size - T + 1] == needle[0]):
        if np.array_equal(haystack[i : i + T], needle):
            return int(i)
    return -1


def _common_runs(runs: list[tuple[int, int, np.ndarray]]) -> list[tuple[int, int, np.ndarray]]:
    """Cut read runs ``(device, target, reads)`` to the common length r >= 2 that keeps the most reads."""
    lengths = np.array([g.size for _, _, g in runs], dtype=np.int64)
    cand = np.unique(lengths[lengths >= 2])
    if cand.size == 0:
        return []
    kept = cand * (lengths[None, :] >= cand[:, None]).sum(axis=1)
    r = int(cand[np.argmax(kept)])
    return [(d, h, g[:r]) for d, h, g in runs if g.size >= r]


def convert_arc2(
    session: str | os.PathLike,
    plan: str | os.PathLike | None = None,
    *,
    retention_delay_s: float = 1.0,
    array_map: bool = False,
    skip: Sequence[str] = (),
    device: str | None = None,
    created: str | None = None,
) -> Measurements:
    """The in-memory :class:`Measurements` of an ArC2Control store (see :func:`import_arc2`)."""
    src = Path(session)
    bad = [g for g in skip if g not in GROUPS]
    if bad:
        raise InputError(f"skip = {', '.join(bad)}: expected group names among {', '.join(GROUPS)}")
    if not (math.isfinite(retention_delay_s) and retention_delay_s > 0):
        raise InputError(f"retention_delay_s = {retention_delay_s}: expected a time > 0 s")
    if not src.is_file():
        raise InputError(f"{src}: no such file" if not src.exists() else f"{src}: is not a file; expected an ArC2Control data store")
    the_plan = read_plan(plan) if plan is not None else None
    try:
        fh = h5py.File(src, "r")
    except OSError:
        raise InputError(f"{src}: not a readable HDF5 file (truncated, corrupt or another format); expected an ArC2Control data store") from None
    try:
        with fh:
            store = _Store(src, fh)
            skipped = set(skip) | (set() if array_map else {"array_maps"})
            return _convert(store, the_plan, retention_delay_s, skipped, device, created)
    except InputError:
        raise
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{src}: not a readable ArC2Control data store (truncated or corrupt: {first_line(exc)})") from None


def _convert(store: _Store, plan: Plan | None, delay: float, skip: set, device, created) -> Measurements:
    """Every group of the mapping (module docstring, SCHEMA.md) that has data and is not skipped."""
    store.structure()
    xps = store.crosspoints()
    src = store.path
    parts: dict = {}
    if plan is not None:
        _check_plan(store, plan, xps)
    planned = set(plan.targets) if plan is not None else set()
    L = plan.levels if plan is not None else 2

    series = store.retention_series(planned) if plan is not None else []
    in_retention, series_target = _match_retention(store, plan, xps, series)
    if plan is not None and "programming" not in skip:
        parts["programming"] = _programming(store, plan, xps)
    if plan is not None and "reads" not in skip:
        reads = _reads(store, plan, xps, in_retention)
        if reads is not None:
            parts["reads"] = reads
    if series and "drift" not in skip:
        parts["drift"] = _drift(store, series, series_target, delay, L)
    if plan is not None and "array_maps" not in skip:
        m = _array_map(store, plan)
        if m is not None:
            parts["array_maps"] = ArrayMaps(m[None])
    if "switching" not in skip:
        sw = _switching(store, {xp: x for xp, x in xps.items() if xp not in planned})
        if sw is not None:
            parts["switching"] = sw

    if not parts:
        hint = "" if plan is not None else "; pass a plan CSV naming the target level of each programmed crosspoint"
        store.fail("/crosspoints", f"no programming, reads, retention, raster or SET/RESET cycling data to import{hint}")
    return Measurements(
        device=device or f"{store.title} (ArC TWO, {store.words} word x {store.bits} bit lines)",
        created=created or store.created(),
        levels=L,
        extra_attrs={
            "source_instrument": "ArC TWO (ArC2Control data store)",
            "source_session": src.name,
            **({"source_plan": plan.path.name} if plan is not None else {}),
            "retention_delay_s": float(delay),
        },
        **parts,
    )


def _device_id(store: _Store, xp: tuple[int, int]) -> int:
    return xp[0] * store.bits + xp[1]


def _match_retention(store, plan, xps, series) -> tuple[dict, list[int]]:
    """Rows of each history that a retention series also holds, and each series' target level.

    The target is that of the sequence before the series' reads in the history (the
    crosspoint's last sequence when the history does not hold them).
    """
    in_retention = {xp: np.zeros(x.rows.shape[0], bool) for xp, x in xps.items()}
    targets = []
    for s in series:
        x = xps[s.xp]
        at = _find(x.rows["current"], s.current)
        if at >= 0:
            in_retention[s.xp][at : at + s.current.size] = True
        k = int(np.searchsorted(x.seq_end, at if at >= 0 else x.rows.shape[0])) - 1
        if k < 0:
            s.fail(store, None, f"retention of {x.name} starts before its first programming sequence; expected it after programming")
        targets.append(plan.target(s.xp, k))
    return in_retention, targets


def _programming(store: _Store, plan: Plan, xps: dict[tuple[int, int], _Crosspoint]) -> Programming:
    """The read ending each programming sequence of each planned crosspoint, in (word, bit, cycle) order."""
    cols: dict[str, list] = {k: [] for k in ("target", "g", "device", "cycle", "row", "col")}
    for xp in sorted(plan.targets):
        x = xps[xp]
        n = x.seq_end.size
        cols["target"] += [plan.target(xp, k) for k in range(n)]
        cols["g"].append(x.conductance_S(x.seq_end))
        cols["device"] += [_device_id(store, xp)] * n
        cols["cycle"] += list(range(n))
        cols["row"] += [xp[0]] * n
        cols["col"] += [xp[1]] * n
    i = {k: np.asarray(v, dtype=np.int64) for k, v in cols.items() if k != "g"}
    return Programming(
        i["target"], np.concatenate(cols["g"]), "S", plan.levels, plan.level_conductance_uS,
        device_id=i["device"], cycle=i["cycle"], array=np.zeros_like(i["target"]), row=i["row"], col=i["col"],
    )


def _reads(store: _Store, plan: Plan, xps: dict, in_retention: dict) -> Reads | None:
    """Runs of >= 2 reads after each sequence (not its result, not retention rows), cut to a common length."""
    runs = []
    for xp in sorted(plan.targets):
        x = xps[xp]
        breaker = ((x.rows["op_type"].astype(np.int64) & OP_PULSE) != 0) | in_retention[xp]
        breaker[x.seq_end] = True
        breaker[: x.seq_end[0]] = True  # reads before the first programming have no target
        idx = np.flatnonzero(~breaker)
        _, first, counts = np.unique(np.cumsum(breaker)[idx], return_index=True, return_counts=True)
        for f, c in zip(first, counts):
            if c >= 2:
                rows = idx[f : f + c]
                k = int(np.searchsorted(x.seq_end, rows[0])) - 1
                runs.append((_device_id(store, xp), plan.target(xp, k), x.conductance_S(rows)))
    runs = _common_runs(runs)
    if not runs:
        return None
    dev, target, g = zip(*runs)
    return Reads(np.array(dev, np.int64), np.array(target, np.int64), np.stack(g), "S", plan.levels, plan.level_conductance_uS)


def _check_plan(store: _Store, plan: Plan, xps: dict[tuple[int, int], _Crosspoint]) -> None:
    for xp, per in plan.targets.items():
        line = f"{plan.path}: line {plan.lines[xp]}"
        name = crosspoint_name(*xp)
        if not (0 <= xp[0] < store.words and 0 <= xp[1] < store.bits):
            raise InputError(
                f"{line}: {name} is outside the array of {store.path} ({store.words} word x {store.bits} bit lines); "
                f"expected words 0..{store.words - 1}, bits 0..{store.bits - 1}"
            )
        if xp not in xps:
            raise InputError(f"{line}: {name} is not in {store.path} (no /crosspoints/{name}); expected a crosspoint of the session")
        n = xps[xp].seq_end.size
        if n == 0:
            raise InputError(f"{line}: {name} has no programming sequence (no pulse) in {store.path}; expected a programmed crosspoint")
        if None not in per and sorted(per) != list(range(n)):
            raise InputError(
                f"{plan.path}: cycle: {name} has {n} programming sequence(s) in {store.path} but the plan names "
                f"cycle(s) {', '.join(map(str, sorted(per)))}; expected cycles 0..{n - 1}"
            )


def _drift(store: _Store, series: list[_Series], target: list[int], delay: float, L: int) -> Drift:
    """Retention series on one schedule: time since programming = delay + time since the first read."""
    for s in series:
        s.check(store)
    T = min(s.tstamp_s.size for s in series)
    if T < 3:
        short = min(series, key=lambda s: s.tstamp_s.size)
        short.fail(store, None, f"has {short.tstamp_s.size} read(s); expected at least 3 per retention table")
    rel = np.stack([s.tstamp_s[:T] - s.tstamp_s[0] for s in series]) + delay
    t = np.median(rel, axis=0)
    off = np.abs(rel - t) > SCHEDULE_TOLERANCE * t
    if np.any(off):
        i, j = np.unravel_index(int(np.argmax(off)), off.shape)
        series[i].fail(
            store,
            None,
            f"read {j} at {rel[i, j]:.4g} s after programming while the other retention tables read at "
            f"{t[j]:.4g} s; expected one retention schedule (within {SCHEDULE_TOLERANCE:.0%})",
        )
    g = np.stack([np.abs(s.current[:T].astype(np.float64) / s.read_voltage[:T].astype(np.float64)) for s in series])
    return Drift(
        time_s=t, conductance=g, target_level=np.asarray(target, np.int64), t0_s=float(t[0]), units="S",
        levels=L, device_id=np.array([_device_id(store, s.xp) for s in series], np.int64),
    )


def _array_map(store: _Store, plan: Plan) -> np.ndarray | None:
    """Raster over the planned rectangle, level units, minus the last planned target ([words, bits])."""
    cur, volt = store.raster()
    if not np.any(cur) and not np.any(volt):
        return None  # never rastered
    ws = sorted({w for w, _ in plan.targets})
    bs = sorted({b for _, b in plan.targets})
    if len(ws) < 2 or len(bs) < 2 or len(plan.targets) != len(ws) * len(bs) or ws[-1] - ws[0] + 1 != len(ws) or bs[-1] - bs[0] + 1 != len(bs):
        return None  # the plan does not cover a rectangle of the array
    sub = (slice(bs[0], bs[-1] + 1), slice(ws[0], ws[-1] + 1))
    c, v = cur[sub].T, volt[sub].T  # [words, bits]
    bad = ~(np.isfinite(c) & np.isfinite(v) & (v != 0))
    if np.any(bad):
        i, j = np.unravel_index(int(np.argmax(bad)), bad.shape)
        store.fail(
            "/crossbar",
            f"the raster at {crosspoint_name(ws[i], bs[j])} holds current {c[i, j]} at voltage {v[i, j]}; expected a read of "
            "every planned crosspoint (take a Read All after programming, or skip array_maps)",
        )
    target = np.empty(c.shape, np.int64)
    for (w, b), per in plan.targets.items():
        target[w - ws[0], b - bs[0]] = per[max(per, key=lambda k: -1 if k is None else k)]
    return to_level_units(np.abs(c / v), "S", plan.level_conductance_uS) - target


def _switching(store: _Store, xps: dict[tuple[int, int], _Crosspoint]) -> Switching | None:
    """Reads after each pulse of crosspoints cycled with both polarities (not in the plan)."""
    r_pos, r_neg = [], []
    for x in xps.values():
        op = x.rows["op_type"].astype(np.int64)
        pulse = np.flatnonzero(op & OP_PULSE)
        if pulse.size == 0:
            continue
        read_at = np.where(op[pulse] & OP_READ, pulse, pulse + 1)
        ok = read_at < op.size
        ok[ok] &= op[read_at[ok]] == np.where(op[pulse[ok]] & OP_READ, OP_READ | OP_PULSE, OP_READ)
        pulse, read_at = pulse[ok], read_at[ok]
        v = x.rows["voltage"][pulse].astype(np.float64)
        if not (np.any(v > 0) and np.any(v < 0)):
            continue  # one polarity only (forming, say): not a cycling experiment
        if not np.all(np.isfinite(v) & (v != 0)):
            i = int(pulse[np.argmax(~(np.isfinite(v) & (v != 0)))])
            store.fail(f"/crosspoints/{x.name}/timeseries/voltage", f"row {i}: pulse voltage = {x.rows['voltage'][i]}; expected a nonzero pulse")
        cur = x.rows["current"][read_at].astype(np.float64)
        if np.any(cur == 0):
            i = int(read_at[np.argmax(cur == 0)])
            store.fail(f"/crosspoints/{x.name}/timeseries/current", (
                f"row {i}: current = 0 after a pulse; expected a finite resistance (a crosspoint that is not in the "
                "plan is read as SET/RESET cycling: name programmed crosspoints in the plan, or skip switching)"
            ))
        r = 1.0 / x.conductance_S(read_at)
        r_pos.append(r[v > 0])
        r_neg.append(r[v < 0])
    if not r_pos:
        return None
    pos, neg = np.concatenate(r_pos), np.concatenate(r_neg)
    return Switching(pos, neg) if np.median(pos) < np.median(neg) else Switching(neg, pos)


def import_arc2(
    session: str | os.PathLike,
    out: str | os.PathLike,
    plan: str | os.PathLike | None = None,
    force: bool = False,
    *,
    retention_delay_s: float = 1.0,
    array_map: bool = False,
    skip: Sequence[str] = (),
    device: str | None = None,
    created: str | None = None,
) -> Path:
    """Convert an ArC2Control data store into a validated ``xbar-measurements`` file.

    Args:
        session: the ArC2Control HDF5 file.
        out: the measurement file to write (atomically; never overwritten without ``force``).
        plan: CSV ``word,bit,target_level,level_conductance_uS[,cycle]`` naming the programmed
            crosspoints, their target levels and the nominal conductance of each level
            (ArC2Control does not store targets). Without a plan only SET/RESET cycling
            (``/switching``) is imported.
        retention_delay_s: time from the end of programming to a retention table's first
            read (ArC2Control does not store it); the drift law is fitted in this time.
        array_map: also write the ``/crossbar`` raster over the planned rectangle as
            ``/array_maps``. Off by default: a store holds one raster, so one map, and a
            spatial-correlation fit of one small map has no interval and can be far off
            (docs/calibration.md gives an example), while ``xbar fit`` subtracts the
            correlated variance it finds from the programming sigmas.
        skip: groups not to write (``"reads"``, ``"drift"``, ``"array_maps"``, ...).
        device, created: root attributes (default: the store's title and size; its latest
            time stamp).

    The mapping is stated rule by rule in ``calibration/SCHEMA.md``. The file is read back
    through :func:`read_measurements` before it replaces ``out``; on any problem one
    ``InputError`` line names the file and field, and nothing is written.
    """
    check_writable(out, force, create=False)
    m = convert_arc2(
        session, plan, retention_delay_s=retention_delay_s, array_map=array_map, skip=skip, device=device, created=created
    )
    return write_validated(out, m, session, force)


__all__ = ["Plan", "convert_arc2", "crosspoint_name", "import_arc2", "read_plan"]
