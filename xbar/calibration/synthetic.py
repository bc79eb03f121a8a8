"""Synthetic measurement sets with known parameters (examples and round-trip tests).

Each generator returns an in-memory :class:`Measurements` drawn with
``numpy.random.default_rng(seed)``; :func:`xbar.calibration.writer.write_measurements`
turns it into a schema-valid file. ``calibration/make_examples.py`` calls these with
fixed seeds to produce ``calibration/examples/*.h5``.

Reproducible to the bit: no BLAS call (whose summation order depends on the library,
the CPU and the thread count), correlated fields by an elementwise AR(1) recursion,
and every measured value rounded to a fixed decimal grid (:data:`DECIMALS`), so a
last-bit difference in a vectorised ``exp`` / ``power`` between CPUs does not reach
the files. Draws come from ``numpy.random.default_rng(seed)`` (stable for a given
numpy version).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from xbar.calibration.schema import (
    ArrayMaps,
    Drift,
    Measurements,
    Programming,
    Reads,
    Switching,
)

CREATED = "2026-01-01T00:00:00+00:00"  # fixed so that the example files are reproducible
DECIMALS = {"uS": 9, "level": 12, "ohm": 6, "s": 9}  # grid of the stored values, by unit


def _fixed(x: np.ndarray, units: str) -> np.ndarray:
    """``x`` rounded to the decimal grid of ``units`` (elementwise, platform independent)."""
    return np.round(np.asarray(x, dtype=np.float64), DECIMALS[units])

# The parameters of the shipped examples (level units unless the name says otherwise).
FEFET1 = {
    "sigma_levels": (0.1, 0.4, 0.4, 0.1),  # TRICE Eq. 16 with sigma_d = 0.1
    "mean_levels": (0.0, 0.0, 0.0, 0.0),
    "level_conductance_uS": (10.0, 20.0, 30.0, 40.0),
    "read_sigma_levels": (0.02, 0.03, 0.03, 0.02),
}
RERAM = {
    "sigma": 0.1,  # correlated component
    "length_rows": 3.0,
    "length_cols": 8.0,
    "nugget_sigma": 0.05,  # independent component
    "level_conductance_uS": (5.0, 15.0, 25.0, 35.0),
}
PCM = {
    "nu_mean_levels": (0.10, 0.07, 0.05, 0.03),
    "nu_std_levels": (0.02, 0.015, 0.01, 0.008),
    "level_conductance_uS": (2.0, 8.0, 14.0, 20.0),
    "t0_s": 20.0,
    "read_rel_sigma": 0.005,
}
HFOX = {
    "lrs_median_ohm": 8e3,
    "lrs_sigma_ln": 0.25,
    "hrs_median_ohm": 8e4,
    "hrs_sigma_ln": 0.55,
}


def _grid_coords(n: int, rows: int = 32, cols: int = 32) -> dict[str, np.ndarray]:
    ids = np.arange(n, dtype=np.int64)
    per = rows * cols
    return {
        "device_id": ids,
        "cycle": np.zeros(n, np.int64),
        "array": ids // per,
        "row": (ids % per) // cols,
        "col": ids % cols,
    }


def programming_measurements(
    seed: int,
    sigma_levels: Sequence[float],
    n_per_level: int = 500,
    mean_levels: Sequence[float] | None = None,
    level_conductance_uS: Sequence[float] | None = None,
    read_sigma_levels: Sequence[float] | None = None,
    read_devices_per_level: int = 40,
    reads_per_device: int = 16,
    device: str = "synthetic",
) -> Measurements:
    """Per-level Gaussian programming noise (TRICE Eq. 15), optionally with repeated reads.

    Device i at level h is programmed to ``h + mu_h + sigma_h z`` (level units); every read
    adds independent ``N(0, sigma_read_h)``. ``/programming`` holds one read of each device;
    ``/reads`` holds ``reads_per_device`` reads of ``read_devices_per_level`` other devices.
    Conductances are in uS when ``level_conductance_uS`` is given (equally spaced), else in
    level units.
    """
    rng = np.random.default_rng(seed)
    sig = np.asarray(sigma_levels, dtype=np.float64)
    L = sig.size
    mu = np.zeros(L) if mean_levels is None else np.asarray(mean_levels, dtype=np.float64)
    rsig = np.zeros(L) if read_sigma_levels is None else np.asarray(read_sigma_levels, np.float64)
    target = rng.permutation(np.repeat(np.arange(L), n_per_level))
    value = target + mu[target] + sig[target] * rng.standard_normal(target.size)
    value = value + rsig[target] * rng.standard_normal(target.size)
    nominal = None if level_conductance_uS is None else np.asarray(level_conductance_uS, np.float64)

    def to_units(v: np.ndarray) -> np.ndarray:
        if nominal is None:
            return v
        step = (nominal[-1] - nominal[0]) / (L - 1)
        return nominal[0] + v * step

    units = "level" if nominal is None else "uS"
    prog = Programming(
        target_level=target,
        conductance=_fixed(to_units(value), units),
        units=units,
        levels=L,
        level_conductance_uS=nominal,
        **_grid_coords(target.size),
    )
    reads = None
    if read_sigma_levels is not None:
        rt = np.repeat(np.arange(L), read_devices_per_level)
        programmed = rt + mu[rt] + sig[rt] * rng.standard_normal(rt.size)
        r = programmed[:, None] + rsig[rt][:, None] * rng.standard_normal((rt.size, reads_per_device))
        reads = Reads(
            device_id=np.arange(rt.size, dtype=np.int64) + target.size,
            target_level=rt,
            conductance=_fixed(to_units(r), units),
            units=units,
            levels=L,
            level_conductance_uS=nominal,
        )
    return Measurements(device=device, created=CREATED, levels=L, programming=prog, reads=reads)


def fefet_per_level(seed: int = 1, n_per_level: int = 1000) -> Measurements:
    """4-level FeFET-like device: sigma per level [0.1, 0.4, 0.4, 0.1] (TRICE FeFET1, sigma_d = 0.1)."""
    return programming_measurements(
        seed,
        FEFET1["sigma_levels"],
        n_per_level=n_per_level,
        mean_levels=FEFET1["mean_levels"],
        level_conductance_uS=FEFET1["level_conductance_uS"],
        read_sigma_levels=FEFET1["read_sigma_levels"],
        device="FeFET1-like 4-level FeFET (synthetic)",
    )


def kronecker_maps(
    rng: np.random.Generator,
    n_maps: int,
    rows: int,
    cols: int,
    sigma: float,
    length_rows: float,
    length_cols: float,
    nugget_sigma: float = 0.0,
) -> np.ndarray:
    """Maps ``sigma A Z B^T + tau E`` with ``A A^T = K_rows``, ``B B^T = K_cols`` (exponential kernels).

    The Cholesky factor of ``K_ij = rho^|i - j|`` (``rho = exp(-1 / l)``) is the AR(1)
    recursion ``x_0 = z_0``, ``x_i = rho x_{i-1} + sqrt(1 - rho^2) z_i``; applying it along
    rows, then columns, gives ``A Z B^T`` exactly, in a fixed order of elementwise
    operations (no BLAS), so the maps are identical on every machine.
    """
    x = rng.standard_normal((n_maps, rows, cols))
    for axis, length in ((1, length_rows), (2, length_cols)):
        rho = math.exp(-1.0 / length)
        c = math.sqrt(1.0 - rho * rho)
        x = np.moveaxis(x, axis, 0).copy()
        for i in range(1, x.shape[0]):
            x[i] = rho * x[i - 1] + c * x[i]
        x = np.moveaxis(x, 0, axis)
    x = sigma * x
    if nugget_sigma:
        x = x + nugget_sigma * rng.standard_normal(x.shape)
    return x


def correlated_measurements(
    seed: int,
    n_maps: int = 8,
    rows: int = 32,
    cols: int = 64,
    sigma: float = RERAM["sigma"],
    length_rows: float = RERAM["length_rows"],
    length_cols: float = RERAM["length_cols"],
    nugget_sigma: float = RERAM["nugget_sigma"],
    level_conductance_uS: Sequence[float] = RERAM["level_conductance_uS"],
    device: str = "synthetic correlated ReRAM",
) -> Measurements:
    """Whole arrays programmed to random levels with Kronecker-exponential correlated deviations.

    ``/array_maps`` holds the deviation maps; ``/programming`` holds the same devices as
    (target level, conductance) rows with array/row/col coordinates, so both views agree.
    """
    rng = np.random.default_rng(seed)
    nominal = np.asarray(level_conductance_uS, dtype=np.float64)
    L = nominal.size
    maps = _fixed(kronecker_maps(rng, n_maps, rows, cols, sigma, length_rows, length_cols, nugget_sigma), "level")
    target = rng.integers(0, L, size=maps.shape)
    step = (nominal[-1] - nominal[0]) / (L - 1)
    g = _fixed(nominal[0] + (target + maps) * step, "uS")
    arr, row, col = (a.ravel().astype(np.int64) for a in np.indices(maps.shape))
    prog = Programming(
        target_level=target.ravel().astype(np.int64),
        conductance=g.ravel(),
        units="uS",
        levels=L,
        level_conductance_uS=nominal,
        device_id=np.arange(arr.size, dtype=np.int64),
        cycle=np.zeros(arr.size, np.int64),
        array=arr,
        row=row,
        col=col,
    )
    return Measurements(
        device=device, created=CREATED, levels=L, programming=prog, array_maps=ArrayMaps(maps)
    )


def reram_correlated(seed: int = 2) -> Measurements:
    """ReRAM-like arrays: correlated sigma 0.1, lengths 3 (rows) and 8 (cols), nugget 0.05."""
    return correlated_measurements(seed, device="ReRAM-like 4-level crossbar (synthetic)")


def drift_measurements(
    seed: int,
    nu_mean_levels: Sequence[float] = PCM["nu_mean_levels"],
    nu_std_levels: Sequence[float] = PCM["nu_std_levels"],
    devices_per_level: int = 50,
    level_conductance_uS: Sequence[float] = PCM["level_conductance_uS"],
    t0_s: float = PCM["t0_s"],
    time_s: Sequence[float] | None = None,
    read_rel_sigma: float = PCM["read_rel_sigma"],
    device: str = "synthetic drift",
) -> Measurements:
    """Drift series ``G(t) = G0 (t / t0)^-nu`` with ``nu ~ N(nu_mean_h, nu_std_h)`` clipped at 0.

    ``G0`` is the level's nominal conductance (uS); each read multiplies by
    ``exp(N(0, read_rel_sigma))``. Times default to 12 log-spaced points, t0 to 1e6 s.
    """
    rng = np.random.default_rng(seed)
    nm = np.asarray(nu_mean_levels, dtype=np.float64)
    ns = np.asarray(nu_std_levels, dtype=np.float64)
    nominal = np.asarray(level_conductance_uS, dtype=np.float64)
    L = nm.size
    t = _fixed(np.geomspace(t0_s, 1e6, 12) if time_s is None else time_s, "s")
    target = np.repeat(np.arange(L), devices_per_level)
    nu = np.maximum(0.0, nm[target] + ns[target] * rng.standard_normal(target.size))
    g = nominal[target][:, None] * (t[None, :] / t0_s) ** (-nu[:, None])
    g = g * np.exp(read_rel_sigma * rng.standard_normal(g.shape))
    drift = Drift(
        time_s=t,
        conductance=_fixed(g, "uS"),
        target_level=target,
        t0_s=t0_s,
        units="uS",
        levels=L,
        device_id=np.arange(target.size, dtype=np.int64),
    )
    return Measurements(device=device, created=CREATED, levels=L, drift=drift)


def pcm_drift(seed: int = 3) -> Measurements:
    """PCM-like 4-level drift: nu mean [0.10, 0.07, 0.05, 0.03], std [0.02, 0.015, 0.01, 0.008]."""
    return drift_measurements(seed, device="PCM-like 4-level cell (synthetic)")


def switching_measurements(
    seed: int,
    n_lrs: int = 2000,
    n_hrs: int = 2000,
    lrs_median_ohm: float = HFOX["lrs_median_ohm"],
    lrs_sigma_ln: float = HFOX["lrs_sigma_ln"],
    hrs_median_ohm: float = HFOX["hrs_median_ohm"],
    hrs_sigma_ln: float = HFOX["hrs_sigma_ln"],
    device: str = "synthetic switching",
) -> Measurements:
    """Lognormal cycle-to-cycle LRS and HRS resistances (Emonds Sec. 3, Fig. 1)."""
    rng = np.random.default_rng(seed)
    lrs = _fixed(lrs_median_ohm * np.exp(lrs_sigma_ln * rng.standard_normal(n_lrs)), "ohm")
    hrs = _fixed(hrs_median_ohm * np.exp(hrs_sigma_ln * rng.standard_normal(n_hrs)), "ohm")
    return Measurements(device=device, created=CREATED, levels=2, switching=Switching(lrs, hrs))


def hfox_switching(seed: int = 4) -> Measurements:
    """HfOx-like binary cell: LRS median 8 kOhm (s = 0.25), HRS median 80 kOhm (s = 0.55)."""
    return switching_measurements(seed, device="HfOx-like binary ReRAM cell (synthetic)")
