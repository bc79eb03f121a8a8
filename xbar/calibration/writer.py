"""Writing ``xbar-measurements`` files (used by the CSV importer and the synthetic examples)."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from xbar.calibration.schema import SCHEMA_NAME, SCHEMA_VERSION, Measurements
from xbar.fileio import atomic_write

_COMPRESS_ABOVE = 4096  # values; smaller datasets stay contiguous


def _dset(g: h5py.Group, name: str, data: np.ndarray, dtype: str, **attrs: object) -> None:
    arr = np.asarray(data, dtype=dtype)
    kw: dict = {"track_times": False}
    if arr.size > _COMPRESS_ABOVE:
        kw.update(compression="gzip", compression_opts=6, shuffle=True)
    d = g.create_dataset(name, data=arr, **kw)
    for k, v in attrs.items():
        d.attrs[k] = v


def _write(tmp: Path, m: Measurements) -> None:
    with h5py.File(tmp, "w", track_order=True) as fh:
        fh.attrs["schema"] = SCHEMA_NAME
        fh.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
        fh.attrs["device"] = m.device
        fh.attrs["created"] = m.created
        if m.levels is not None:
            fh.attrs["levels"] = np.int64(m.levels)
        for k, v in m.extra_attrs.items():
            fh.attrs[k] = v
        if (p := m.programming) is not None:
            g = fh.create_group("programming", track_order=True)
            g.attrs["levels"] = np.int64(p.levels)
            if p.level_conductance_uS is not None:
                g.attrs["level_conductance_uS"] = np.asarray(p.level_conductance_uS, np.float64)
            _dset(g, "target_level", p.target_level, "int16" if p.levels <= 32767 else "int32")
            _dset(g, "conductance", p.conductance, "float64", units=p.units)
            for name in ("device_id", "cycle", "array", "row", "col"):
                if (arr := getattr(p, name)) is not None:
                    _dset(g, name, arr, "int32")
        if (r := m.reads) is not None:
            g = fh.create_group("reads", track_order=True)
            g.attrs["levels"] = np.int64(r.levels)
            if r.level_conductance_uS is not None:
                g.attrs["level_conductance_uS"] = np.asarray(r.level_conductance_uS, np.float64)
            _dset(g, "device_id", r.device_id, "int32")
            _dset(g, "target_level", r.target_level, "int16")
            _dset(g, "conductance", r.conductance, "float64", units=r.units)
        if (d := m.drift) is not None:
            g = fh.create_group("drift", track_order=True)
            g.attrs["levels"] = np.int64(d.levels)
            g.attrs["t0_s"] = float(d.t0_s)
            _dset(g, "time_s", d.time_s, "float64", units="s")
            _dset(g, "conductance", d.conductance, "float64", units=d.units)
            _dset(g, "target_level", d.target_level, "int16")
            if d.device_id is not None:
                _dset(g, "device_id", d.device_id, "int32")
        if (a := m.array_maps) is not None:
            g = fh.create_group("array_maps", track_order=True)
            _dset(g, "maps", a.maps, "float64", units="level")
        if (s := m.switching) is not None:
            g = fh.create_group("switching", track_order=True)
            _dset(g, "lrs_resistance_ohm", s.lrs_resistance_ohm, "float64", units="ohm")
            _dset(g, "hrs_resistance_ohm", s.hrs_resistance_ohm, "float64", units="ohm")


def write_measurements(path: str | os.PathLike, m: Measurements, force: bool = False) -> Path:
    """Write ``m`` as an ``xbar-measurements`` file atomically (refuses to overwrite without ``force``)."""
    return atomic_write(path, lambda tmp: _write(tmp, m), force)
