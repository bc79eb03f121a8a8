"""Presets from and to aihwkit's noise models: statistical equivalence, round trips, refusals;
converted models with aihwkit configs, digital copies, whole-model pickles, tensor-only state dicts.

Statistics: for each noise model both sides draw N = 20,000 devices at each of five
target conductances (0, 0.1, 0.3, 0.6, 1 x g_max) with fixed seeds; programmed
conductances, drift exponents and reads at time t are compared per level by a
two-sample KS test and a two-sided variance F test. Each test family (one model, up to
3 stages x 5 levels x 2 tests = 30 tests) is held to a family-wise level of 1% by
Bonferroni (p > 0.01 / 30 each). A 5% change of any sigma moves log var by 0.098, about
7 standard errors (sqrt(2/N + 2/N) = 0.014), so the F test rejects it (checked below).
"""

from __future__ import annotations

import io

import pytest
import torch
from aihwkit.inference.compensation.drift import PerColumnDriftCompensation
from aihwkit.inference.converter.conductance import NPairConductanceConverter
from aihwkit.inference.noise.custom import StateIndependentNoiseModel
from aihwkit.inference.noise.pcm import CustomDriftPCMLikeNoiseModel, PCMLikeNoiseModel
from aihwkit.inference.noise.reram import ReRamCMONoiseModel, ReRamWan2022NoiseModel
from aihwkit.nn.conversion import convert_to_digital
from aihwkit.simulator.configs import InferenceRPUConfig, SingleRPUConfig, TorchInferenceRPUConfig
from scipy import stats
from torch import nn

import xbar
from xbar import presets
from xbar.errors import InputError
from xbar.presets import from_aihwkit

N = 20_000
FRACTIONS = (0.0, 0.1, 0.3, 0.6, 1.0)
FAMILY_ALPHA = 0.01


def custom_drift() -> CustomDriftPCMLikeNoiseModel:
    table = {"g_lst": [0.0, 10.0, 25.0], "nu_mean_lst": [0.08, 0.05, 0.03], "nu_std_lst": [0.02, 0.015, 0.01]}
    return CustomDriftPCMLikeNoiseModel(table, prog_noise_scale=0.8)


#: (id, noise model factory, read time t in s)
MODELS = [
    ("pcm-default", PCMLikeNoiseModel, 3600.0),
    ("pcm-40uS-scaled", lambda: PCMLikeNoiseModel(
        g_max=40.0, prog_noise_scale=1.5, read_noise_scale=0.7, drift_scale=0.5, t_0=10.0, t_read=1e-6), 86400.0),
    ("pcm-custom-drift", custom_drift, 3600.0),
    ("state-independent", lambda: StateIndependentNoiseModel(
        g_max=30.0, prog_coeff=[0.2, 0.5, -0.1], drift_nu_mean=0.06, drift_nu_std=0.02, read_noise_scale=0.5), 3600.0),
    ("reram-wan2022", ReRamWan2022NoiseModel, 86400.0),
]


