"""xbar.tiles: aihwkit tiles driven by xbar presets (conversion, noise, programming, drift, state)."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import pytest
import torch
from aihwkit.optim import AnalogSGD
from aihwkit.simulator.parameters import (
    InputRangeParameter,
    IOParameters,
    PrePostProcessingParameter,
    WeightClipParameter,
)
from aihwkit.simulator.parameters.enums import (
    BoundManagementType,
    NoiseManagementType,
    WeightClipType,
)
from scipy import stats
from torch import nn

import xbar
from tests.conftest import requires_cuda
from xbar import models, presets, tiles
from xbar.errors import InputError
from xbar.tiles import XbarInferenceTile, XbarNoiseModel, XbarRPUConfig


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls: one intra-op thread avoids spin-waiting on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SHIPPED = ["rram-uniform", "fefet1", "fefet2", "reram-correlated-a", "reram-correlated-b", "hfox-bitflip", "pcm"]


def ideal_analog():
    """Noise-free analog storage: converted weights must be the original weights."""
    return presets.load("rram-uniform", weight_bits=0, sigma_d=0.0, name="ideal")


def ideal_quantized():
    """Noise-free 4-bit storage: weights are the H-bit quantized originals."""
    return presets.load("rram-uniform", sigma_d=0.0, name="ideal-4bit")


def small_lenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("lenet", image_size=8).eval()


class Tiny(nn.Module):
    """A conv + linear network, small enough for many forwards."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return Tiny().eval()


# --------------------------------------------------------------- conversion
@pytest.mark.parametrize("name", SHIPPED)
def test_converted_model_has_xbar_tiles_and_runs_every_preset(name: str) -> None:
    digital = small_lenet()
    analog = xbar.convert(digital, name)
    tiles_ = list(analog.analog_tiles())
    assert len(tiles_) == 5 and all(isinstance(t, XbarInferenceTile) for t in tiles_)
    assert all(isinstance(t.rpu_config, XbarRPUConfig) and t.rpu_config.preset["name"] == name for t in tiles_)
    assert all(isinstance(t.rpu_config.noise_model, XbarNoiseModel) for t in tiles_)
    assert not any(isinstance(m, nn.Linear | nn.Conv2d) and type(m) in (nn.Linear, nn.Conv2d) for m in analog.modules())
    x = torch.rand(4, 1, 8, 8)
    analog.train()
    assert analog(x).shape == (4, 10)
    analog.eval()
    clean = analog(x)
    analog.program_analog_weights()
    analog.drift_analog_weights(3600.0)
    assert analog(x).shape == (4, 10)
    tiles.reset_programming(analog)
    assert torch.equal(analog(x), clean)
    # the digital model is untouched (deep copy)
    assert all(type(m) is not tiles.XbarLinear for m in digital.modules())


def test_config_defaults_follow_the_preset() -> None:
    pcm = XbarRPUConfig.from_preset("pcm")
    assert pcm.drift_compensation is not None and pcm.forward.is_perfect
    assert pcm.mapping.max_input_size == 0 and pcm.mapping.max_output_size == 0  # one tile per layer
    rram = XbarRPUConfig(preset=presets.load("rram-uniform"))
    assert rram.drift_compensation is None and isinstance(rram.preset, dict)
    assert rram.device_model() is rram.device_model()  # cached
    copied = copy.deepcopy(rram)
    assert copied.device_model() == rram.device_model() and copied.device_model() is not rram.device_model()
    own = IOParameters(inp_res=1 / 14)
    assert XbarRPUConfig.from_preset("fefet1", forward=own).forward.inp_res == pytest.approx(1 / 14)
    ideal = XbarRPUConfig()
    assert ideal.device_model().mapping.analog and ideal.device_model().noise_free


def test_periphery_helper() -> None:
    assert tiles.periphery().is_perfect
    io = tiles.periphery(inp_bits=4, out_bits=6, out_noise=0.02)
    assert not io.is_perfect and io.inp_res == pytest.approx(1 / 14) and io.out_res == pytest.approx(1 / 62)
    assert io.out_noise == 0.02 and io.noise_management == NoiseManagementType.NONE
    assert io.bound_management == BoundManagementType.NONE
    assert tiles.periphery(inp_bits=8).out_res <= 0
    with pytest.raises(ValueError):
        tiles.periphery(inp_bits=1)


