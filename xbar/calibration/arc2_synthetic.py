"""Emulated ArC TWO sessions with known parameters, written by ArC2Control's own writer.

:func:`write_session` emulates a multi-level ReRAM crossbar measured with an ArC TWO and
stores the session exactly as ArC2Control does, through ``arc2control.h5utils.H5DataStore``
(``update_status_bulk`` for the biasing history, ``make_wb_table`` for retention tables,
the ``/crossbar`` raster of a Read All), together with the plan CSV that
:func:`xbar.calibration.import_arc2` needs. It returns the truth: every conductance the
import must reproduce and every parameter ``xbar fit`` must recover.

This is for tests and ``calibration/make_examples.py``; it needs the ``arc2control``
package (``pip install --no-deps arc2control==0.2.0``: only its ``h5utils`` module, which
imports numpy and h5py, is loaded, not the Qt application). The importer itself does not.

The emulated device (level units: one step between adjacent nominal levels):

* write-verify: each programming cycle of a device moves it in 1-5 pulses (SET pulses
  +V, RESET pulses -V, each followed by a verify read, or as pulse-read rows) to its
  final state ``h + mu_h + sigma_h z`` (TRICE Eq. 15, per-level sigma);
* every read adds independent ``N(0, read_sigma_h)``; the read that ends the sequence is
  followed by ``reads_per_cycle`` repeated reads;
* retention: ``G(t) = G_prog (t / t0)^-nu``, ``nu ~ N(nu_mean_h, nu_std_h)``, ``t`` the time
  since programming, ``t0`` = the first retention read (``retention_delay_s``), read every
  ``retention_every_s``;
* SET/RESET cycling devices (not in the plan) read lognormal LRS / HRS resistances
  (Emonds Sec. 3);
* currents are ``float32(G) * read_voltage`` with G rounded to float32: with a read
  voltage that is a power of two the stored ``|current / read_voltage|`` equals that G
  exactly.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

RET_DTYPE = [("read_voltage", "<f4"), ("current", "<f4"), ("tstamp_s", "<u8"), ("tstamp_us", "<u8")]
SESSION_START_S = 1_767_225_600  # 2026-01-01T00:00:00Z: fixed so that sessions are reproducible


@functools.cache
def load_h5utils() -> ModuleType:
    """ArC2Control's writer module ``arc2control/h5utils.py``, loaded without the package ``__init__`` (Qt)."""
    spec = importlib.util.find_spec("arc2control")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the arc2control package is needed to write ArC2Control stores: pip install --no-deps arc2control==0.2.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "h5utils.py"
    mspec = importlib.util.spec_from_file_location("arc2control_h5utils", path)
    module = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class SessionSpec:
    """Parameters of an emulated ArC TWO session (level units unless the name says otherwise)."""

    array_lines: int = 32  # the store's words = bits (ArC TWO's 32 x 32)
    words: tuple[int, int] = (0, 8)  # planned (programmed) rectangle: word lines [start, stop)
    bits: tuple[int, int] = (0, 8)  # ... and bit lines [start, stop)
    level_conductance_uS: tuple[float, ...] = (10.0, 30.0, 50.0, 70.0)
    sigma_levels: tuple[float, ...] = (0.10, 0.22, 0.22, 0.12)
    mean_levels: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    read_sigma_levels: tuple[float, ...] = (0.02, 0.03, 0.03, 0.025)
    cycles: int = 4  # programming cycles per planned crosspoint, each to a random level
    reads_per_cycle: int = 6
    read_voltage: float = 0.25
    pulse_read: bool = False  # write-verify as pulse-read rows instead of pulse + read
    set_voltage: float = 1.2
    reset_voltage: float = -1.4
    pulse_width_s: float = 1e-6
    retention_per_level: int = 4  # devices per (final) level in one retention run
    retention_reads: int = 31
    retention_every_s: float = 20.0
    retention_delay_s: float = 2.0
    nu_mean_levels: tuple[float, ...] = (0.03, 0.02, 0.015, 0.01)
    nu_std_levels: tuple[float, ...] = (0.006, 0.004, 0.003, 0.002)
    switching_devices: int = 0  # cycled devices on the last word line, not in the plan
    switching_cycles: int = 40
    lrs_median_ohm: float = 8e3
    lrs_sigma_ln: float = 0.25
    hrs_median_ohm: float = 8e4
    hrs_sigma_ln: float = 0.55
    raster: bool = True  # a Read All after programming fills /crossbar
    base_size: int = 64  # rows allocated per new table (ArC2Control's H5DataStore._BASE_SIZE is 1000)