def _var_test(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Two-sided F test of equal variances: (var ratio, p)."""
    va, vb = a.double().var().item(), b.double().var().item()
    if va == vb == 0:
        return 1.0, 1.0
    f = va / vb
    dfa, dfb = a.numel() - 1, b.numel() - 1
    return f, float(2 * min(stats.f.cdf(f, dfa, dfb), stats.f.sf(f, dfa, dfb)))


def draws(nm, t: float, seed: int = 0, preset=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{stage: (aihwkit [levels, N], xbar [levels, N])} for programming, drift exponents, read at t."""
    preset = preset or from_aihwkit(nm)
    dm = preset.device_model()
    g_max = preset.mapping.conductance_max_uS
    target = torch.tensor(FRACTIONS).mul(g_max)[:, None].expand(-1, N).contiguous()
    torch.manual_seed(seed)
    a_prog = nm.apply_programming_noise_to_conductance(target.clone())
    a_nu = nm.generate_drift_coefficients(target.clone())
    a_read = nm.apply_drift_noise_to_conductance(a_prog.clone(), a_nu, t)
    gen = torch.Generator().manual_seed(seed + 1)
    x_prog, x_nu = dm.program_levels(target, gen)
    x_read, _ = dm.read_levels(target, x_prog, x_nu, t, gen)
    out = {"programming": (a_prog, x_prog), "read": (a_read, x_read)}
    if x_nu is not None:
        out["drift nu"] = (a_nu, x_nu)
    return out


def compare(nm, t: float, seed: int = 0, preset=None) -> list[dict]:
    """Per stage and level: KS statistic and p, variance ratio and F-test p."""
    rows = []
    for stage, (a, x) in draws(nm, t, seed, preset).items():
        for i, frac in enumerate(FRACTIONS):
            ks = stats.ks_2samp(a[i].numpy(), x[i].numpy())
            f, fp = _var_test(a[i], x[i])
            rows.append({"stage": stage, "g/g_max": frac, "ks": float(ks.statistic), "ks_p": float(ks.pvalue),
                         "var_ratio": f, "f_p": fp, "n": N})
    return rows


@pytest.mark.parametrize("name,factory,t", MODELS, ids=[m[0] for m in MODELS])
def test_from_aihwkit_draws_aihwkit_statistics(name, factory, t):
    rows = compare(factory(), t)
    alpha = FAMILY_ALPHA / (2 * len(rows))
    worst = min(rows, key=lambda r: min(r["ks_p"], r["f_p"]))
    assert min(worst["ks_p"], worst["f_p"]) > alpha, worst
    assert {r["stage"] for r in rows} >= {"programming", "read"}


@pytest.mark.parametrize(
    "field,stage,kwargs",
    [
        ("programming.scale", "programming", {}),
        # neither programming noise nor drift: the read's spread is the read noise's alone
        ("read_noise.scale", "read", {"prog_noise_scale": 0.0, "drift_scale": 0.0}),
    ],
)
def test_comparison_rejects_a_five_percent_sigma_change(field, stage, kwargs):
    nm = PCMLikeNoiseModel(**kwargs)
    preset = from_aihwkit(nm)
    wrong = preset.with_overrides(**{field: 1.05})
    rows = [r for r in compare(nm, 3600.0, preset=wrong) if r["stage"] == stage and r["g/g_max"] >= 0.3]
    assert max(r["f_p"] for r in rows) < 1e-6, rows


def test_comparison_rejects_a_shifted_drift_exponent():
    nm = PCMLikeNoiseModel()
    wrong = from_aihwkit(nm).with_overrides(**{"drift.scale": 1.05})
    rows = [r for r in compare(nm, 3600.0, preset=wrong) if r["stage"] == "drift nu"]
    assert max(r["ks_p"] for r in rows) < 1e-6, rows


def test_weights_programmed_through_both_converters_agree():
    """Whole weights: aihwkit's single-pair converter and xbar's analog mapping use the same g_max scaling."""
    nm = PCMLikeNoiseModel()
    dm = from_aihwkit(nm).device_model()
    values = torch.tensor([-1.0, -0.5, 0.0, 0.3, 1.0])
    w = values[:, None].expand(-1, N).contiguous()
    torch.manual_seed(3)
    a, _ = nm.apply_programming_noise(w)
    x = dm.program(w, 1, generator=torch.Generator().manual_seed(4))[0]
    alpha = FAMILY_ALPHA / (2 * len(values))
    for i in range(len(values)):
        assert stats.ks_2samp(a[i].numpy(), x[i].numpy()).pvalue > alpha
        assert _var_test(a[i], x[i])[1] > alpha


# ------------------------------------------------------------------ round trips
def _sections(p) -> dict:
    """The device sections of ``p``, whether or not its file spelled out defaults."""
    d = p.to_dict(canonical=True)
    return {k: v for k, v in d.items() if k not in ("name", "description", "source")}


@pytest.mark.parametrize("name,factory,t", MODELS, ids=[m[0] for m in MODELS])
def test_aihwkit_preset_aihwkit_preset_is_stable(name, factory, t):
    nm = factory()
    p = from_aihwkit(nm)
    config = p.to_aihwkit()
    assert type(config) is InferenceRPUConfig
    assert type(config.noise_model) is type(nm)
    assert config.noise_model.g_max == nm.g_max
    assert _sections(from_aihwkit(config)) == _sections(p)


def test_shipped_pcm_preset_round_trips_through_aihwkit():
    pcm = presets.load("pcm")
    config = pcm.to_aihwkit(TorchInferenceRPUConfig)
    nm = config.noise_model
    assert type(config) is TorchInferenceRPUConfig and type(nm) is PCMLikeNoiseModel
    assert nm.prog_coeff == list(pcm.programming.sigma_poly_uS) and nm.prog_coeff_g_max_reference == 25.0
    assert (nm.g_max, nm.t_0, nm.t_read) == (25.0, 20.0, 2.5e-7)
    assert type(config.drift_compensation).__name__ == "GlobalDriftCompensation"
    back = from_aihwkit(config)
    assert _sections(back) == _sections(pcm)


def test_rpu_config_compensation_and_scales_are_read():
    config = InferenceRPUConfig(noise_model=PCMLikeNoiseModel(prog_noise_scale=0.0, read_noise_scale=2.0),
                                drift_compensation=None)
    p = from_aihwkit(config)
    assert p.programming is None and p.read_noise.scale == 2.0 and p.drift.compensation == "none"
    assert p.to_aihwkit().drift_compensation is None


@pytest.mark.parametrize(
    "preset,parts",
    [
        ("rram-uniform", ["[mapping].weight_bits = 4", "bit-sliced"]),
        ("reram-correlated-a", ["bit-sliced", "[correlation]"]),
        ("fefet1", ["bit-sliced", "[injection].family = 'right-censored'"]),
        ("hfox-bitflip", ["[bitflip]"]),
    ],
)
def test_inexpressible_parts_are_each_named(preset, parts):
    with pytest.raises(InputError) as err:
        presets.load(preset).to_aihwkit()
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"preset {preset}: aihwkit cannot express")
    for part in parts:
        assert part in msg


