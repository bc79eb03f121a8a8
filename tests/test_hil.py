"""Hardware in the loop: emulated chip statistics, write-verify, exact read-back, record/replay.

Statistical checks compare sample variances with chi-square quantiles at a fixed
seed (false-alarm rate ALPHA per check, Bonferroni over levels).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os

import h5py
import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from xbar import presets
from xbar.errors import InputError
from xbar.hil import (
    CrossbarBackend,
    EmulatedBackend,
    RecordingBackend,
    ReplayBackend,
    SupportsMVM,
    evaluate,
    program_model,
    read_model,
    read_weights,
)

ALPHA = 1e-3
HAS_CALIBRATION = importlib.util.find_spec("xbar.calibration") is not None
EXAMPLE_H5 = os.path.join(os.path.dirname(__file__), "..", "calibration", "examples", "fefet_per_level.h5")


def level_block(rows: int, cols: int, levels: int = 4) -> torch.Tensor:
    """A tile whose devices cycle through every level."""
    return (torch.arange(rows * cols) % levels).reshape(rows, cols).float()


def chi2_sigma_ok(x: np.ndarray, sigma: float, k: int = 1) -> bool:
    """(n-1) s^2 / sigma^2 within the two-sided chi2(n-1) band at ALPHA / k."""
    n = x.size
    stat = (n - 1) * x.var(ddof=1) / sigma**2
    return stats.chi2.ppf(ALPHA / (2 * k), n - 1) < stat < stats.chi2.ppf(1 - ALPHA / (2 * k), n - 1)


class Tiny(nn.Module):
    """A conv + two linear layers on 8x8 inputs (exercises conv layout and several tiles)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc1 = nn.Linear(4 * 8 * 8, 40)
        self.fc2 = nn.Linear(40, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture
def tiny() -> Tiny:
    torch.manual_seed(0)
    return Tiny()


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)


# ---------------------------------------------------------------- emulated chip
def test_backends_satisfy_the_protocol(tmp_path):
    emu = EmulatedBackend("rram-uniform", rows=8, cols=8)
    assert isinstance(emu, CrossbarBackend) and isinstance(emu, SupportsMVM)
    with RecordingBackend(emu, tmp_path / "r.h5") as rec:
        assert isinstance(rec, CrossbarBackend)
        rec.program(0, level_block(4, 4))
        rec.read(0)
    assert isinstance(ReplayBackend(tmp_path / "r.h5"), CrossbarBackend)


def test_programming_error_matches_preset_sigma_per_level():
    preset = presets.load("fefet1")
    sigma = preset.programming.sigma_d * np.array(preset.programming.level_multipliers)
    chip = EmulatedBackend(preset, rows=128, cols=128, seed=3)
    target = level_block(128, 128)
    chip.program(0, target)
    err = (chip.read(0) - target).numpy()
    for h in range(4):
        assert chi2_sigma_ok(err[target.numpy() == h], sigma[h], k=4), h
        assert abs(err[target.numpy() == h].mean()) < 4 * sigma[h] / np.sqrt(err.size / 4)


