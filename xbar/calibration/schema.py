"""The ``xbar-measurements`` HDF5 schema (version 1): names, limits and in-memory groups.

The file layout is documented in ``calibration/SCHEMA.md``; this module holds the
constants the reader, writer and importer share and the plain dataclasses a
validated file is read into. All arrays are numpy arrays owned by the dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SCHEMA_NAME = "xbar-measurements"
SCHEMA_VERSION = 1

GROUPS = ("programming", "reads", "drift", "array_maps", "switching")

# Limits that separate a real measurement from a corrupt or absurd file.
MAX_LEVELS = 1024
MAX_ROWS = 100_000_000  # rows of any one dataset (and elements of an array map stack)
MAX_READS = 100_000  # repeated reads per device
MAX_TIMES = 1_000_000  # time points of a drift series
MAX_MAP_SIDE = 65_536  # rows or columns of one array map
MIN_SAMPLES_PER_LEVEL = 3  # programming samples needed per level for a sigma and its CI

# Conductance units accepted in the ``units`` attribute, as factors to microsiemens.
# "level" means the values are already in level units (no conversion).
CONDUCTANCE_UNITS_TO_US = {"S": 1e6, "mS": 1e3, "uS": 1.0, "nS": 1e-3}
LEVEL_UNITS = "level"


def to_level_units(
    conductance: np.ndarray, units: str, level_conductance_uS: np.ndarray | None
) -> np.ndarray:
    """Convert conductances to level units with the affine map through the end levels.

    ``level = (G - G_0) / step`` with ``step = (G_{L-1} - G_0) / (L - 1)`` from the nominal
    level conductances; level 0 maps to 0 and level L-1 to L-1 exactly, so a nominal grid
    that is not equally spaced shows up as systematic per-level offsets (``mean_levels``).
    """
    g = np.asarray(conductance, dtype=np.float64)
    if units == LEVEL_UNITS:
        return g
    if level_conductance_uS is None:
        raise ValueError("level_conductance_uS is needed to convert conductances to levels")
    g_us = g * CONDUCTANCE_UNITS_TO_US[units]
    nominal = np.asarray(level_conductance_uS, dtype=np.float64)
    step = (nominal[-1] - nominal[0]) / (len(nominal) - 1)
    return (g_us - nominal[0]) / step


def zero_level(units: str, level_conductance_uS: np.ndarray | None) -> float | None:
    """0 uS in level units (None for level units, which carry no physical zero)."""
    if units == LEVEL_UNITS:
        return None
    return float(to_level_units(np.zeros(1), "uS", level_conductance_uS)[0])


def level_step_uS(units: str, level_conductance_uS: np.ndarray | None) -> float:
    """Conductance of one level step in ``units`` (1 for level units)."""
    if units == LEVEL_UNITS:
        return 1.0
    nominal = np.asarray(level_conductance_uS, dtype=np.float64)
    step_us = (nominal[-1] - nominal[0]) / (len(nominal) - 1)
    return float(step_us / CONDUCTANCE_UNITS_TO_US[units])


@dataclass(frozen=True)
class Programming:
    """``/programming``: one row per programming event (target level -> conductance)."""

    target_level: np.ndarray  # int64 [n]
    conductance: np.ndarray  # float64 [n], in ``units``
    units: str
    levels: int
    level_conductance_uS: np.ndarray | None  # float64 [levels]; None for level units
    device_id: np.ndarray | None = None  # int64 [n]
    cycle: np.ndarray | None = None
    array: np.ndarray | None = None
    row: np.ndarray | None = None
    col: np.ndarray | None = None

    def deviation_levels(self) -> np.ndarray:
        """Programmed minus target, in level units."""
        g = to_level_units(self.conductance, self.units, self.level_conductance_uS)
        return g - self.target_level

    def zero_level(self) -> float | None:
        """0 uS in level units (None for files in level units, which have no physical zero)."""
        return zero_level(self.units, self.level_conductance_uS)

    def censored(self) -> np.ndarray:
        """Rows read at exactly 0 uS: clipped by the instrument, censored from below."""
        if self.units == LEVEL_UNITS:
            return np.zeros(self.conductance.shape, dtype=bool)
        return self.conductance <= 0


@dataclass(frozen=True)
class Reads:
    """``/reads``: r repeated reads of each of m programmed devices."""

    device_id: np.ndarray  # int64 [m]
    target_level: np.ndarray  # int64 [m]
    conductance: np.ndarray  # float64 [m, r], in ``units``
    units: str
    levels: int
    level_conductance_uS: np.ndarray | None

    def conductance_levels(self) -> np.ndarray:
        return to_level_units(self.conductance, self.units, self.level_conductance_uS)

    def censored(self) -> np.ndarray:
        """Reads at exactly 0 uS (clipped), ``[m, r]``."""
        if self.units == LEVEL_UNITS:
            return np.zeros(self.conductance.shape, dtype=bool)
        return self.conductance <= 0


@dataclass(frozen=True)
class Drift:
    """``/drift``: conductance of k devices at T times after programming."""

    time_s: np.ndarray  # float64 [T], seconds after programming
    conductance: np.ndarray  # float64 [k, T], in ``units`` (> 0)
    target_level: np.ndarray  # int64 [k]
    t0_s: float
    units: str
    levels: int
    device_id: np.ndarray | None = None


@dataclass(frozen=True)
class ArrayMaps:
    """``/array_maps``: whole-array deviation maps (programmed - target, level units)."""

    maps: np.ndarray  # float64 [n_maps, rows, cols]


@dataclass(frozen=True)
class Switching:
    """``/switching``: cycle-to-cycle LRS and HRS resistances (Emonds Sec. 3)."""

    lrs_resistance_ohm: np.ndarray  # float64 [a], > 0
    hrs_resistance_ohm: np.ndarray  # float64 [b], > 0


@dataclass(frozen=True)
class Measurements:
    """A validated ``xbar-measurements`` file (or an in-memory equivalent)."""

    device: str
    created: str
    levels: int | None = None  # resolved number of levels (None if no group defines it)
    programming: Programming | None = None
    reads: Reads | None = None
    drift: Drift | None = None
    array_maps: ArrayMaps | None = None
    switching: Switching | None = None
    source_file: str | None = None
    source_sha256: str | None = None
    extra_attrs: dict = field(default_factory=dict)

    @property
    def groups(self) -> list[str]:
        """Names of the groups present, in schema order."""
        return [g for g in GROUPS if getattr(self, g) is not None]
