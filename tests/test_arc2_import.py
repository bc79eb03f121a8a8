"""ArC TWO sessions -> xbar-measurements: exact conductances, fit recovery, malformed stores.

The input stores are written by ArC2Control's own writer (``arc2control.h5utils.H5DataStore``,
through :mod:`xbar.calibration.arc2_synthetic`), so the importer is tested against the real
layout: NaN-filled pulse rows, tables allocated ahead of ``NROWS``, retention tables with
``NROWS`` left at 0, the ``[bits, words]`` raster.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.helpers import cli_json, cli_refused
from xbar.calibration import arc2_synthetic, fit, import_arc2, read_measurements
from xbar.calibration.schema import to_level_units
from xbar.calibration.switching import bitflip_threshold
from xbar.cli import main
from xbar.errors import InputError

try:
    arc2_synthetic.load_h5utils()
except ImportError as exc:  # the dev extra installs arc2control
    pytest.skip(str(exc), allow_module_level=True)

SPEC = arc2_synthetic.SessionSpec(switching_devices=4)
SEED = 11
BUNDLED = Path(__file__).resolve().parent.parent / "calibration" / "examples"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    d = tmp_path_factory.mktemp("arc2")
    truth = arc2_synthetic.write_session(d / "session.h5", SPEC, seed=SEED)
    arc2_synthetic.write_plan(d / "plan.csv", truth)
    return d / "session.h5", d / "plan.csv", truth


def _sorted_programming(truth):
    """Plan rows and conductances in the importer's order: crosspoint (word, bit), then cycle."""
    rows = np.array(truth.plan_rows)
    order = np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))
    return rows[order], np.asarray(truth.programming_S)[order]


def test_import_reproduces_known_conductances_exactly(session, tmp_path):
    src, plan, truth = session
    m = read_measurements(
        import_arc2(src, tmp_path / "m.h5", plan=plan, retention_delay_s=SPEC.retention_delay_s, array_map=True)
    )
    assert m.groups == ["programming", "reads", "drift", "array_maps", "switching"] and m.levels == 4
    rows, g = _sorted_programming(truth)
    p = m.programming
    assert p.units == "S" and p.conductance.size == SPEC.cycles * 64
    np.testing.assert_array_equal(p.conductance, g)  # |I / V| with V = 0.25: exact
    np.testing.assert_array_equal(np.c_[p.row, p.col, p.cycle, p.target_level], rows)
    np.testing.assert_array_equal(p.device_id, p.row * SPEC.array_lines + p.col)
    np.testing.assert_array_equal(p.level_conductance_uS, SPEC.level_conductance_uS)

    # one /reads row per (crosspoint, cycle), all reads_per_cycle reads, in plan order
    assert m.reads.conductance.shape == (SPEC.cycles * 64, SPEC.reads_per_cycle)
    np.testing.assert_array_equal(m.reads.conductance, np.stack([truth.reads_S[tuple(r[:3])] for r in rows]))
    np.testing.assert_array_equal(m.reads.target_level, rows[:, 3])

    # retention: the planned devices, read every 20 s from retention_delay_s on
    d = m.drift
    assert sorted(d.device_id.tolist()) == sorted(w * SPEC.array_lines + b for w, b, _ in truth.retention)
    expected_t = SPEC.retention_delay_s + SPEC.retention_every_s * np.arange(SPEC.retention_reads)
    np.testing.assert_allclose(d.time_s, expected_t, atol=2e-3)
    assert d.t0_s == d.time_s[0] == SPEC.retention_delay_s
    assert d.conductance.shape == (4 * len(SPEC.level_conductance_uS), SPEC.retention_reads)

    # the raster over the planned 8 x 8 rectangle, [words, bits], minus the last cycle's targets
    last = rows[rows[:, 2] == SPEC.cycles - 1]
    target = np.zeros((8, 8), np.int64)
    target[last[:, 0], last[:, 1]] = last[:, 3]
    raster = truth.raster_S[:8, :8].T
    np.testing.assert_array_equal(m.array_maps.maps[0], to_level_units(raster, "S", SPEC.level_conductance_uS) - target)

    # SET/RESET cycling of the four crosspoints outside the plan
    np.testing.assert_array_equal(np.sort(m.switching.lrs_resistance_ohm), np.sort(truth.lrs_ohm))
    np.testing.assert_array_equal(np.sort(m.switching.hrs_resistance_ohm), np.sort(truth.hrs_ohm))


