"""The ArC TWO backend against the software stand-in of pyarc2 (no instrument needed)."""

from __future__ import annotations

import sys

import pytest
import torch

from xbar import presets
from xbar.errors import InputError
from xbar.hil import CrossbarBackend, RecordingBackend, ReplayBackend, program_model, read_model
from xbar.hil.arc2 import Arc2Backend, Arc2Wiring, PulseVerify
from xbar.hil.arc2_standin import StandInPyarc2

G_US = (10.0, 40.0, 70.0, 100.0)  # nominal level conductances of a 4-level device


@pytest.fixture
def firmware(tmp_path):
    path = tmp_path / "arc2.bin"
    path.write_bytes(b"\0" * 16)
    return path


def chip(preset, firmware, seed=0, **pulse):
    lib = StandInPyarc2(preset, G_US, seed=seed)
    return Arc2Backend(preset, G_US, firmware=firmware, pulse=PulseVerify(**pulse), library=lib), lib


def levels(rows=32, cols=32):
    return (torch.arange(rows * cols) % 4).reshape(rows, cols).float()


def test_write_verify_converges_within_tolerance_and_budget(firmware):
    preset = presets.load("fefet1", sigma_d=0.02)  # per-pulse landing sigma 0.02-0.08 level steps
    backend, lib = chip(preset, firmware, tolerance=0.25, max_pulses=30)
    assert isinstance(backend, CrossbarBackend)
    target = levels()
    backend.program(0, target)
    rep = backend.reports[0]
    inst = lib.instruments[0]
    assert rep.unconverged == 0 and rep.pulses_max <= 30
    assert rep.error_max_abs <= 0.25 and rep.devices == 1024
    assert int(inst.pulse_count.max()) == rep.pulses_max and int(inst.pulse_count.sum()) == rep.pulses_total
    # the true states: within the tolerance plus 4 landing sigmas of the last pulse
    assert float((inst.state - target.double()).abs().max()) < 0.25 + 4 * 0.08
    back = backend.read(0)
    assert back.shape == (32, 32) and float((back - target).abs().max()) < 0.25 + 4 * 0.08
    # the devices at level 0 start there (pristine) and need few pulses; the top level needs the most
    assert inst.pulse_count[target == 3].float().mean() > inst.pulse_count[target == 0].float().mean()


def test_write_verify_stops_at_the_budget_when_it_cannot_converge(firmware):
    preset = presets.load("fefet1", sigma_d=0.1)  # landing sigma 0.1-0.4, tolerance far below it
    backend, lib = chip(preset, firmware, tolerance=0.005, max_pulses=6)
    target = levels(8, 8)
    backend.program(0, target)
    rep = backend.reports[0]
    counts = lib.instruments[0].pulse_count
    assert rep.pulses_max == 6 and int(counts.max()) == 6  # nobody got a 7th pulse
    assert rep.unconverged > 32
    assert int(counts[8:, :].sum()) == 0 and int(counts[:, 8:].sum()) == 0  # only the tile's devices were pulsed
    assert rep.error_rms > 0.005


def test_tiles_partition_the_array_and_slices_read_them(firmware, tmp_path):
    preset = presets.load("fefet1", sigma_d=0.02)
    lib = StandInPyarc2(preset, G_US, seed=1)
    backend = Arc2Backend(preset, G_US, firmware=firmware, tile_rows=16, tile_cols=16, library=lib)
    assert list(backend.tiles()) == [0, 1, 2, 3]
    backend.program(3, levels(16, 16))
    state = lib.instruments[0].state
    # the default tolerance plus 4 landing sigmas of the last pulse (as in the test above)
    assert float((state[16:, 16:] - levels(16, 16).double()).abs().max()) < PulseVerify().tolerance + 4 * 0.08
    assert int(lib.instruments[0].pulse_count[:16].sum()) == 0
    # a model through the driver, recorded and replayed
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    with RecordingBackend(backend, tmp_path / "arc2.h5") as rec:
        session = program_model(model, rec, preset)
        live = read_model(session, model)
    replay = read_model(program_model(model, ReplayBackend(tmp_path / "arc2.h5"), preset), model)
    for a, b in zip(live.parameters(), replay.parameters()):
        assert torch.equal(a, b)


def test_missing_library_is_one_line(monkeypatch, firmware):
    monkeypatch.setitem(sys.modules, "pyarc2", None)  # import pyarc2 -> ImportError
    with pytest.raises(InputError, match=r"^pyarc2 is not installed.*xbar\[arc2\]") as exc:
        Arc2Backend("fefet1", G_US, firmware=firmware)
    assert "\n" not in str(exc.value)


def test_no_instrument_is_one_line(firmware):
    lib = StandInPyarc2("fefet1", G_US, ids=())
    with pytest.raises(InputError, match=r"^no ArC TWO instrument found: pyarc2.find_ids\(\) is empty") as exc:
        Arc2Backend("fefet1", G_US, firmware=firmware, library=lib)
    assert "\n" not in str(exc.value)


def test_real_pyarc2_without_an_instrument_is_one_line(firmware):
    pyarc2 = pytest.importorskip("pyarc2")
    if pyarc2.find_ids():
        pytest.skip("an ArC TWO is connected")
    with pytest.raises(InputError, match="no ArC TWO instrument found"):
        Arc2Backend("fefet1", G_US, firmware=firmware)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"level_conductance_uS": (10.0, 20.0)}, "expected 4 finite"),
        ({"pulse": PulseVerify(tolerance=0)}, "tolerance > 0"),
        ({"wiring": Arc2Wiring(row_channels=(0, 0))}, "distinct channels"),
        ({"port": 5}, "not among the connected instruments"),
        ({"firmware": "missing.bin"}, "no such file"),
    ],
)
def test_bad_settings_are_input_errors(firmware, kwargs, match):
    args = {"level_conductance_uS": G_US, "firmware": firmware, "library": StandInPyarc2("fefet1", G_US), **kwargs}
    with pytest.raises(InputError, match=match):
        Arc2Backend("fefet1", **args)


def test_bad_targets_are_input_errors(firmware):
    backend, _ = chip(presets.load("fefet1"), firmware)
    with pytest.raises(InputError, match="expected integers 0 to 3"):
        backend.program(0, torch.full((2, 2), 4.0))
    with pytest.raises(InputError, match="has not been programmed"):
        backend.read(0)