def test_correlated_preset_gives_the_preset_variance_and_neighbour_correlation():
    preset = presets.load("reram-correlated-a")  # independent 0.05 + Kronecker 0.1 over 2 rows x 4 cols
    chip = EmulatedBackend(preset, rows=32, cols=32, seed=8)
    target = level_block(32, 32)
    errs = []
    for tile in range(16):
        chip.program(tile, target)
        errs.append(chip.read(tile) - target)
    e = torch.stack(errs).double()
    c = preset.correlation
    var = preset.programming.sigma_d**2 + c.sigma**2
    cov = c.to_dense(32, 32).double() + preset.programming.sigma_d**2 * torch.eye(32 * 32, dtype=torch.float64)
    z = stats.norm.ppf(1 - ALPHA / 6)  # two-sided, three checks
    idx = torch.arange(32 * 32).reshape(32, 32)

    def product_cov(a: torch.Tensor, b: torch.Tensor, c_: torch.Tensor, d: torch.Tensor) -> float:
        """Cov(mean x_a x_b, mean x_c x_d) over index pairs of one tile, averaged over 16 tiles:
        Gaussian errors give Cov(x_a x_b, x_c x_d) = C_ac C_bd + C_ad C_bc."""
        a, b, c_, d = (t.flatten() for t in (a, b, c_, d))
        terms = cov[a][:, c_] * cov[b][:, d] + cov[a][:, d] * cov[b][:, c_]
        return float(terms.sum()) / (a.numel() * c_.numel()) / 16

    var_s2 = product_cov(idx, idx, idx, idx)
    assert abs(float(e.var()) - var) < z * var_s2**0.5
    for lag, (a, b) in {"cols": (idx[:, 1:], idx[:, :-1]), "rows": (idx[1:, :], idx[:-1, :])}.items():
        prod = e[:, 1:, :] * e[:, :-1, :] if lag == "rows" else e[:, :, 1:] * e[:, :, :-1]
        length = c.length_rows if lag == "rows" else c.length_cols
        rho = c.sigma**2 * np.exp(-1 / length) / var
        # r = m / s^2 by the delta method: Var(r) = (Var m - 2 rho Cov(m, s^2) + rho^2 Var s^2) / var^2
        var_r = (product_cov(a, b, a, b) - 2 * rho * product_cov(a, b, idx, idx) + rho**2 * var_s2) / var**2
        assert abs(float(prod.mean() / e.var()) - rho) < z * var_r**0.5, lag


def test_read_noise_is_fresh_at_every_read_with_the_preset_sigma():
    read_sigma = [0.02, 0.03, 0.03, 0.02]
    preset = presets.load("fefet1", **{"read_noise.sigma_levels": read_sigma})
    chip = EmulatedBackend(preset, rows=128, cols=128, seed=4)
    target = level_block(128, 128)
    chip.program(0, target)
    diff = (chip.read(0) - chip.read(0)).numpy()  # programming error cancels, read noise twice
    for h in range(4):
        assert chi2_sigma_ok(diff[target.numpy() == h], np.sqrt(2) * read_sigma[h], k=4), h


def test_drift_follows_the_preset_law_on_the_simulated_clock():
    preset = presets.load(
        "fefet1", sigma_d=0.0, **{"drift.nu_mean_levels": [0, 0.05, 0.05, 0.05], "drift.nu_std_levels": [0, 0, 0, 0]}
    )
    chip = EmulatedBackend(preset, rows=4, cols=4)
    target = level_block(4, 4)
    chip.program(0, target)
    assert torch.equal(chip.read(0), target)
    chip.advance(3600.0)
    t0 = preset.drift.t0_s
    expected = target * ((3600.0 + t0) / t0) ** -0.05
    torch.testing.assert_close(chip.read(0), expected)
    with pytest.raises(InputError):
        chip.advance(-1.0)


def test_write_verify_error_shrinks_with_tolerance_and_respects_the_budget():
    preset = presets.load("fefet1", **{"read_noise.sigma_levels": [0.005, 0.005, 0.005, 0.005]})
    target = level_block(96, 96)
    rms, pulses = [], []
    for tol in (None, 0.4, 0.2, 0.1):
        chip = EmulatedBackend(preset, rows=96, cols=96, seed=7, tolerance=tol, max_pulses=40)
        chip.program(0, target)
        rep = chip.reports[0]
        assert rep.pulses_max <= 40
        rms.append(rep.programmed_error_rms)
        pulses.append(rep.pulses_total)
        if tol is not None:  # a sigma-0.4 level passes tol 0.1 on 20% of pulses: ~1 device may run out
            assert rep.unconverged <= 5
            assert rep.unconverged or rep.error_max_abs <= tol + 6 * 0.005  # verify reads are noisy
    assert all(a > b for a, b in zip(rms, rms[1:])), rms
    assert all(a < b for a, b in zip(pulses, pulses[1:])), pulses
    tight = EmulatedBackend(preset, rows=96, cols=96, seed=7, tolerance=0.02, max_pulses=3)
    tight.program(0, target)
    rep = tight.reports[0]
    assert rep.pulses_max == 3 and rep.pulses_total <= 3 * target.numel() and rep.unconverged > 0