def test_convert_layer_selection_inplace_and_tile_size() -> None:
    model = small_lenet()
    only_fc = xbar.convert(model, "fefet1", layers=["classifier"])
    assert [n for n, _ in tiles.xbar_layers(only_fc)] == ["classifier.0", "classifier.2", "classifier.4"]
    only_conv = xbar.convert(model, "fefet1", layers=[nn.Conv2d])
    assert [n for n, _ in tiles.xbar_layers(only_conv)] == ["features.0", "features.3"]
    with pytest.raises(ValueError, match="names no Linear or Conv2d"):
        xbar.convert(model, "fefet1", layers=["nope"])
    with pytest.raises(InputError):
        xbar.convert(model, "no-such-preset")
    small = xbar.convert(model, "fefet1", tile_size=(64, 32))
    row = tiles.tile_map(small)[2]  # classifier.0: 64 inputs x 120 outputs
    assert (row["tile_rows"], row["tile_cols"], row["grid"]) == (64, 32, [1, 4])
    same = xbar.convert(model, "fefet1", inplace=True)
    assert isinstance(model.features[0], tiles.XbarConv2d) and same.features[0] is model.features[0]
    single = xbar.convert(nn.Linear(4, 3), "fefet1")
    assert isinstance(single, tiles.XbarLinear) and len(list(single.analog_tiles())) == 1


def test_same_named_model_classes_keep_their_own_forward() -> None:
    def make(k: float) -> nn.Module:
        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc = nn.Linear(3, 2)

            def forward(self, x):
                return self.fc(x) * k

        return Net()

    a, b = make(1.0), make(-1.0)
    x = torch.rand(4, 3)
    for digital in (a, b):
        analog = xbar.convert(digital, ideal_analog()).eval()
        assert isinstance(analog, type(digital)) and len(list(analog.analog_tiles())) == 1
        torch.testing.assert_close(analog(x), digital(x))
        torch.testing.assert_close(copy.deepcopy(analog)(x), digital(x))


def test_tile_map_counts_crossbars_and_devices() -> None:
    analog = xbar.convert(models.build("lenet"), "fefet1")
    rows = {r["name"]: r for r in tiles.tile_map(analog)}
    fc = rows["classifier.0"]  # 784 inputs x 120 outputs on 256x256 crossbars, 2 devices per weight
    assert fc["kind"] == "linear" and fc["weight_shape"] == [120, 784]
    assert (fc["rows"], fc["cols"], fc["grid"], fc["tiles"]) == (784, 120, [4, 1], 4)
    assert fc["devices_per_weight"] == 2 and fc["arrays"] == 8 and fc["devices"] == 784 * 120 * 2
    assert fc["utilization"] == pytest.approx(784 * 120 / (4 * 256 * 256), abs=1e-6)
    conv = rows["features.3"]
    assert conv["kind"] == "conv2d" and conv["weight_shape"] == [16, 6, 5, 5] and conv["rows"] == 150
    totals = tiles.tile_map_totals(list(rows.values()))
    assert totals["weights"] == sum(p.numel() for n, p in models.build("lenet").named_parameters() if n.endswith("weight"))
    table = tiles.format_tile_map(list(rows.values()))
    assert "classifier.0" in table and "total" in table.splitlines()[-1]


def test_tile_map_of_bit_pattern_storage_counts_one_cell_per_bit() -> None:
    """hfox-bitflip stores float32 weights bit by bit on binary cells: 32 devices (and arrays) per weight."""
    rows = {r["name"]: r for r in tiles.tile_map(xbar.convert(models.build("lenet"), "hfox-bitflip"))}
    fc = rows["classifier.0"]
    assert fc["devices_per_weight"] == 32 and fc["arrays"] == 4 * 32 and fc["devices"] == 784 * 120 * 32
    int8 = xbar.convert(models.build("lenet"), presets.load("hfox-bitflip", storage="int8"))
    assert {r["devices_per_weight"] for r in tiles.tile_map(int8)} == {8}