# The bundled calibration/examples/arc2_session.h5 (+ arc2_plan.csv): a 16 x 8 block of an
# ArC TWO's 32 x 32 array written three times to 4 levels at a 0.2 V read, 16 devices on
# retention for 10 minutes (read every 20 s from 1 s after programming, import_arc2's default).
EXAMPLE_SPEC = SessionSpec(
    words=(0, 16), bits=(0, 8), cycles=3, reads_per_cycle=5, read_voltage=0.2, retention_delay_s=1.0, base_size=32
)
EXAMPLE_SEED = 2026


@dataclass
class SessionTruth:
    """What an emulated session holds: the exact conductances and the generating parameters."""

    spec: SessionSpec
    plan_rows: list[tuple[int, int, int, int]] = field(default_factory=list)  # word, bit, cycle, level
    programming_S: list[float] = field(default_factory=list)  # in plan_rows order
    reads_S: dict[tuple[int, int, int], np.ndarray] = field(default_factory=dict)  # (w, b, cycle) -> reads
    retention: list[tuple[int, int, float]] = field(default_factory=list)  # word, bit, nu
    lrs_ohm: list[float] = field(default_factory=list)
    hrs_ohm: list[float] = field(default_factory=list)
    raster_S: np.ndarray | None = None  # conductance of the Read All, [bits, words] as /crossbar stores it


def write_plan(path: str | os.PathLike, truth: SessionTruth, with_cycle: bool = True) -> Path:
    """The plan CSV of ``truth`` (``word,bit,cycle,target_level,level_conductance_uS``)."""
    nominal = truth.spec.level_conductance_uS
    p = Path(path)
    with open(p, "w", newline="") as fh:
        w = csv.writer(fh)
        fh.write("# experiment plan: target level of each programming cycle (xbar import-arc2)\n")
        w.writerow(["word", "bit", "cycle", "target_level", "level_conductance_uS"] if with_cycle
                   else ["word", "bit", "target_level", "level_conductance_uS"])
        for word, bit, cycle, h in truth.plan_rows:
            if with_cycle:
                w.writerow([word, bit, cycle, h, f"{nominal[h]:g}"])
            elif cycle == 0:
                w.writerow([word, bit, h, f"{nominal[h]:g}"])
    return p