def test_pulse_read_sessions_negative_read_voltage_and_a_plan_without_cycles(tmp_path):
    spec = arc2_synthetic.SessionSpec(
        array_lines=8, words=(2, 6), bits=(1, 4), cycles=1, pulse_read=True, read_voltage=-0.5,
        retention_per_level=0, raster=False, reads_per_cycle=3,
    )
    truth = arc2_synthetic.write_session(tmp_path / "s.h5", spec, seed=3)
    plan = arc2_synthetic.write_plan(tmp_path / "p.csv", truth, with_cycle=False)
    assert read_measurements(import_arc2(tmp_path / "s.h5", tmp_path / "a.h5", plan=plan)).groups == ["programming", "reads"]
    m = read_measurements(import_arc2(tmp_path / "s.h5", tmp_path / "m.h5", plan=plan, array_map=True))
    assert m.groups == ["programming", "reads", "array_maps"]
    rows, g = _sorted_programming(truth)
    np.testing.assert_array_equal(m.programming.conductance, g)
    np.testing.assert_array_equal(m.programming.target_level, rows[:, 3])
    assert m.reads.conductance.shape == (12, 3)
    # without a Read All the raster holds each crosspoint's latest read (ArC2Control writes every read there)
    last_read = np.array([truth.reads_S[tuple(r[:3])][-1] for r in rows]).reshape(4, 3)
    level = to_level_units(last_read, "S", spec.level_conductance_uS) - rows[:, 3].reshape(4, 3)
    np.testing.assert_array_equal(m.array_maps.maps[0], level)


def test_synthetic_retention_tables_give_one_drift_row_per_planned_crosspoint(session, tmp_path):
    """A multi-crosspoint table under /synthetics (ArC2Control's make_synthetic_table), one column each."""
    src0, plan, truth = session
    src = tmp_path / "session.h5"
    shutil.copy(src0, src)
    h5u = arc2_synthetic.load_h5utils()
    on_retention = {(w, b) for w, b, _ in truth.retention}
    xps = [xp for xp in ((w, b) for w in range(8) for b in range(8)) if xp not in on_retention][:3]
    xps.append((SPEC.array_lines - 1, 0))  # a cycling crosspoint, not in the plan: left out
    T, k = SPEC.retention_reads, len(xps)
    dtype = [("read_voltage", "<f4"), ("current", "<f4", (k,)), ("tstamp_s", "<u8"), ("tstamp_us", "<u8")]
    g = np.float32(1e-6) * np.float32(np.linspace(20, 60, T * k)).reshape(T, k)
    t = 1_800_000_000 + SPEC.retention_every_s * np.arange(T)
    with h5u.H5DataStore(str(src), mode=h5u.H5Mode.APPEND) as ds:
        table = ds.make_synthetic_table(xps, "RET", (T,), dtype, tstamp=1_800_000_000 * 10**9)
        table[:, "read_voltage"] = np.float32(0.25)
        table[:, "current"] = g * np.float32(0.25)
        table[:, "tstamp_s"] = t.astype(np.uint64)
        table[:, "tstamp_us"] = np.zeros(T, np.uint64)
    m = read_measurements(import_arc2(src, tmp_path / "m.h5", plan=plan, retention_delay_s=SPEC.retention_delay_s))
    d = m.drift
    assert d.conductance.shape[0] == len(truth.retention) + 3
    rows = [int(np.flatnonzero(d.device_id == w * SPEC.array_lines + b)[0]) for w, b in xps[:3]]
    np.testing.assert_array_equal(d.conductance[rows], g[:, :3].T.astype(np.float64))  # exact: 0.25 V
    last = {(w, b): h for w, b, c, h in truth.plan_rows if c == SPEC.cycles - 1}
    assert d.target_level[rows].tolist() == [last[xp] for xp in xps[:3]]
    assert m.created == "2027-01-15T08:00:00+00:00"  # the newest TSTAMP in the store


