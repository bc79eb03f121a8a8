"""WVAT's weight variation as a device model (``[weight_variation]``, presets wvat-5 / wvat-10).

Per layer, every weight moves by N(0, (gamma sigma_v A)^2) with A = 6 std of the layer's
weights (WVAT Sec. 3, Eq. 1). The variance checks are chi-square tests: with m
independent deviations of known std sigma, sum (dw / sigma)^2 ~ chi2(m), two-sided at
1e-3; with m ~ 10^5 a 3 % error in sigma is already rejected (shown).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import xbar
from tests.helpers import cli_json, lenet, one_thread, write_run
from xbar import presets
from xbar.devices.variation import RangeVariation
from xbar.errors import InputError
from xbar.training import hsv_sigma


def chi2_p(dev: torch.Tensor, sigma: float) -> float:
    """Two-sided p-value of sum (dev / sigma)^2 ~ chi2(dev.numel())."""
    stat = float((dev.double() / sigma).square().sum())
    m = dev.numel()
    return 2 * min(stats.chi2.cdf(stat, m), stats.chi2.sf(stat, m))


@pytest.mark.parametrize("name,sigma_v", [("wvat-5", 0.05), ("wvat-10", 0.10)])
def test_wvat_presets_give_sigma_v_times_each_layers_range(name: str, sigma_v: float) -> None:
    preset = presets.load(name)
    assert preset.weight_variation == RangeVariation(sigma_v, 1.0)
    g = torch.Generator().manual_seed(0)
    layers = {"narrow": 0.05 * torch.randn(40, 30, generator=g), "wide": 0.8 * torch.randn(16, 8, 3, 3, generator=g)}
    n = 300
    for w in layers.values():
        x = xbar.sample_weights(w, preset, n, generator=g)
        dev = x - w  # analog storage: the target is the weight itself
        sigma = sigma_v * 6.0 * float(w.std(unbiased=False))  # WVAT: sigma_v of A = [mu - 3 std, mu + 3 std]
        assert sigma == pytest.approx(hsv_sigma(w, sigma_v, 1.0), rel=1e-6)  # the training definition
        assert chi2_p(dev, sigma) > 1e-3
        assert chi2_p(dev, 1.03 * sigma) < 1e-6
        assert stats.kstest((dev.flatten() / sigma).double().numpy(), "norm").pvalue > 1e-3
        # one std for the whole layer, independent of the weight's value: big and small weights alike
        big = w.abs() > w.abs().median()
        assert chi2_p(dev[:, big], sigma) > 1e-3 and chi2_p(dev[:, ~big], sigma) > 1e-3


def test_variation_in_training_injection_and_with_programming_noise() -> None:
    g = torch.Generator().manual_seed(1)
    w = 0.3 * torch.randn(64, 32, generator=g)
    dm = presets.load("wvat-10").device_model()
    sigma = 0.1 * 6 * float(w.std(unbiased=False))
    inj = torch.stack([dm.inject_noise(w, sigma_scale=0.5, generator=g) for _ in range(100)])
    assert chi2_p(inj, 0.5 * sigma) > 1e-3
    # with a discrete mapping and programming noise the variances add (Eq. 14 + WVAT Eq. 1)
    p = presets.load("rram-uniform", **{"weight_variation.sigma_v": 0.1})
    dm = p.device_model()
    plain = presets.load("rram-uniform").device_model()
    std = dm.weight_std(w)
    torch.testing.assert_close(std, (plain.weight_std(w) ** 2 + sigma**2).sqrt())
    x = xbar.sample_weights(w, p, 200, generator=g)
    assert chi2_p((x - dm.target(w)) / std, 1.0) > 1e-3
    # device by device (drift studies, the aihwkit tiles) the recombined weight has the same std
    state = dm.program_devices(w, 200, generator=g)
    assert chi2_p((state.weights() - dm.target(w)) / std, 1.0) > 1e-3
    assert not dm.noise_free and presets.load("wvat-5", **{"weight_variation.sigma_v": 0.0}).device_model().noise_free


def test_bad_weight_variation_is_refused() -> None:
    with pytest.raises(InputError, match=r"\[weight_variation\]\.sigma_v = -0.1: expected a finite number >= 0"):
        presets.load("wvat-5", **{"weight_variation.sigma_v": -0.1})
    with pytest.raises(InputError, match=r"\[weight_variation\]\.spread: unknown field"):
        presets.load("wvat-5", **{"weight_variation.spread": 0.1})


def test_xbar_eval_measures_the_accuracy_drop_under_wvat_variation(tmp_path, capsys) -> None:
    run = write_run(tmp_path / "run", lenet(seed=0))
    with one_thread():
        d = cli_json(capsys, ["eval", str(run), "--preset", "wvat-10", "--mc", "8", "--limit", "200", "--no-progress",
                              "--json", "--seed", "3"])
    assert d["preset"] == "wvat-10"
    acc = np.asarray(d["per_instance"]["accuracy"])
    assert len(set(acc.round(6))) > 1
    assert acc.mean() < d["clean"]["accuracy"]  # a 10% variation costs accuracy (WVAT Tables 1-2's SGD-TTV)
