"""A corpus of malformed measurement files: each is rejected with its own one-line message.

Every case starts from a valid file holding all five groups and breaks one thing.
The reader must raise ``InputError`` naming the file and the dataset/attribute with a
distinctive expectation, and ``xbar fit`` must exit 2 with exactly one stderr line and
write nothing.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from xbar.calibration import Measurements, read_measurements, synthetic, write_measurements
from xbar.cli import main
from xbar.errors import InputError


def base_measurements() -> Measurements:
    prog = synthetic.programming_measurements(
        0, (0.1,) * 4, n_per_level=6, level_conductance_uS=(10, 20, 30, 40),
        read_sigma_levels=(0.02,) * 4, read_devices_per_level=2, reads_per_device=3,
    )
    drift = synthetic.drift_measurements(0, devices_per_level=3, time_s=np.geomspace(20, 2e4, 5))
    maps = synthetic.correlated_measurements(0, n_maps=2, rows=4, cols=5)
    sw = synthetic.switching_measurements(0, n_lrs=10, n_hrs=10)
    return Measurements(
        device="test chip", created=synthetic.CREATED, levels=4,
        programming=prog.programming, reads=prog.reads, drift=drift.drift,
        array_maps=maps.array_maps, switching=sw.switching,
    )


def replace_dset(g: h5py.Group, name: str, data, **attrs) -> None:
    old = dict(g[name].attrs) if name in g else {}
    if name in g:
        del g[name]
    d = g.create_dataset(name, data=data)
    for k, v in {**old, **attrs}.items():
        d.attrs[k] = v


def edit(fn):
    """A mutation that edits the HDF5 file in place."""

    def apply(path: Path) -> None:
        with h5py.File(path, "r+") as fh:
            fn(fh)

    return apply


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def huge_rows(fh: h5py.File) -> None:
    g = fh["programming"]
    del g["target_level"]
    g.create_dataset("target_level", shape=(200_000_000,), dtype="int8", chunks=(1 << 20,))


def drop_all_groups(fh: h5py.File) -> None:
    for name in list(fh):
        del fh[name]


def group_as_dataset(fh: h5py.File) -> None:
    del fh["switching"]
    fh.create_dataset("switching", data=np.arange(3.0))


def prog(fn):
    return edit(lambda fh: fn(fh["programming"]))


CASES = {
    "no groups": (edit(drop_all_groups), "no measurement group; expected at least one of"),
    "wrong schema name": (edit(lambda fh: fh.attrs.__setitem__("schema", "arc2-datastore")), "expected 'xbar-measurements'"),
    "wrong schema version": (edit(lambda fh: fh.attrs.__setitem__("schema_version", 2)), "schema_version = 2 is not supported; expected 1"),
    "missing schema": (edit(lambda fh: fh.attrs.__delitem__("schema")), "root attribute 'schema': missing"),
    "missing device": (edit(lambda fh: fh.attrs.__delitem__("device")), "root attribute 'device': missing"),
    "truncated file": (truncate, "not a readable HDF5 file"),
    "not hdf5": (lambda p: p.write_text("device_id,target_level\n0,1\n"), "not a readable HDF5 file"),
    "empty file": (lambda p: p.write_bytes(b""), "not a readable HDF5 file"),
    "group is a dataset": (edit(group_as_dataset), "/switching: expected a group, found a dataset"),
    "conductance 2-D": (prog(lambda g: replace_dset(g, "conductance", np.ones((24, 2)))), "/programming/conductance: expected a 1-D dataset"),
    "length mismatch": (prog(lambda g: replace_dset(g, "conductance", np.full(23, 20.0))), "has 23 rows; expected 24 to match target_level"),
    "float target levels": (prog(lambda g: replace_dset(g, "target_level", g["target_level"][()].astype(float))), "/programming/target_level: expected an integer dataset"),
    "string conductance": (prog(lambda g: replace_dset(g, "conductance", np.array([b"x"] * 24))), "expected a numeric (float) dataset"),
    "NaN conductance": (prog(lambda g: g["conductance"].__setitem__(3, np.nan)), "/programming/conductance: contains 1 NaN or Inf"),
    "Inf drift": (edit(lambda fh: fh["drift/conductance"].__setitem__((0, 1), np.inf)), "/drift/conductance: contains 1 NaN or Inf"),
    "negative conductance": (prog(lambda g: g["conductance"].__setitem__(0, -5.0)), "negative conductances; expected >= 0"),
    "empty dataset": (prog(lambda g: replace_dset(g, "device_id", np.zeros(0, dtype=np.int64))), "/programming/device_id: is empty"),
    "absurd levels": (prog(lambda g: g.attrs.__setitem__("levels", 4096)), "levels = 4096: expected 2 to 1024 levels per device"),
    "absurd rows": (edit(huge_rows), "/programming/target_level: absurd size [200000000]"),
    "target out of range": (prog(lambda g: g["target_level"].__setitem__(0, 4)), "target level 4 is outside [0, 4)"),
    "too few samples": (prog(lambda g: replace_dset(g, "target_level", np.r_[np.zeros(22, int), 1, 2])), "expected at least 3 for every level"),
    "missing nominal": (prog(lambda g: g.attrs.__delitem__("level_conductance_uS")), "level_conductance_uS: missing"),
    "nominal not increasing": (prog(lambda g: g.attrs.__setitem__("level_conductance_uS", [10.0, 30.0, 20.0, 40.0])), "is not strictly increasing"),
    "unknown units": (prog(lambda g: g["conductance"].attrs.__setitem__("units", "amps")), "units = 'amps'; expected one of"),
    "missing dataset": (prog(lambda g: g.__delitem__("conductance")), "/programming/conductance: missing dataset"),
    "reads 1-D": (edit(lambda fh: replace_dset(fh["reads"], "conductance", np.ones(8))), "/reads/conductance: expected a 2-D dataset"),
    "single read": (edit(lambda fh: replace_dset(fh["reads"], "conductance", np.ones((8, 1)))), "r >= 2 repeated reads"),
    "levels disagree": (edit(lambda fh: fh["reads"].attrs.__setitem__("levels", 8)), "levels = 8 disagrees with 4"),
    "drift times not increasing": (edit(lambda fh: fh["drift/time_s"].__setitem__(2, 1.0)), "/drift/time_s: is not strictly increasing"),
    "drift zero conductance": (edit(lambda fh: fh["drift/conductance"].__setitem__((1, 1), 0.0)), "negative or zero conductances"),
    "drift shape": (edit(lambda fh: replace_dset(fh["drift"], "conductance", np.ones((12, 6)))), "expected [k, 5] to match time_s"),
    "drift missing t0": (edit(lambda fh: fh["drift"].attrs.__delitem__("t0_s")), "/drift/@t0_s: missing"),
    "maps 2-D": (edit(lambda fh: replace_dset(fh["array_maps"], "maps", np.zeros((4, 5)))), "/array_maps/maps: expected a 3-D dataset"),
    "negative resistance": (edit(lambda fh: fh["switching/lrs_resistance_ohm"].__setitem__(0, -1.0)), "negative or zero resistances"),
    "HRS below LRS": (edit(lambda fh: replace_dset(fh["switching"], "hrs_resistance_ohm", np.full(10, 10.0))), "expected HRS > LRS"),
}


@pytest.fixture(scope="module")
def base_file(tmp_path_factory) -> Path:
    return write_measurements(tmp_path_factory.mktemp("base") / "base.h5", base_measurements())


def test_corpus_is_large_enough():
    assert len(CASES) >= 20


def test_base_file_is_valid(base_file):
    m = read_measurements(base_file)
    assert m.groups == ["programming", "reads", "drift", "array_maps", "switching"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_file_is_rejected(case, base_file, tmp_path, capsys):
    mutate, expected = CASES[case]
    bad = tmp_path / "bad.h5"
    bad.write_bytes(base_file.read_bytes())
    mutate(bad)
    with pytest.raises(InputError) as err:
        read_measurements(bad)
    msg = str(err.value)
    assert expected in msg, msg
    assert msg.startswith(str(bad)) and "\n" not in msg

    out, rep = tmp_path / "out" / "p.toml", tmp_path / "rep"
    assert main(["fit", str(bad), "--out", str(out), "--report", str(rep)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and expected in captured.err, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5"]


def test_missing_file_and_directory(tmp_path, capsys):
    with pytest.raises(InputError, match="no such file"):
        read_measurements(tmp_path / "nope.h5")
    with pytest.raises(InputError, match="is a directory"):
        read_measurements(tmp_path)
    assert main(["fit", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "p.toml")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