def test_emulated_rejects_bad_targets():
    chip = EmulatedBackend("fefet1", rows=4, cols=4)
    with pytest.raises(InputError, match="target level 1.5"):
        chip.program(0, torch.full((2, 2), 1.5))
    with pytest.raises(InputError, match="do not fit"):
        chip.program(0, torch.zeros(5, 4))
    with pytest.raises(InputError, match="tile id"):
        chip.program(99999, torch.zeros(2, 2))
    with pytest.raises(InputError, match="not been programmed"):
        chip.read(1)


# ------------------------------------------------------------------ model level
@pytest.mark.parametrize(
    "name, overrides",
    [
        ("fefet1", {"sigma_d": 0.0}),
        ("reram-correlated-a", {"sigma_d": 0.0, "correlation.sigma": 0.0}),
        ("rram-uniform", {"sigma_d": 0.0, "sign": "offset", "mapping.scale": "per-channel"}),
    ],
)
def test_noise_free_read_back_equals_the_quantized_model(tiny, inputs, name, overrides):
    preset = presets.load(name, **overrides)
    dm = preset.device_model()
    chip = EmulatedBackend(preset, rows=32, cols=16)  # small tiles: every layer spans several
    session = program_model(tiny, chip, preset)
    assert session.tiles_used > 3 * dm.mapping.devices_per_weight
    back = read_model(session, tiny)
    for (name_, p), (_, q) in zip(tiny.named_parameters(), back.named_parameters()):
        expected = dm.target(p.detach()) if name_.endswith("weight") else p.detach()
        assert torch.equal(q.detach(), expected), name_
    quantized = copy.deepcopy(tiny)  # the digital model with its weights quantized
    with torch.no_grad():
        for name_, p in quantized.named_parameters():
            if name_.endswith("weight"):
                p.copy_(dm.target(p))
    assert torch.equal(evaluate(back, inputs).logits, evaluate(quantized, inputs).logits)


def test_analog_storage_reads_back_the_weights(tiny):
    preset = dataclasses.replace(presets.load("pcm", **{"programming.scale": 0.0}), read_noise=None, drift=None)
    session = program_model(tiny, EmulatedBackend(preset, rows=64, cols=64), preset)
    back = read_model(session, tiny)
    for p, q in zip(tiny.parameters(), back.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-7)


def test_read_model_inplace_and_noise_changes_weights(tiny):
    before = [p.detach().clone() for p in tiny.parameters()]
    session = program_model(tiny, EmulatedBackend("fefet1", seed=1), "fefet1")
    copy = read_model(session, tiny)
    assert all(torch.equal(a, b) for a, b in zip(before, tiny.parameters()))
    assert not torch.equal(copy.fc1.weight, tiny.fc1.weight)
    same = read_model(session, tiny, inplace=True)
    assert same is tiny and not torch.equal(tiny.fc1.weight, before[1])


def test_drift_compensation_restores_the_layer_scale(tiny):
    preset = presets.load(
        "fefet1", sigma_d=0.0, **{"drift.nu_mean_levels": [0, 0.05, 0.05, 0.05], "drift.nu_std_levels": [0, 0, 0, 0]}
    )
    chip = EmulatedBackend(preset)
    session = program_model(tiny, chip, preset)
    chip.advance(86400.0)
    raw = read_model(session, tiny, compensate=False)
    fixed = read_model(session, tiny)
    target = preset.device_model().target(tiny.fc1.weight.detach())
    assert raw.fc1.weight.abs().sum() < 0.9 * target.abs().sum()
    torch.testing.assert_close(fixed.fc1.weight, target)  # one nu for every level > 0: exact up to rounding


def test_too_small_chip_is_an_input_error(tiny):
    with pytest.raises(InputError, match="needs 104 tiles of 16x16.*the chip has 4"):
        program_model(tiny, EmulatedBackend("fefet1", rows=16, cols=16, n_tiles=4), "fefet1")