def test_fit_of_the_import_recovers_the_generating_parameters(session, tmp_path):
    """Every generating parameter lies in the interval ``xbar fit`` reports for it.

    21 intervals (4 programming sigmas, 4 read sigmas, 4 mean offsets, 4 drift nu means,
    4 nu stds, p_bf) at 99.9% each: by Bonferroni all hold together with probability
    >= 97.9% over seeds; the seed is fixed, so the test is deterministic.
    """
    src, plan, truth = session
    out = import_arc2(src, tmp_path / "m.h5", plan=plan, retention_delay_s=SPEC.retention_delay_s)
    r = fit(out, confidence=0.999)
    assert r.selection.chosen == "per-level" and r.spatial is None
    for h in range(4):
        assert r.sigma_levels_ci[h].contains(SPEC.sigma_levels[h]), (h, r.sigma_levels_ci[h])
        assert r.read_noise.levels[h].sigma_ci.contains(SPEC.read_sigma_levels[h]), h
        assert r.programming.levels[h].mean_ci.contains(SPEC.mean_levels[h]), h
        assert r.drift.levels[h].nu_mean_ci.contains(SPEC.nu_mean_levels[h]), h
        assert r.drift.levels[h].nu_std_ci.contains(SPEC.nu_std_levels[h]), h
    _, p_bf = bitflip_threshold(
        np.log(SPEC.lrs_median_ohm), SPEC.lrs_sigma_ln, np.log(SPEC.hrs_median_ohm), SPEC.hrs_sigma_ln
    )
    assert r.switching.p_bf_ci.contains(p_bf)
    assert r.preset_dict["drift"]["t0_s"] == SPEC.retention_delay_s