def write_session(path: str | os.PathLike, spec: SessionSpec = SessionSpec(), seed: int = 0) -> SessionTruth:
    """Emulate ``spec`` with ``numpy.random.default_rng(seed)`` and write it as an ArC2Control store."""
    h5u = load_h5utils()
    rng = np.random.default_rng(seed)
    nominal = np.asarray(spec.level_conductance_uS, np.float64)
    L = nominal.size
    step = (nominal[-1] - nominal[0]) / (L - 1)
    sig, mu = np.asarray(spec.sigma_levels), np.asarray(spec.mean_levels)
    rsig = np.asarray(spec.read_sigma_levels)
    vr = np.float32(spec.read_voltage)
    truth = SessionTruth(spec)

    def siemens(level: np.ndarray) -> np.ndarray:
        """Level units -> conductance in S, rounded to float32 (>= 0: the instrument reads no negative G)."""
        return np.maximum(nominal[0] + np.asarray(level) * step, 0.0).astype(np.float32) * np.float32(1e-6)

    def currents(g32: np.ndarray) -> np.ndarray:
        return (g32 * vr).astype(np.float32)

    xps = [(w, b) for w in range(*spec.words) for b in range(*spec.bits)]
    state = {xp: -0.5 + 0.1 * rng.standard_normal() for xp in xps}  # pristine: below level 0
    final_level, programmed = {}, {}
    old_base = h5u.H5DataStore._BASE_SIZE
    h5u.H5DataStore._BASE_SIZE = spec.base_size
    try:
        ds = h5u.H5DataStore(str(path), mode=h5u.H5Mode.WRITE, shape=(spec.array_lines, spec.array_lines))
        with ds:
            for cycle in range(spec.cycles):
                levels = rng.permutation(np.resize(np.arange(L), len(xps)))  # balanced over levels
                for (w, b), h in zip(xps, levels):
                    x = h + mu[h] + sig[h] * rng.standard_normal()
                    n = int(rng.integers(1, 6))
                    path_levels = state[(w, b)] + (x - state[(w, b)]) * np.arange(1, n + 1) / n
                    path_levels[:-1] += 0.3 * rng.standard_normal(n - 1)  # overshoot on the way
                    prev = np.r_[state[(w, b)], path_levels[:-1]]
                    volts = np.where(path_levels >= prev, spec.set_voltage, spec.reset_voltage).astype(np.float32)
                    g_verify = siemens(path_levels + rsig[h] * rng.standard_normal(n))
                    g_reads = siemens(x + rsig[h] * rng.standard_normal(spec.reads_per_cycle))
                    _write_sequence(ds, h5u, w, b, volts, currents(g_verify), vr, spec)
                    ds.update_status_bulk(w, b, currents(g_reads), np.full(g_reads.size, vr),
                                          np.zeros(g_reads.size, np.float32), np.full(g_reads.size, vr), h5u.OpType.READ)
                    truth.plan_rows.append((w, b, cycle, int(h)))
                    truth.programming_S.append(float(g_verify[-1]))
                    truth.reads_S[(w, b, cycle)] = g_reads.astype(np.float64)
                    state[(w, b)] = x
                    final_level[(w, b)], programmed[(w, b)] = int(h), x
            for i in range(spec.switching_devices):
                _cycle_device(ds, h5u, spec.array_lines - 1, i, rng, spec, vr, truth)
            if spec.raster:  # Read All: the raster [bits, words] at the read voltage
                level = np.full((spec.array_lines, spec.array_lines), -0.45)
                for (w, b), x in programmed.items():
                    level[b, w] = x + rsig[final_level[(w, b)]] * rng.standard_normal()
                g = siemens(level)
                cur = currents(g)
                truth.raster_S = g.astype(np.float64)
                ds.dataset("crossbar/current")[:] = cur
                ds.dataset("crossbar/voltage")[:] = np.full(cur.shape, vr)
            _retention(ds, h5u, rng, spec, final_level, programmed, siemens, currents, vr, truth)
    finally:
        h5u.H5DataStore._BASE_SIZE = old_base
    return truth


def _write_sequence(ds, h5u, w, b, volts, cur_verify, vr, spec) -> None:
    """A write-verify sequence as ArC2Control records it: pulse rows carry no read (NaN)."""
    n = volts.size
    pw = np.full(n, spec.pulse_width_s, np.float32)
    if spec.pulse_read:
        ds.update_status_bulk(w, b, cur_verify, volts, pw, np.full(n, vr), np.full(n, h5u.OpType.PULSEREAD))
        return
    cur = np.empty(2 * n, np.float32)
    cur[0::2], cur[1::2] = np.nan, cur_verify
    volt = np.empty(2 * n, np.float32)
    volt[0::2], volt[1::2] = volts, vr
    pws = np.zeros(2 * n, np.float32)
    pws[0::2] = pw
    vread = np.full(2 * n, vr, np.float32)
    vread[0::2] = np.nan
    ops = np.tile([h5u.OpType.PULSE, h5u.OpType.READ], n)
    ds.update_status_bulk(w, b, cur, volt, pws, vread, ops)