# ------------------------------------------------------------ record and replay
def record_session(model, inputs, path, preset, seed=11):
    """Program, evaluate, read twice at t = 0, advance an hour, evaluate again; returns logits."""
    chip = EmulatedBackend(preset, seed=seed, tolerance=0.1, max_pulses=10)
    out = []
    with RecordingBackend(chip, path) as rec:
        session = program_model(model, rec, preset)
        out.append(evaluate(read_model(session, model), inputs).logits)
        out.append(evaluate(read_model(session, model), inputs).logits)
        rec.advance(3600.0)
        out.append(evaluate(read_model(session, model), inputs).logits)
    return out, session


def replay_session(model, inputs, path, preset):
    chip = ReplayBackend(path)
    session = program_model(model, chip, preset)
    out = [evaluate(read_model(session, model), inputs).logits for _ in range(2)]
    chip.advance(3600.0)
    out.append(evaluate(read_model(session, model), inputs).logits)
    assert chip.remaining() == {"program": 0, "read": 0, "mvm": 0}
    return out


NOISY = {"read_noise.sigma_levels": [0.02, 0.03, 0.03, 0.02], "drift.nu_mean_levels": [0.0, 0.03, 0.04, 0.05],
         "drift.nu_std_levels": [0.0, 0.01, 0.01, 0.01]}


def test_replay_reproduces_the_recorded_evaluation_bit_for_bit(tiny, inputs, tmp_path):
    preset = presets.load("fefet1", **NOISY)
    path = tmp_path / "session.h5"
    recorded, session = record_session(tiny, inputs, path, preset)
    assert not torch.equal(recorded[0], recorded[1])  # read noise: every read differs
    assert session.summary()["write_verify"]["pulses_max"] <= 10
    replayed = replay_session(tiny, inputs, path, preset)
    for a, b in zip(recorded, replayed):
        assert torch.equal(a, b)
    assert evaluate(tiny, inputs).logits.shape == recorded[0].shape


def test_recording_is_atomic_and_does_not_overwrite(tmp_path):
    path = tmp_path / "r.h5"
    rec = RecordingBackend(EmulatedBackend("fefet1", rows=8, cols=8), path)
    rec.program(0, level_block(8, 8))
    rec.read(0)
    assert not path.exists()
    rec.close()
    assert path.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(InputError, match="closed"):
        rec.read(0)
    with pytest.raises(InputError, match="already exists"):
        RecordingBackend(EmulatedBackend("fefet1"), path)
    RecordingBackend(EmulatedBackend("fefet1"), path, force=True).close()


def test_recording_stores_programming_and_reads_groups(tmp_path):
    path = tmp_path / "r.h5"
    chip = EmulatedBackend("fefet1", rows=16, cols=16, level_conductance_uS=[10.0, 20.0, 30.0, 40.0])
    with RecordingBackend(chip, path) as rec:
        rec.program(3, level_block(16, 16))
        first = rec.read(3)
        rec.read(3)
        rec.read(3)
    with h5py.File(path, "r") as fh:
        assert fh.attrs["schema"] == "xbar-measurements"
        g = fh["programming"]
        assert g["conductance"].attrs["units"] == "uS"
        np.testing.assert_allclose(g["conductance"][()], 10.0 + 10.0 * first.double().reshape(-1).numpy())
        assert set(g["array"][()]) == {3} and g["row"][()].max() == 15 and g["col"][()].max() == 15
        assert fh["reads/conductance"].shape == (256, 3)
        assert "hil" in fh
    assert ReplayBackend(path).level_conductance_uS == (10.0, 20.0, 30.0, 40.0)


@pytest.mark.skipif(not HAS_CALIBRATION, reason="xbar.calibration is not in this checkout")
def test_recording_passes_the_calibration_reader_and_fit_recovers_the_preset(tmp_path):
    from xbar.calibration import fit, read_measurements

    read_sigma = [0.02, 0.03, 0.03, 0.02]
    preset = presets.load("fefet1", **{"read_noise.sigma_levels": read_sigma})
    path = tmp_path / "chip.h5"
    with RecordingBackend(EmulatedBackend(preset, rows=64, cols=64, seed=9), path) as rec:
        for tile in range(4):
            rec.program(tile, level_block(64, 64))
            for _ in range(3):
                rec.read(tile)
    m = read_measurements(path)
    assert m.groups == ["programming", "reads"] and m.levels == 4
    assert m.programming.target_level.shape == (4 * 64 * 64,)
    assert m.reads.conductance.shape == (4 * 64 * 64, 3)
    result = fit(m, name="chip").preset
    sig = np.array(result.programming.level_multipliers or [1.0] * 4) * result.programming.sigma_d
    want = np.array(preset.programming.level_multipliers) * preset.programming.sigma_d
    np.testing.assert_allclose(sig, want, rtol=0.06)
    np.testing.assert_allclose(result.read_noise.sigma_levels, read_sigma, rtol=0.06)