def test_cli_import_then_fit(session, tmp_path, capsys):
    src, plan, _ = session
    out, toml = tmp_path / "m.h5", tmp_path / "p.toml"
    assert main(["import-arc2", str(src), "--out", str(out), "--plan", str(plan), "--skip", "switching"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out} (4 levels)" in text and "/programming: 256 programming rows" in text and "switching" not in text
    assert main(["fit", str(out), "--out", str(toml)]) == 0
    assert "[drift]" in toml.read_text()
    capsys.readouterr()
    cli_refused(capsys, ["import-arc2", str(src), "--out", str(out), "--plan", str(plan)], "already exists")
    d = cli_json(capsys, ["import-arc2", str(src), "--out", str(out), "--plan", str(plan), "--force", "--json",
                          "--array-map"])
    assert d["sizes"]["array_maps"] == [1, 8, 8]


def test_without_a_plan_only_cycling_is_imported(tmp_path):
    spec = arc2_synthetic.SessionSpec(array_lines=4, words=(0, 0), bits=(0, 0), switching_devices=3,
                                      retention_per_level=0, raster=False)
    truth = arc2_synthetic.write_session(tmp_path / "s.h5", spec, seed=5)
    m = read_measurements(import_arc2(tmp_path / "s.h5", tmp_path / "m.h5"))
    assert m.groups == ["switching"]
    np.testing.assert_array_equal(np.sort(m.switching.hrs_resistance_ohm), np.sort(truth.hrs_ohm))


def test_the_bundled_example_imports_with_defaults_and_fits_its_generator(tmp_path):
    """calibration/examples/arc2_session.h5 + arc2_plan.csv: regenerated values, fit truths (as above, 16 at 99.9%)."""
    session, plan = BUNDLED / "arc2_session.h5", BUNDLED / "arc2_plan.csv"
    assert session.stat().st_size < 1024 * 1024
    m = read_measurements(import_arc2(session, tmp_path / "m.h5", plan=plan))
    assert m.groups == ["programming", "reads", "drift"]
    spec = arc2_synthetic.EXAMPLE_SPEC
    truth = arc2_synthetic.write_session(tmp_path / "again.h5", spec, seed=arc2_synthetic.EXAMPLE_SEED)
    assert arc2_synthetic.write_plan(tmp_path / "plan.csv", truth).read_text() == plan.read_text()
    again = read_measurements(import_arc2(tmp_path / "again.h5", tmp_path / "a.h5", plan=plan))
    for group in m.groups:  # the same values, bit for bit
        for name in ("conductance", "target_level", "time_s", "device_id"):
            if hasattr(getattr(m, group), name):
                np.testing.assert_array_equal(getattr(getattr(m, group), name), getattr(getattr(again, group), name))
    rows, g = _sorted_programming(truth)
    np.testing.assert_array_equal(m.programming.target_level, rows[:, 3])
    np.testing.assert_allclose(m.programming.conductance, g, rtol=1.2e-7)  # float32 current at 0.2 V: one rounding
    r = fit(m, confidence=0.999)
    for h in range(4):
        assert r.sigma_levels_ci[h].contains(spec.sigma_levels[h]), h
        assert r.read_noise.levels[h].sigma_ci.contains(spec.read_sigma_levels[h]), h
        assert r.drift.levels[h].nu_mean_ci.contains(spec.nu_mean_levels[h]), h
        assert r.drift.levels[h].nu_std_ci.contains(spec.nu_std_levels[h]), h
    assert r.preset_dict["drift"]["t0_s"] == 1.0


# ------------------------------------------------------------------ malformed stores
def _edit(path: Path, fn) -> None:
    with h5py.File(path, "r+") as fh:
        fn(fh)


def _ts(fh, name="W00B00"):
    return fh[f"crosspoints/{name}/timeseries"]


def _set_row(fh, field, row, value, name="W00B00"):
    d = _ts(fh, name)
    rows = d[()]
    rows[field][row] = value
    d[...] = rows


def _first_ret(fh):
    names = []
    fh["crosspoints"].visititems(lambda n, o: names.append(o.name) if isinstance(o, h5py.Dataset) and "RET_" in n else None)
    return fh[names[0]]


def _zero_ret_voltage(fh):
    d = _first_ret(fh)
    rows = d[()]
    rows["read_voltage"][3] = 0.0
    d[...] = rows


def _outside_crosspoint(fh):
    fh.copy(fh["crosspoints/W00B00"], "crosspoints/W40B02")


def _pulse_at_end(fh):
    d = _ts(fh)
    n = int(d.attrs["NROWS"])
    _set_row(fh, "op_type", n - 1, 2)


def _ret_outside(fh):
    _first_ret(fh).attrs["crosspoints"] = [[2, 45]]


def _plan(edit):
    def f(plan: Path) -> None:
        lines = plan.read_text().splitlines()
        plan.write_text("\n".join(edit(lines)) + "\n")
    return f


STORE_CASES = {
    "no crosspoints": (lambda fh: fh.__delitem__("crosspoints"), "/crosspoints: missing group"),
    "no synthetics": (lambda fh: fh.__delitem__("synthetics"), "/synthetics: missing group"),
    "no crossbar": (lambda fh: fh.__delitem__("crossbar"), "/crossbar: missing group"),
    "no raster": (lambda fh: fh.__delitem__("crossbar/voltage"), "/crossbar/voltage: missing dataset"),
    "raster without a read": (lambda fh: fh["crossbar/current"].__setitem__((2, 1), np.nan),
                              "the raster at W01B02 holds current nan"),
    "no words": (lambda fh: fh.attrs.__delitem__("words"), "root attribute 'words': missing"),
    "no timeseries": (lambda fh: fh.__delitem__("crosspoints/W03B04/timeseries"), "W03B04/timeseries: missing dataset"),
    "NROWS past the data": (lambda fh: _ts(fh).attrs.__setitem__("NROWS", _ts(fh).shape[0] + 5), "is past the data"),
    "NROWS missing": (lambda fh: _ts(fh).attrs.__delitem__("NROWS"), "@NROWS: missing"),
    "zero read voltage": (lambda fh: _set_row(fh, "read_voltage", 1, 0.0), "row 1: read_voltage = 0.0 in a read"),
    "NaN read current": (lambda fh: _set_row(fh, "current", 1, np.nan), "row 1: current = nan in a read"),
    "unknown op_type": (lambda fh: _set_row(fh, "op_type", 0, 7), "op_type = 7"),
    "ends with a pulse": (_pulse_at_end, "ends with a pulse and no read"),
    "zero retention read voltage": (_zero_ret_voltage, "row 3: read_voltage = 0.0"),
    "crosspoint outside the array": (_outside_crosspoint, "W40B02 (word 40, bit 2) is outside the array"),
    "retention outside the array": (_ret_outside, "W02B45 (word 2, bit 45) is outside the array"),
    "not a crosspoint": (lambda fh: fh["crosspoints"].create_group("notes"), "/crosspoints/notes: not a crosspoint group"),
}

PLAN_CASES = {
    "unknown crosspoint": (_plan(lambda ls: [*ls, "20,20,0,0,10"]), "line 259: W20B20 is not in"),
    "plan outside the array": (_plan(lambda ls: [*ls, "40,1,0,0,10"]), "W40B01 is outside the array"),
    "a cycle missing": (_plan(lambda ls: ls[:3] + ls[4:]), "expected cycles 0..3"),
    "duplicate row": (_plan(lambda ls: [*ls, ls[2]]), "is planned twice"),
    "two conductances for a level": (_plan(lambda ls: [*ls[:2], ls[2].rsplit(",", 1)[0] + ",99", *ls[3:]]),
                                     "expected one nominal conductance per level"),
    "missing column": (_plan(lambda ls: [ls[0], "word,bit,cycle,target_level", *ls[2:]]),
                       "missing column(s) level_conductance_uS"),
    "garbled number": (_plan(lambda ls: [*ls, "1,x,0,0,10"]), "line 259: bit = 'x'; expected an integer"),
    "binary junk": (lambda p: p.write_bytes(b"\x00\xff\xfe" * 50), "plan.csv"),
    "no plan file": (lambda p: p.unlink(), "plan.csv: no such file"),
}


@pytest.mark.parametrize("case", sorted(STORE_CASES) + sorted(PLAN_CASES))
def test_malformed_input_is_refused_in_one_line_and_nothing_is_written(session, tmp_path, capsys, case):
    src0, plan0, _ = session
    src, plan = tmp_path / "session.h5", tmp_path / "plan.csv"
    shutil.copy(src0, src)
    shutil.copy(plan0, plan)
    edit, expected = STORE_CASES[case] if case in STORE_CASES else PLAN_CASES[case]
    if case in STORE_CASES:
        _edit(src, edit)
    else:
        edit(plan)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out.h5"
    cli_refused(capsys, ["import-arc2", str(src), "--out", str(out), "--plan", str(plan), "--array-map"], expected)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_planned_crosspoint_without_pulses_is_refused(session, tmp_path):
    src0, plan, _ = session
    src = tmp_path / "session.h5"
    shutil.copy(src0, src)
    h5u = arc2_synthetic.load_h5utils()
    with h5u.H5DataStore(str(src), mode=h5u.H5Mode.APPEND) as ds:  # only reads on W20B20
        ds.update_status_bulk(20, 20, np.full(3, 1e-6), np.full(3, 0.25), np.zeros(3), np.full(3, 0.25), h5u.OpType.READ)
    (tmp_path / "plan.csv").write_text(plan.read_text() + "20,20,0,0,10\n")
    with pytest.raises(InputError, match="line 259: W20B20 has no programming sequence"):
        import_arc2(src, tmp_path / "o.h5", plan=tmp_path / "plan.csv")
    assert not (tmp_path / "o.h5").exists()


def test_unreadable_session_files(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5" * 100)
    with pytest.raises(InputError, match="not a readable HDF5 file"):
        import_arc2(junk, tmp_path / "o.h5")
    with pytest.raises(InputError, match="no such file"):
        import_arc2(tmp_path / "none.h5", tmp_path / "o.h5")
    with h5py.File(tmp_path / "meas.h5", "w") as fh:  # an HDF5 file, but not a data store
        fh.attrs["schema"] = "xbar-measurements"
    with pytest.raises(InputError, match="root attribute 'words': missing"):
        import_arc2(tmp_path / "meas.h5", tmp_path / "o.h5")
    assert not (tmp_path / "o.h5").exists()
