"""Validating reader for ``xbar-measurements`` HDF5 files (``calibration/SCHEMA.md``).

Every problem raises :class:`xbar.errors.InputError` with one line naming the file,
the dataset or attribute and what was expected; nothing else escapes, so the command
line can turn it into exit status 2.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from xbar.calibration.schema import (
    CONDUCTANCE_UNITS_TO_US,
    GROUPS,
    LEVEL_UNITS,
    MAX_LEVELS,
    MAX_MAP_SIDE,
    MAX_READS,
    MAX_ROWS,
    MAX_TIMES,
    MIN_SAMPLES_PER_LEVEL,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    ArrayMaps,
    Drift,
    Measurements,
    Programming,
    Reads,
    Switching,
)
from xbar.errors import InputError, first_line
from xbar.fileio import sha256_of

_INT_KINDS = "iu"
_NUM_KINDS = "iuf"


def read_measurements(path: str | os.PathLike) -> Measurements:
    """Read and validate an ``xbar-measurements`` file; raise ``InputError`` on any problem."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory; expected an xbar-measurements HDF5 file")
    try:
        fh = h5py.File(p, "r")
    except OSError:
        raise InputError(
            f"{p}: not a readable HDF5 file (truncated, corrupt or another format); "
            f"expected an {SCHEMA_NAME} file"
        ) from None
    try:
        with fh:
            m = _Reader(p, fh).read()
    except InputError:
        raise
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = first_line(exc, limit=10_000)
        raise InputError(
            f"{p}: not a readable HDF5 file (truncated or corrupt: {reason})"
        ) from None
    return replace(m, source_sha256=sha256_of(p))