@pytest.mark.skipif(not HAS_CALIBRATION, reason="xbar.calibration is not in this checkout")
def test_recorded_model_session_passes_the_calibration_reader(tiny, inputs, tmp_path):
    from xbar.calibration import read_measurements

    path = tmp_path / "session.h5"
    record_session(tiny, inputs, path, presets.load("fefet1", **NOISY))
    m = read_measurements(path)
    assert "programming" in m.groups and "reads" in m.groups


def test_analog_recording_keeps_the_session_and_says_why_groups_are_missing(tiny, inputs, tmp_path):
    preset = presets.load("pcm")
    path = tmp_path / "pcm.h5"
    with RecordingBackend(EmulatedBackend(preset, rows=64, cols=64), path) as rec:
        session = program_model(tiny, rec, preset)
        logits = evaluate(read_model(session, tiny), inputs).logits
    assert "analog" in rec.omitted["programming"]
    replay = ReplayBackend(path)
    again = evaluate(read_model(program_model(tiny, replay, preset), tiny), inputs).logits
    assert torch.equal(logits, again)


def test_mvm_is_recorded_and_replayed(tmp_path):
    path = tmp_path / "mvm.h5"
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    with RecordingBackend(EmulatedBackend(presets.load("fefet1", sigma_d=0.0), rows=8, cols=8), path) as rec:
        rec.program(0, level_block(8, 8))
        y = rec.mvm(0, x)
    torch.testing.assert_close(y, x @ level_block(8, 8))
    replay = ReplayBackend(path)
    replay.program(0, level_block(8, 8))
    assert torch.equal(replay.mvm(0, x), y)


# --------------------------------------------------------------- replay errors
@pytest.fixture
def recording(tmp_path):
    path = tmp_path / "rec.h5"
    with RecordingBackend(EmulatedBackend("fefet1", rows=8, cols=8, seed=2), path) as rec:
        rec.program(0, level_block(8, 8))
        rec.read(0)
        rec.advance(10.0)
        rec.read(0)
    return path