def _cycle_device(ds, h5u, w, b, rng, spec, vr, truth) -> None:
    """SET/RESET cycling with pulse-read rows: a SET reads the LRS, a RESET the HRS."""
    n = spec.switching_cycles
    lrs = spec.lrs_median_ohm * np.exp(spec.lrs_sigma_ln * rng.standard_normal(n))
    hrs = spec.hrs_median_ohm * np.exp(spec.hrs_sigma_ln * rng.standard_normal(n))
    g = np.empty(2 * n, np.float32)
    g[0::2], g[1::2] = (1.0 / lrs).astype(np.float32), (1.0 / hrs).astype(np.float32)
    volts = np.tile(np.float32([spec.set_voltage, spec.reset_voltage]), n)
    ds.update_status_bulk(w, b, (g * vr).astype(np.float32), volts, np.full(2 * n, spec.pulse_width_s, np.float32),
                          np.full(2 * n, vr), np.full(2 * n, h5u.OpType.PULSEREAD))
    truth.lrs_ohm += (1.0 / g[0::2].astype(np.float64)).tolist()
    truth.hrs_ohm += (1.0 / g[1::2].astype(np.float64)).tolist()


def _retention(ds, h5u, rng, spec, final_level, programmed, siemens, currents, vr, truth) -> None:
    """The Retention module on ``retention_per_level`` devices per level: one table each, reads also in the history."""
    if spec.retention_per_level == 0:
        return
    L = len(spec.level_conductance_uS)
    chosen = []
    for h in range(L):
        at_h = [xp for xp in sorted(programmed) if final_level[xp] == h]
        chosen += [at_h[i] for i in sorted(rng.choice(len(at_h), spec.retention_per_level, replace=False))]
    T = spec.retention_reads
    start = SESSION_START_S + 3600.0
    rel = spec.retention_every_s * np.arange(T)
    rsig = np.asarray(spec.read_sigma_levels)
    nominal = np.asarray(spec.level_conductance_uS)
    step = (nominal[-1] - nominal[0]) / (L - 1)
    for i, (w, b) in enumerate(chosen):
        h = final_level[(w, b)]
        nu = max(0.0, spec.nu_mean_levels[h] + spec.nu_std_levels[h] * rng.standard_normal())
        t_prog = spec.retention_delay_s + rel
        g_uS = (nominal[0] + programmed[(w, b)] * step) * (t_prog / t_prog[0]) ** -nu
        level = (g_uS - nominal[0]) / step + rsig[h] * rng.standard_normal(T)
        g = siemens(level)
        cur = currents(g)
        if truth.raster_S is not None:  # ArC2Control puts every read into the raster too
            truth.raster_S[b, w] = g[-1]
        stamp = start + rel + 1e-3 * i + 1e-4 * rng.random(T)  # devices are read one after another
        table = np.zeros(T, RET_DTYPE)
        table["read_voltage"], table["current"] = vr, cur
        table["tstamp_s"] = np.floor(stamp).astype(np.uint64)
        table["tstamp_us"] = np.round((stamp - np.floor(stamp)) * 1e6).astype(np.uint64)
        dset = ds.make_wb_table(w, b, "RET", (T,), RET_DTYPE, tstamp=int((start + rel[-1] + 1) * 1e9) + i)
        dset.attrs["vread"] = float(vr)
        for name, _ in RET_DTYPE:
            dset[:, name] = table[name]
        ds.update_status_bulk(w, b, cur, np.full(T, vr), np.zeros(T, np.float32), np.full(T, vr), h5u.OpType.READ)
        truth.retention.append((w, b, nu))