def test_inexpressible_analog_parts_are_named():
    p = presets.load("pcm").with_overrides(**{"mapping.scale": "per-channel", "read_noise.exponent": 0.5})
    msg = str(pytest.raises(InputError, p.to_aihwkit).value)
    assert "[mapping].scale = 'per-channel'" in msg and "[read_noise] coeff = 0.0088, exponent = 0.5" in msg


@pytest.mark.parametrize(
    "obj,expected",
    [
        (PCMLikeNoiseModel(g_converter=NPairConductanceConverter(f_lst=[1.0, 3.0])), "g_converter = NPairConductanceConverter"),
        (ReRamCMONoiseModel(g_max=88.0, g_min=10.0), "expected one of aihwkit's PCMLikeNoiseModel"),
        (SingleRPUConfig(), "got SingleRPUConfig"),
        (InferenceRPUConfig(drift_compensation=PerColumnDriftCompensation()), "PerColumnDriftCompensation"),
        (42, "got int"),
    ],
)
def test_from_aihwkit_refuses_what_it_cannot_read(obj, expected):
    msg = str(pytest.raises(InputError, from_aihwkit, obj).value)
    assert expected in msg and "\n" not in msg


# ------------------------------------------------------------------ converted models
def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))


X = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))


def test_convert_uses_an_aihwkit_rpu_config():
    config = InferenceRPUConfig(noise_model=StateIndependentNoiseModel(g_max=30.0))
    model = xbar.convert(_net(), config).eval()
    rpu = model[3].analog_module.rpu_config
    assert rpu.preset_object().to_dict(canonical=True) == from_aihwkit(config).to_dict(canonical=True)
    assert rpu.forward == config.forward  # the config's periphery is kept
    model.program_analog_weights()
    assert not torch.equal(model(X), _net()(X))


@pytest.mark.parametrize("bad,expected", [(SingleRPUConfig(), "SingleRPUConfig"), (object(), "got object"),
                                          ("x" * 5000, "not a shipped preset")])
def test_convert_says_in_one_line_what_it_expected(bad, expected):
    msg = str(pytest.raises(InputError, xbar.convert, _net(), bad).value)
    assert expected in msg and "\n" not in msg and len(msg) < 400


def test_to_digital_returns_a_plain_torch_model():
    net = _net()
    analog = xbar.convert(net, "pcm").eval()
    for digital in (xbar.to_digital(analog), convert_to_digital(analog)):
        assert type(digital) is nn.Sequential
        assert [type(m) for m in digital] == [nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear]
        torch.testing.assert_close(digital(X), net(X))


def test_torch_save_of_a_whole_converted_model():
    analog = xbar.convert(_net(), "pcm").eval()
    buf = io.BytesIO()
    torch.save(analog, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert type(loaded).__name__ == "XbarSequential"
    torch.testing.assert_close(loaded(X), analog(X))
    loaded.program_analog_weights()
    loaded.drift_analog_weights(3600.0)
    assert torch.isfinite(loaded(X)).all()


def test_xbar_state_dict_loads_with_weights_only(tmp_path):
    analog = xbar.convert(_net(), "pcm").eval()
    path = xbar.tiles.save_state(analog, tmp_path / "state.pt")
    state = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    fresh = xbar.convert(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)), "pcm").eval()
    xbar.tiles.load_state(fresh, path)
    torch.testing.assert_close(fresh(X), analog(X))
    digital = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    digital.load_state_dict(state)  # the digital model's keys
    torch.testing.assert_close(digital(X), _net()(X))


@pytest.mark.parametrize("name,factory,t", MODELS, ids=[m[0] for m in MODELS])
def test_presets_from_aihwkit_save_and_load_back(tmp_path, name, factory, t):
    p = from_aihwkit(factory(), name=name)
    assert presets.load(presets.save(p, tmp_path / f"{name}.toml")) == p


def test_reram_preset_in_converted_tiles_reads_only_at_its_times():
    analog = xbar.convert(_net(), from_aihwkit(ReRamWan2022NoiseModel())).eval()
    analog.program_analog_weights()
    analog.drift_analog_weights(86400.0)
    assert torch.isfinite(analog(X)).all()
    with pytest.raises(InputError, match=r"t = 5 s, but the polynomials are given at t = 1, 86400, 172800 s"):
        analog.drift_analog_weights(5.0)


def test_an_xbar_rpu_config_gives_back_its_preset():
    from xbar.tiles import XbarRPUConfig

    assert from_aihwkit(XbarRPUConfig(preset="fefet1")) == presets.load("fefet1")