class _Reader:
    """One pass over an open file; each check raises ``InputError`` naming the field."""

    def __init__(self, path: Path, fh: h5py.File) -> None:
        self.path = path
        self.fh = fh

    # ----------------------------------------------------------------- helpers
    def fail(self, field: str, message: str) -> None:
        raise InputError(f"{self.path}: {field}: {message}")

    def attr(self, obj: Any, name: str, kind: str, required: bool = True) -> Any:
        """Attribute ``name`` of ``obj`` as ``kind`` ("str", "int", "float", "array")."""
        where = f"{obj.name.rstrip('/')}/@{name}" if obj.name != "/" else f"root attribute '{name}'"
        if name not in obj.attrs:
            if required:
                self.fail(where, "missing")
            return None
        value = obj.attrs[name]
        if kind == "str":
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, np.ndarray) and value.shape == ():
                value = value.item()
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
            if not isinstance(value, str):
                self.fail(where, f"expected a string, got {value!r}")
            return value
        if kind in ("int", "float"):
            arr = np.asarray(value)
            if arr.size != 1 or arr.dtype.kind not in (_INT_KINDS if kind == "int" else _NUM_KINDS):
                self.fail(where, f"expected one {'integer' if kind == 'int' else 'number'}, got {value!r}")
            v = arr.reshape(()).item()
            if kind == "float" and not np.isfinite(v):
                self.fail(where, f"expected a finite number, got {v}")
            return int(v) if kind == "int" else float(v)
        arr = np.asarray(value)
        if arr.dtype.kind not in _NUM_KINDS or arr.ndim != 1:
            self.fail(where, f"expected a 1-D numeric array, got {arr.dtype} with shape {list(arr.shape)}")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            self.fail(where, "contains NaN or Inf; expected finite values")
        return arr

    def dataset(
        self,
        group: h5py.Group,
        name: str,
        *,
        kind: str,
        ndim: int,
        required: bool = True,
        max_rows: int = MAX_ROWS,
    ) -> np.ndarray | None:
        """Dataset ``group/name``: checks type, rank, emptiness, size, then NaN/Inf."""
        field = f"{group.name}/{name}"
        if name not in group:
            if required:
                self.fail(field, "missing dataset")
            return None
        obj = group[name]
        if not isinstance(obj, h5py.Dataset):
            self.fail(field, "expected a dataset, found a group")
        dt = obj.dtype
        if kind == "int" and dt.kind not in _INT_KINDS:
            self.fail(field, f"expected an integer dataset, got dtype {dt}")
        if kind == "float" and dt.kind not in _NUM_KINDS:
            self.fail(field, f"expected a numeric (float) dataset, got dtype {dt}")
        shape = obj.shape
        if shape is None or len(shape) != ndim:
            got = "a scalar/empty dataspace" if not shape else f"shape {list(shape)}"
            self.fail(field, f"expected a {ndim}-D dataset, got {got}")
        if 0 in shape:
            self.fail(field, f"is empty (shape {list(shape)}); expected at least one value")
        if shape[0] > max_rows or int(np.prod(shape, dtype=np.float64)) > MAX_ROWS:
            self.fail(
                field,
                f"absurd size {list(shape)}; expected at most {max_rows:.0e} rows and "
                f"{MAX_ROWS:.0e} values",
            )
        data = obj[()]
        if kind == "int":
            return np.asarray(data, dtype=np.int64)
        arr = np.asarray(data, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            self.fail(field, f"contains {bad} NaN or Inf value(s); expected finite numbers")
        return arr

    def same_length(self, field: str, arr: np.ndarray, n: int, ref: str) -> None:
        if arr.shape[0] != n:
            self.fail(field, f"has {arr.shape[0]} rows; expected {n} to match {ref}")

    def nonnegative(self, field: str, arr: np.ndarray, what: str = "values") -> None:
        if np.any(arr < 0):
            self.fail(field, f"has {int(np.count_nonzero(arr < 0))} negative {what}; expected >= 0")

    def positive(self, field: str, arr: np.ndarray, what: str) -> None:
        if np.any(arr <= 0):
            bad = int(np.count_nonzero(arr <= 0))
            self.fail(field, f"has {bad} negative or zero {what}; expected > 0")

    def lookup(self, group: h5py.Group, name: str) -> tuple[Any, Any]:
        """(object holding attribute ``name``, value) searching group, root, /programming."""
        holders = [group, self.fh]
        if "programming" in self.fh and isinstance(self.fh["programming"], h5py.Group):
            holders.append(self.fh["programming"])
        for h in holders:
            if name in h.attrs:
                return h, h.attrs[name]
        return None, None

    def levels(self, group: h5py.Group) -> int:
        holder, _ = self.lookup(group, "levels")
        if holder is None:
            self.fail(f"{group.name}/@levels", "missing (also not on the root or /programming); expected the number of levels")
        levels = self.attr(holder, "levels", "int")
        if not 2 <= levels <= MAX_LEVELS:
            where = f"{holder.name.rstrip('/')}/@levels" if holder.name != "/" else "root attribute 'levels'"
            self.fail(where, f"levels = {levels}: expected 2 to {MAX_LEVELS} levels per device")
        return levels

    def units(self, group: h5py.Group, dset: str, allowed: tuple[str, ...]) -> str:
        obj = group[dset]
        holder = obj if "units" in obj.attrs else group if "units" in group.attrs else None
        if holder is None:
            self.fail(f"{group.name}/{dset}/@units", f"missing; expected one of {', '.join(allowed)}")
        units = self.attr(holder, "units", "str")
        if units not in allowed:
            self.fail(f"{holder.name}/@units", f"units = {units!r}; expected one of {', '.join(allowed)}")
        return units

    def level_conductance(self, group: h5py.Group, units: str, levels: int) -> np.ndarray | None:
        holder, _ = self.lookup(group, "level_conductance_uS")
        if holder is None:
            if units == LEVEL_UNITS:
                return None
            self.fail(
                f"{group.name}/@level_conductance_uS",
                f"missing; expected the nominal conductance of each of the {levels} levels "
                f"to convert {units} to level units",
            )
        nominal = self.attr(holder, "level_conductance_uS", "array")
        where = f"{holder.name.rstrip('/')}/@level_conductance_uS"
        if nominal.shape[0] != levels:
            self.fail(where, f"has {nominal.shape[0]} values; expected one per level ({levels})")
        if np.any(nominal < 0):
            self.fail(where, "has negative conductances; expected >= 0")
        if np.any(np.diff(nominal) <= 0):
            self.fail(where, "is not strictly increasing; expected level 0 lowest")
        return nominal

    def targets(self, field: str, target: np.ndarray, levels: int, min_count: int) -> None:
        bad = (target < 0) | (target >= levels)
        if np.any(bad):
            v = int(target[bad][0])
            self.fail(field, f"target level {v} is outside [0, {levels}); expected 0 to {levels - 1}")
        counts = np.bincount(target, minlength=levels)
        if np.any(counts < min_count):
            h = int(np.argmin(counts))
            self.fail(
                field,
                f"level {h} has {int(counts[h])} sample(s); expected at least {min_count} for every level",
            )

    def group(self, name: str) -> h5py.Group | None:
        if name not in self.fh:
            return None
        obj = self.fh[name]
        if not isinstance(obj, h5py.Group):
            self.fail(f"/{name}", "expected a group, found a dataset")
        return obj

    # ------------------------------------------------------------------ groups
    def read(self) -> Measurements:
        root = self.fh["/"]
        schema = self.attr(root, "schema", "str")
        if schema != SCHEMA_NAME:
            self.fail("root attribute 'schema'", f"schema = {schema!r}; expected {SCHEMA_NAME!r}")
        version = self.attr(root, "schema_version", "int")
        if version != SCHEMA_VERSION:
            self.fail(
                "root attribute 'schema_version'",
                f"schema_version = {version} is not supported; expected {SCHEMA_VERSION}",
            )
        device = self.attr(root, "device", "str")
        created = self.attr(root, "created", "str")
        present = [g for g in GROUPS if g in self.fh]
        if not present:
            self.fail("/", f"no measurement group; expected at least one of /{', /'.join(GROUPS)}")
        levels = None
        for name in ("programming", "reads", "drift"):
            if name in present:
                lv = self.levels(self.group(name))
                if levels is not None and lv != levels:
                    self.fail(
                        f"/{name}/@levels",
                        f"levels = {lv} disagrees with {levels} of the other groups; "
                        "expected one device population per file",
                    )
                levels = lv
        parts: dict[str, Any] = {}
        for name in present:
            parts[name] = getattr(self, f"read_{name}")(self.group(name))
        if levels is None and "levels" in root.attrs:
            levels = self.levels(root)
        return Measurements(
            device=device, created=created, levels=levels, source_file=str(self.path), **parts
        )

    def read_programming(self, g: h5py.Group) -> Programming:
        levels = self.levels(g)
        target = self.dataset(g, "target_level", kind="int", ndim=1)
        n = target.shape[0]
        g_meas = self.dataset(g, "conductance", kind="float", ndim=1)
        self.same_length(f"{g.name}/conductance", g_meas, n, "target_level")
        units = self.units(g, "conductance", (*CONDUCTANCE_UNITS_TO_US, LEVEL_UNITS))
        if units != LEVEL_UNITS:
            self.nonnegative(f"{g.name}/conductance", g_meas, "conductances")
        nominal = self.level_conductance(g, units, levels)
        coords = {}
        for name in ("device_id", "cycle", "array", "row", "col"):
            arr = self.dataset(g, name, kind="int", ndim=1, required=False)
            if arr is not None:
                self.same_length(f"{g.name}/{name}", arr, n, "target_level")
                self.nonnegative(f"{g.name}/{name}", arr)
            coords[name] = arr
        self.targets(f"{g.name}/target_level", target, levels, MIN_SAMPLES_PER_LEVEL)
        return Programming(
            target_level=target,
            conductance=g_meas,
            units=units,
            levels=levels,
            level_conductance_uS=nominal,
            **coords,
        )

    def read_reads(self, g: h5py.Group) -> Reads:
        levels = self.levels(g)
        device = self.dataset(g, "device_id", kind="int", ndim=1)
        target = self.dataset(g, "target_level", kind="int", ndim=1)
        m = device.shape[0]
        self.same_length(f"{g.name}/target_level", target, m, "device_id")
        g_meas = self.dataset(g, "conductance", kind="float", ndim=2)
        self.same_length(f"{g.name}/conductance", g_meas, m, "device_id")
        r = g_meas.shape[1]
        if r < 2:
            self.fail(f"{g.name}/conductance", f"has {r} read per device; expected shape [m, r] with r >= 2 repeated reads")
        if r > MAX_READS:
            self.fail(f"{g.name}/conductance", f"absurd size: {r} reads per device; expected at most {MAX_READS}")
        units = self.units(g, "conductance", (*CONDUCTANCE_UNITS_TO_US, LEVEL_UNITS))
        if units != LEVEL_UNITS:
            self.nonnegative(f"{g.name}/conductance", g_meas, "conductances")
        nominal = self.level_conductance(g, units, levels)
        self.targets(f"{g.name}/target_level", target, levels, 1)
        return Reads(device, target, g_meas, units, levels, nominal)

    def read_drift(self, g: h5py.Group) -> Drift:
        levels = self.levels(g)
        t = self.dataset(g, "time_s", kind="float", ndim=1, max_rows=MAX_TIMES)
        if t.shape[0] < 3:
            self.fail(f"{g.name}/time_s", f"has {t.shape[0]} time points; expected at least 3")
        self.positive(f"{g.name}/time_s", t, "times")
        if np.any(np.diff(t) <= 0):
            self.fail(f"{g.name}/time_s", "is not strictly increasing; expected increasing times in seconds")
        g_meas = self.dataset(g, "conductance", kind="float", ndim=2)
        k = g_meas.shape[0]
        if g_meas.shape[1] != t.shape[0]:
            self.fail(f"{g.name}/conductance", f"has shape {list(g_meas.shape)}; expected [k, {t.shape[0]}] to match time_s")
        self.positive(f"{g.name}/conductance", g_meas, "conductances (G(t)/G(t0) needs G > 0)")
        target = self.dataset(g, "target_level", kind="int", ndim=1)
        self.same_length(f"{g.name}/target_level", target, k, "conductance")
        device = self.dataset(g, "device_id", kind="int", ndim=1, required=False)
        if device is not None:
            self.same_length(f"{g.name}/device_id", device, k, "conductance")
        units = self.units(g, "conductance", (*CONDUCTANCE_UNITS_TO_US, LEVEL_UNITS))
        t0 = self.attr(g, "t0_s", "float")
        if not t0 > 0:
            self.fail(f"{g.name}/@t0_s", f"t0_s = {t0}; expected > 0 seconds")
        self.targets(f"{g.name}/target_level", target, levels, 2)
        return Drift(t, g_meas, target, t0, units, levels, device)

    def read_array_maps(self, g: h5py.Group) -> ArrayMaps:
        maps = self.dataset(g, "maps", kind="float", ndim=3)
        n, rows, cols = maps.shape
        if rows < 2 or cols < 2:
            self.fail(f"{g.name}/maps", f"has shape {list(maps.shape)}; expected [n_maps, rows, cols] with rows, cols >= 2")
        if rows > MAX_MAP_SIDE or cols > MAX_MAP_SIDE:
            self.fail(f"{g.name}/maps", f"absurd array size {rows}x{cols}; expected at most {MAX_MAP_SIDE} per side")
        if "units" in g["maps"].attrs or "units" in g.attrs:
            self.units(g, "maps", (LEVEL_UNITS,))
        return ArrayMaps(maps)

    def read_switching(self, g: h5py.Group) -> Switching:
        out = []
        for name in ("lrs_resistance_ohm", "hrs_resistance_ohm"):
            r = self.dataset(g, name, kind="float", ndim=1)
            if r.shape[0] < 3:
                self.fail(f"{g.name}/{name}", f"has {r.shape[0]} value(s); expected at least 3 cycles")
            self.positive(f"{g.name}/{name}", r, "resistances")
            if "units" in g[name].attrs:
                self.units(g, name, ("ohm",))
            out.append(r)
        lrs, hrs = out
        if not np.median(hrs) > np.median(lrs):
            self.fail(
                f"{g.name}/hrs_resistance_ohm",
                f"median {np.median(hrs):.4g} ohm is not above the LRS median {np.median(lrs):.4g} ohm; "
                "expected HRS > LRS",
            )
        return Switching(lrs, hrs)