def one_line_error(call, *fragments: str) -> str:
    with pytest.raises(InputError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_replay_errors_are_one_line_input_errors(recording, tmp_path):
    name = str(recording)
    one_line_error(lambda: ReplayBackend(tmp_path / "missing.h5"), "missing.h5", "no such file")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    one_line_error(lambda: ReplayBackend(tmp_path / "junk.h5"), "junk.h5", "HDF5")
    if os.path.exists(EXAMPLE_H5):
        one_line_error(lambda: ReplayBackend(EXAMPLE_H5), "fefet_per_level.h5", "/hil", "expected")

    one_line_error(lambda: ReplayBackend(recording).program(0, level_block(4, 8)), name, "/hil/shape", "[8, 8]", "[4, 8]")
    one_line_error(lambda: ReplayBackend(recording).program(0, (level_block(8, 8) + 1) % 4), name, "/hil/values", "differ")
    one_line_error(lambda: ReplayBackend(recording).read(5), name, "/hil/tile", "tile 5")

    replay = ReplayBackend(recording)
    replay.program(0, level_block(8, 8))
    replay.read(0)
    one_line_error(lambda: replay.read(0), name, "/hil/seconds", "advancing 10 s", "advanced 0 s")
    replay.advance(10.0)
    replay.read(0)
    one_line_error(lambda: replay.read(0), name, "/hil/op", "read #2 of tile 0", "has 2")

    loose = ReplayBackend(recording, strict=False)
    loose.program(0, (level_block(8, 8) + 1) % 4)
    loose.read(0)
    loose.read(0)


def test_replay_rejects_a_corrupt_log(recording):
    with h5py.File(recording, "a") as fh:
        fh["hil"].attrs["format_version"] = 7
    one_line_error(lambda: ReplayBackend(recording), "/hil/@format_version", "expected 1")
    with h5py.File(recording, "a") as fh:
        fh["hil"].attrs["format_version"] = 1
        del fh["hil/offset"]
    one_line_error(lambda: ReplayBackend(recording), "/hil/offset", "missing")


HAS_TILES = importlib.util.find_spec("xbar.tiles") is not None


@pytest.mark.skipif(not HAS_TILES, reason="xbar.tiles is not in this checkout")
def test_converted_model_evaluates_with_the_read_back_weights(tiny, inputs):
    import xbar

    preset = presets.load("fefet1", **NOISY)
    analog = xbar.convert(tiny, preset)
    plain = read_model(program_model(tiny, EmulatedBackend(preset, seed=4), preset), tiny)
    back = read_model(program_model(analog, EmulatedBackend(preset, seed=4), preset), analog)
    torch.testing.assert_close(evaluate(back, inputs).logits, evaluate(plain, inputs).logits, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(evaluate(analog, inputs).logits, evaluate(plain, inputs).logits, atol=1e-3)


# ------------------------------------------------- clipping at 0 uS, late files
@pytest.mark.skipif(not HAS_CALIBRATION, reason="xbar.calibration is not in this checkout")
def test_level_at_zero_uS_is_clipped_and_the_recording_fits(tmp_path, capsys):
    from xbar.calibration import fit, read_measurements
    from xbar.cli import main

    path = tmp_path / "zero.h5"
    chip = EmulatedBackend("fefet1", rows=32, cols=32, level_conductance_uS=[0, 10, 20, 30])
    with RecordingBackend(chip, path) as rec:
        rec.program(0, level_block(32, 32))
        first = rec.read(0)
        rec.read(0)
    assert float(first.min()) == 0.0  # level units: 0 uS is level 0 here
    with h5py.File(path, "r") as fh:
        g = fh["programming/conductance"][()]
        assert g.min() == 0.0 and 64 < int(np.count_nonzero(g == 0)) < 192  # about half of level 0
    assert main(["fit", str(path), "--out", str(tmp_path / "p.toml"), "--report", str(tmp_path / "rep")]) == 0
    assert "left-censored" in capsys.readouterr().out
    res = fit(read_measurements(path))
    s0 = res.programming.levels[0]
    assert s0.mean_method == "censored" and s0.sigma_ci.contains(0.1) and s0.mean_ci.contains(0.0)
    assert res.preset_dict["programming"]["mean_levels"][0] == 0.0
    # without a conductance scale there is no physical zero: nothing is clipped
    free = EmulatedBackend("fefet1", rows=32, cols=32)
    free.program(0, level_block(32, 32))
    assert float(free.read(0).min()) < 0


def test_recording_close_does_not_replace_a_file_that_appeared(tmp_path):
    path = tmp_path / "r.h5"
    rec = RecordingBackend(EmulatedBackend("fefet1", rows=8, cols=8), path)
    rec.program(0, level_block(8, 8))
    rec.read(0)
    path.write_text("written by someone else during the session")
    with pytest.warns(UserWarning, match="appeared there during the recording session"):
        written = rec.close()
    assert written == tmp_path / "r.1.h5" == rec.path
    assert path.read_text().startswith("written by someone else")
    assert ReplayBackend(written).remaining()["read"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.1.h5", "r.h5"]
    # with force the recorder owns the path
    forced = RecordingBackend(EmulatedBackend("fefet1", rows=8, cols=8), path, force=True)
    forced.program(0, level_block(8, 8))
    assert forced.close() == path and h5py.is_hdf5(path)


def test_read_weights_by_layer_name(tiny):
    preset = presets.load("fefet1")
    session = program_model(tiny, EmulatedBackend(preset, rows=32, cols=16, seed=2), preset)
    first = session.layers[0]
    assert torch.equal(read_weights(session, first.name), read_weights(session, first))
    with pytest.raises(InputError, match="not programmed"):
        read_weights(session, "nope")