# ---------------------------------------------------------- ideal presets
@pytest.mark.parametrize("train", [False, True])
def test_noise_free_analog_preset_equals_digital(train: bool) -> None:
    digital = tiny()
    analog = xbar.convert(digital, ideal_analog())
    digital.train(train)
    analog.train(train)
    x = torch.rand(6, 3, 8, 8)
    torch.testing.assert_close(analog(x), digital(x), rtol=1e-5, atol=1e-5)
    if not train:
        analog.program_analog_weights()
        torch.testing.assert_close(analog(x), digital(x), rtol=1e-5, atol=1e-5)


def test_quantized_noise_free_preset_equals_digital_with_quantized_weights() -> None:
    digital = small_lenet()
    analog = xbar.convert(digital, ideal_quantized())
    dm = ideal_quantized().device_model()
    with torch.no_grad():
        for m in digital.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                m.weight.copy_(dm.target(m.weight))
    x = torch.rand(5, 1, 8, 8)
    for mode in (True, False):
        analog.train(mode)
        digital.train(mode)
        torch.testing.assert_close(analog(x), digital(x), rtol=1e-5, atol=1e-5)
    analog.eval()
    analog.program_analog_weights()
    torch.testing.assert_close(analog(x), digital(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------- fast paths
def _grid_io(**extra) -> IOParameters:
    """Elementwise periphery whose steps are powers of two (bit-exact in both paths)."""
    return IOParameters(
        **extra,
        is_perfect=False,
        inp_res=1 / 16,
        out_res=1 / 64,
        out_noise=0.0,
        inp_bound=1.0,
        out_bound=16.0,
        noise_management=NoiseManagementType.NONE,
        bound_management=BoundManagementType.NONE,
    )


@pytest.mark.parametrize("io", ["perfect", "periphery", "grid", "grid-asym"])
@pytest.mark.parametrize("conv_args", [dict(stride=1, padding=1), dict(stride=2, padding=2, dilation=2)])
def test_native_conv_equals_aihwkit_unfold_path(io: str, conv_args: dict) -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 8, 3, **conv_args)
    forward = {
        "perfect": None,
        "periphery": tiles.periphery(inp_bits=4, out_bits=6),
        "grid": _grid_io(),
        "grid-asym": _grid_io(inp_asymmetry=0.5, out_asymmetry=0.5, out_scale=2.0),
    }[io]
    analog = xbar.convert(conv, "fefet1", forward=forward).eval()
    assert analog.analog_module.native_supported(conv=True)
    if io.startswith("grid"):  # inputs on the DAC grid, weights on a power-of-two grid: exact sums
        x = torch.randint(-8, 9, (2, 3, 9, 9)).float() / 8
        w = torch.randint(-15, 16, (8, 27)).float() / 64
        w[0, 0] = 15 / 64
        analog.analog_module.tile.weight.data.copy_(w)
    else:
        x = torch.rand(2, 3, 9, 9)
    native, unfold = analog(x), analog.unfold_forward(x)
    assert native.shape == unfold.shape
    if io == "periphery":  # rare float ties may land on the other side of an ADC step
        step = 2 * 12.0 / 62
        diff = (native - unfold).abs()
        assert (diff > 1e-5).float().mean() < 0.01 and diff.max() <= step + 1e-5
    elif io.startswith("grid"):
        assert torch.equal(native, unfold)
    else:
        torch.testing.assert_close(native, unfold, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("io", [None, "grid"])
def test_native_linear_equals_aihwkit_tile_path(io) -> None:
    torch.manual_seed(8)
    analog = xbar.convert(nn.Linear(24, 10), "fefet1", forward=_grid_io() if io else None)
    tile = analog.analog_module
    x = torch.randint(-8, 9, (5, 3, 24)).float() / 8  # a leading sequence dimension too
    for train in (False, True):
        analog.train(train)
        with tiles.injection_disabled(analog):
            assert tile.native_supported(conv=False)
            torch.testing.assert_close(analog(x), tile(x), rtol=1e-6, atol=1e-6)


def test_native_conv_gradients_equal_unfold_path() -> None:
    torch.manual_seed(2)
    analog = xbar.convert(nn.Conv2d(3, 4, 3, padding=1), "fefet1").train()
    tile = analog.analog_module
    grads = []
    data = torch.rand(2, 3, 6, 6)
    for fwd in (analog.forward, analog.unfold_forward):
        with tiles.injection_disabled(analog):
            x = data.clone().requires_grad_(True)
            out = fwd(x)
            grads.append(torch.autograd.grad(out.square().sum(), [x, tile.tile.weight, tile.bias]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_native_linear_and_output_noise_match_in_distribution() -> None:
    torch.manual_seed(3)
    conv = xbar.convert(nn.Conv2d(2, 16, 3, padding=1), "fefet1", forward=tiles.periphery(out_noise=0.1)).eval()
    lin = xbar.convert(nn.Linear(20, 64), "fefet1", forward=tiles.periphery(out_noise=0.1)).eval()
    x, v = torch.rand(8, 2, 6, 6), torch.rand(32, 20)
    with torch.no_grad():
        ref_conv = nn.functional.conv2d(x, conv.analog_module.eval_weight().view(16, 2, 3, 3), conv.analog_module.bias, padding=1)
        ref_lin = nn.functional.linear(v, lin.analog_module.eval_weight(), lin.analog_module.bias)
        for got, ref in ((conv(x), ref_conv), (conv.unfold_forward(x), ref_conv), (lin(v), ref_lin)):
            # (n - 1) s^2 / 0.1^2 ~ chi2(n - 1): two-sided at 1e-3 over the three checks
            noise = (got - ref).double().flatten()
            n = noise.numel()
            stat = (n - 1) * float(noise.var()) / 0.1**2
            assert stats.chi2.ppf(1e-3 / 6, n - 1) < stat < stats.chi2.ppf(1 - 1e-3 / 6, n - 1)


def test_non_elementwise_periphery_falls_back_to_aihwkit() -> None:
    torch.manual_seed(4)
    io = IOParameters(out_noise=0.0)  # aihwkit default: abs-max noise management, iterative bound management
    analog = xbar.convert(nn.Conv2d(3, 4, 3, padding=1), "fefet1", forward=io).eval()
    assert not analog.analog_module.native_supported(conv=True)
    x = torch.rand(2, 3, 6, 6)
    assert torch.equal(analog(x), analog.unfold_forward(x))


def test_input_range_periphery_keeps_working(tmp_path: Path) -> None:
    torch.manual_seed(7)
    pre_post = PrePostProcessingParameter(input_range=InputRangeParameter(enable=True, init_value=0.5, init_from_data=0))
    analog = xbar.convert(
        tiny(), "fefet1", forward=tiles.periphery(inp_bits=4, out_bits=8), rpu_options={"pre_post": pre_post}
    )
    conv = analog.conv.analog_module
    assert conv.input_range is not None
    x = torch.rand(4, 3, 8, 8) * 2
    analog.train()
    assert not conv.native_supported(conv=True)  # learned input range: aihwkit's path in training
    analog(x).square().sum().backward()
    assert conv.input_range.grad is not None and conv.input_range.grad.abs().sum() > 0
    analog.eval()
    assert conv.native_supported(conv=True)
    with torch.no_grad():
        native, unfold = analog.conv(x), analog.conv.unfold_forward(x)
    diff = (native - unfold).abs()
    assert (diff > 1e-5).float().mean() < 0.01
    state = tiles.clean_state_dict(analog)
    assert "conv.input_range" in state and "conv.weight" in state
    path = tiles.save_state(analog, tmp_path / "ir.pt")
    fresh = xbar.convert(tiny(seed=3), "fefet1", rpu_options={"pre_post": pre_post})
    tiles.load_state(fresh, path)
    assert torch.equal(fresh.conv.analog_module.input_range, conv.input_range)


# ----------------------------------------------------------- injection
@pytest.mark.parametrize(
    ("preset", "family", "scale"),
    [("rram-uniform", None, 1.0), ("fefet1", "gaussian", 1.0), ("rram-uniform", None, 2.5)],
)
def test_training_forward_injects_weight_std_noise(preset: str, family: str | None, scale: float) -> None:
    torch.manual_seed(5)
    digital = nn.Linear(48, 24)
    analog = xbar.convert(digital, preset).train()
    tiles.set_injection(analog, family=family, sigma_scale=scale)
    tile = analog.analog_module
    dm = tile.tile.device_model
    clean = tile.tile.weight.detach().clone()
    target, std = dm.target(clean), dm.weight_std(clean, scale)
    eye = torch.eye(48)
    n = 150
    with torch.no_grad():
        draws = torch.stack([analog(eye) - tile.bias for _ in range(n)])  # [n, in, out] = W_eff^T
    noise = draws.transpose(1, 2) - target
    assert torch.equal(tile.tile.weight, clean)  # forward leaves the clean weights alone
    mask = (std > 0).expand_as(noise)
    z = (noise / std.clamp(min=1e-30))[mask]
    k = z.numel()
    chi2 = float((z**2).sum())
    lo, hi = stats.chi2.ppf(1e-6, k), stats.chi2.isf(1e-6, k)
    assert lo < chi2 < hi, (chi2 / k, lo / k, hi / k)
    assert abs(float(z.sum()) / math.sqrt(k)) < 5.0
    # noise is fresh at every forward
    assert not torch.equal(draws[0], draws[1])


def test_injection_gradient_is_straight_through_and_injection_can_be_disabled() -> None:
    torch.manual_seed(6)
    analog = xbar.convert(nn.Linear(10, 4), "fefet1").train()
    tile = analog.analog_module
    x = torch.rand(7, 10)
    c = torch.rand(7, 4)
    (analog(x) * c).sum().backward()
    torch.testing.assert_close(tile.tile.weight.grad, c.t() @ x)  # dL/dW of a linear layer, noise or not
    dm = tile.tile.device_model
    with torch.no_grad():
        quantized = nn.functional.linear(x, dm.target(tile.tile.weight), tile.bias)
        with tiles.injection_disabled(analog):
            assert torch.equal(analog(x), quantized)
            assert not tiles.get_injection(analog)[0].enabled
        assert tiles.get_injection(analog)[0].enabled
        assert not torch.equal(analog(x), quantized)
        tiles.set_injection(analog, enabled=False)
        assert torch.equal(analog(x), quantized)
    with pytest.raises(ValueError):
        tiles.set_injection(analog, sigma_scale=-1.0)


def test_noisy_parameters_and_effective_weights() -> None:
    analog = xbar.convert(small_lenet(), "fefet1")
    listed = tiles.noisy_parameters(analog)
    assert [n for n, _, _ in listed] == [
        "features.0.weight", "features.3.weight", "classifier.0.weight", "classifier.2.weight", "classifier.4.weight"
    ]
    params = {id(p) for p in analog.parameters()}
    assert all(isinstance(p, nn.Parameter) and id(p) in params for _, p, _ in listed)
    assert all(dm.mapping.weight_bits == 4 for _, _, dm in listed)
    eff = tiles.effective_weights(analog)
    assert eff["features.3.weight"].shape == (16, 6, 5, 5)
    _, p, dm = listed[1]
    assert torch.equal(eff["features.3.weight"].reshape(16, -1), dm.target(p.detach()))
    analog.program_analog_weights()
    assert not torch.equal(tiles.effective_weights(analog)["features.3.weight"].reshape(16, -1), dm.target(p.detach()))


# --------------------------------------------------------- programming
@pytest.mark.parametrize("name", ["fefet1", "reram-correlated-a", "pcm"])
def test_noise_model_programs_like_sample_weights(name) -> None:
    """aihwkit's programming hook draws exactly what sample_weights draws from the same seed
    (pcm too, whose drift and read noise need the device-level path)."""
    dm = presets.load(name).device_model()
    w = torch.randn(40, 30, generator=torch.Generator().manual_seed(1))
    nm = XbarNoiseModel(dm, generator=torch.Generator().manual_seed(9))
    programmed, _ = nm.apply_programming_noise(w)
    expected = xbar.sample_weights(w, presets.load(name), 1, generator=torch.Generator().manual_seed(9))[0]
    assert (programmed - dm.target(w)).std() > 0
    assert torch.equal(programmed, expected)


@pytest.mark.parametrize(
    "preset",
    [
        "fefet1",
        "reram-correlated-a",
        "pcm",
        presets.load("fefet1", sign="offset", weight_bits=6, name="offset"),
        presets.load("fefet1", **{"mapping.scale": "per-channel"}, name="per-channel"),
    ],
)
def test_bit_slicing_converter_round_trips_exactly(preset) -> None:
    p = presets.load(preset)
    dm = p.device_model()
    nm = XbarNoiseModel(dm)
    w = torch.randn(7, 11)
    levels, params = nm.g_converter.convert_to_conductances(w)
    assert len(levels) == dm.mapping.devices_per_weight
    if not dm.mapping.analog:
        stacked = torch.stack(levels)
        assert torch.equal(stacked, stacked.round()) and stacked.min() >= 0 and stacked.max() <= dm.mapping.levels - 1
    torch.testing.assert_close(nm.g_converter.convert_back_to_weights(levels, params), dm.target(w), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("preset", ["fefet1", "pcm", presets.load("fefet1", sign="offset", name="offset")])
def test_per_conductance_programming_recombines_like_program(preset) -> None:
    """aihwkit's per-conductance hook, device by device and recombined, has the distribution
    of DeviceModel.program (two-sample KS at 1e-3 over 10,000 weights)."""
    dm = presets.load(preset).device_model()
    nm = XbarNoiseModel(dm, generator=torch.Generator().manual_seed(3))
    w = torch.randn(100, 100, generator=torch.Generator().manual_seed(2))
    levels, params = nm.g_converter.convert_to_conductances(w)
    noisy = nm.g_converter.convert_back_to_weights([nm.apply_programming_noise_to_conductance(g) for g in levels], params)
    reference = dm.program(w, 1, generator=torch.Generator().manual_seed(4))[0]
    target = dm.target(w)
    a, b = (noisy - target).flatten(), (reference - target).flatten()
    assert a.std() > 0
    assert stats.ks_2samp(a.numpy(), b.numpy()).pvalue > 1e-3



def test_per_conductance_programming_keeps_the_device_correlation() -> None:
    """reram-correlated-a through the per-conductance hook: over 2,000 instances one weight's
    error has the distribution of DeviceModel.program's (KS at 1e-3) and neighbours along a
    row correlate alike (Fisher z of the two correlations, |z| < 3.3 for 1e-3)."""
    dm = presets.load("reram-correlated-a").device_model()
    nm = XbarNoiseModel(dm, generator=torch.Generator().manual_seed(3))
    w = torch.randn(8, 8, generator=torch.Generator().manual_seed(2))
    levels, params = nm.g_converter.convert_to_conductances(w)
    n = 2000
    hook = torch.stack([
        nm.g_converter.convert_back_to_weights([nm.apply_programming_noise_to_conductance(g) for g in levels], params)
        for _ in range(n)
    ]) - dm.target(w)
    ref = dm.program(w, n, generator=torch.Generator().manual_seed(4)) - dm.target(w)
    assert stats.ks_2samp(hook[:, 3, 3].numpy(), ref[:, 3, 3].numpy()).pvalue > 1e-3
    # weights [out, in]: neighbouring inputs are neighbouring crossbar rows (correlation length 2)
    r_hook = torch.corrcoef(torch.stack([hook[:, 3, 3], hook[:, 3, 4]]))[0, 1]
    r_ref = torch.corrcoef(torch.stack([ref[:, 3, 3], ref[:, 3, 4]]))[0, 1]
    assert r_ref > 0.2  # the check has something to find
    z = (torch.atanh(r_hook) - torch.atanh(r_ref)) / math.sqrt(2 / (n - 3))
    assert abs(float(z)) < 3.3


def test_program_reset_and_training_after_programming() -> None:
    analog = xbar.convert(tiny(), "rram-uniform").eval()
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        clean = analog(x)
        analog.program_analog_weights()
        programmed = analog(x)
        assert not torch.allclose(clean, programmed)
        assert torch.equal(analog(x), programmed)  # programmed weights persist across forwards
        tiles.reset_programming(analog)
        assert torch.equal(analog(x), clean)
    assert not tiles.is_programmed(analog)

    analog.program_analog_weights()
    weight = analog.fc.analog_module.tile.weight
    before = weight.detach().clone()
    analog.train()
    opt = torch.optim.SGD(analog.parameters(), lr=0.1)
    opt.zero_grad()
    analog(x).square().sum().backward()
    grad = weight.grad.detach().clone()
    opt.step()
    torch.testing.assert_close(weight.detach(), before - 0.1 * grad)  # the clean weights were trained
    analog.eval()
    with pytest.warns(UserWarning, match="changed after program_analog_weights"), torch.no_grad():
        out = analog(x)
    assert not tiles.is_programmed(analog)
    with tiles.injection_disabled(analog), torch.no_grad():
        tiles.reset_programming(analog)
        assert torch.equal(out, analog(x))
    # programming again programs the current clean weights (not a stale reference)
    analog.program_analog_weights()
    tile = analog.fc.analog_module
    dm = tile.tile.device_model
    dev = (tile.tile.programmed - dm.target(weight.detach())).abs()
    assert (dev <= 6 * dm.weight_std(weight.detach()) + 1e-6).all()


def test_deepcopy_keeps_programmed_weights() -> None:
    analog = xbar.convert(tiny(), "fefet1").eval()
    analog.program_analog_weights()
    x = torch.rand(2, 3, 8, 8)
    twin = copy.deepcopy(analog)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(twin(x), analog(x))


def test_drift_pcm() -> None:
    quiet = presets.load("pcm", **{"read_noise.scale": 0.0})
    analog = xbar.convert(tiny(), quiet).eval()
    analog.program_analog_weights()
    tile = analog.fc.analog_module
    programmed = tile.tile.programmed.clone()
    analog.drift_analog_weights(0.0)
    assert torch.equal(tile.tile.programmed, programmed) and float(tile.alpha) == 1.0
    keys = {k: v.shape for k, v in analog.state_dict().items() if isinstance(v, torch.Tensor)}
    analog.drift_analog_weights(86400.0)
    drifted = tile.tile.programmed
    assert drifted.abs().sum() < programmed.abs().sum()  # conductances decay
    alpha = float(tile.alpha)
    assert alpha > 1.0 and tile.alpha.shape == (1,)
    state = tile.drift_noise_parameters[0]
    g = state.programmed * tile.tile.device_model.drift.factor(state.nu, 86400.0)
    assert alpha == pytest.approx(float(state.weights().abs().sum() / state.weights(g).abs().sum()), rel=1e-5)
    torch.testing.assert_close(tiles.effective_weights(analog)["fc.weight"], (alpha * drifted).reshape(5, 128))
    # the state dict keeps its keys and shapes after drift and loads into a fresh model
    assert {k: v.shape for k, v in analog.state_dict().items() if isinstance(v, torch.Tensor)} == keys
    fresh = xbar.convert(tiny(), quiet)
    fresh.load_state_dict(analog.state_dict())
    # with read noise, t = 0 is the programmed state plus a small read noise
    noisy = xbar.convert(tiny(), "pcm").eval()
    noisy.program_analog_weights()
    t = noisy.fc.analog_module
    p0 = t.tile.programmed.clone()
    noisy.drift_analog_weights(0.0)
    rel = (t.tile.programmed - p0).norm() / p0.norm()
    assert 0 < rel < 0.1 and float(t.alpha) == 1.0


def test_analog_sgd_step_and_clipping_hook() -> None:
    analog = xbar.convert(tiny(), "fefet1").train()
    for tile in analog.analog_tiles():
        tile.rpu_config.clip = WeightClipParameter(type=WeightClipType.FIXED_VALUE, fixed_value=0.05)
    opt = AnalogSGD(analog.parameters(), lr=0.5)
    opt.regroup_param_groups(analog)
    before = [p.detach().clone() for _, p, _ in tiles.noisy_parameters(analog)]
    analog(torch.rand(4, 3, 8, 8)).square().sum().backward()
    opt.step()
    after = [p.detach() for _, p, _ in tiles.noisy_parameters(analog)]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    assert all(a.abs().max() <= 0.05 + 1e-7 for a in after)


# --------------------------------------------------------------- state
def test_clean_state_round_trips_with_weights_only(tmp_path: Path) -> None:
    analog = xbar.convert(tiny(), "fefet1")
    analog.train()
    opt = torch.optim.SGD(analog.parameters(), lr=0.05)
    analog(torch.rand(4, 3, 8, 8)).sum().backward()
    opt.step()  # weights and batch-norm statistics differ from a fresh model
    analog.eval()
    analog.program_analog_weights()
    analog.drift_analog_weights(100.0)
    path = tiles.save_state(analog, tmp_path / "state.pt")
    loaded = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in loaded.values())
    assert set(loaded) == set(tiny().state_dict())  # digital keys
    assert loaded["conv.weight"].shape == (8, 3, 3, 3)
    fresh = xbar.convert(tiny(seed=1), "fefet1")
    tiles.load_state(fresh, path)
    fresh.eval()
    tiles.reset_programming(analog)
    x = torch.rand(3, 3, 8, 8)
    assert torch.equal(fresh(x), analog(x))
    digital = tiny(seed=2)
    digital.load_state_dict(loaded)  # the same file is a digital checkpoint
    with pytest.raises(InputError, match="already exists"):
        tiles.save_state(analog, path)
    with pytest.raises(InputError, match="does not match"):
        tiles.load_state(xbar.convert(small_lenet(), "fefet1"), path)
    # aihwkit's own state dict embeds pickled configs: not loadable with weights_only=True
    torch.save(analog.state_dict(), tmp_path / "aihwkit.pt")
    with pytest.raises(Exception):  # noqa: B017 (the unpickler's error type is an implementation detail)
        torch.load(tmp_path / "aihwkit.pt", weights_only=True)


# ---------------------------------------------------------------- CUDA
@requires_cuda
def test_cuda_tiles_match_cpu() -> None:
    digital = tiny()
    cpu = xbar.convert(digital, ideal_quantized()).eval()
    gpu = xbar.convert(digital, ideal_quantized()).cuda().eval()
    assert all(t.tile.weight.is_cuda for t in gpu.analog_tiles())
    x = torch.rand(4, 3, 8, 8)
    # full fp32 on the GPU: cuDNN and cuBLAS default to TF32 (about 5e-4 relative per operand)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), rtol=1e-4, atol=1e-4)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
    noisy = xbar.convert(digital, "pcm").cuda()
    noisy.train()
    noisy(x.cuda()).sum().backward()
    noisy.eval()
    noisy.program_analog_weights()
    noisy.drift_analog_weights(3600.0)
    assert noisy.fc.analog_module.tile.programmed.is_cuda
    assert torch.isfinite(noisy(x.cuda())).all()
    fresh = xbar.convert(digital, "pcm")
    tiles.load_state_dict(fresh, tiles.clean_state_dict(noisy))
    torch.testing.assert_close(fresh.conv.analog_module.tile.weight, noisy.conv.analog_module.tile.weight.cpu())


def test_convert_validates_the_preset_once_and_builds_one_device_model(monkeypatch):
    """From a preset name to every tile of a converted LeNet: one validation of the TOML and one
    DeviceModel build (the config keeps the validated Preset it was given; aihwkit's per-tile
    copies of the config copy the model, they do not build it again)."""
    from xbar.devices.model import DeviceModel
    from xbar.presets.schema import Preset

    calls = {"from_dict": 0, "DeviceModel": 0}
    from_dict, init = Preset.from_dict.__func__, DeviceModel.__init__

    def counted_from_dict(cls, *a, **k):
        calls["from_dict"] += 1
        return from_dict(cls, *a, **k)

    def counted_init(self, *a, **k):
        calls["DeviceModel"] += 1
        init(self, *a, **k)

    monkeypatch.setattr(Preset, "from_dict", classmethod(counted_from_dict))
    monkeypatch.setattr(DeviceModel, "__init__", counted_init)
    analog = xbar.convert(models.build("lenet"), "fefet2")
    sigmas = {t.rpu_config.device_model().programming.sigma_d for t in analog.analog_tiles()}
    assert calls == {"from_dict": 1, "DeviceModel": 1} and sigmas == {presets.resolve("fefet2").programming.sigma_d}
