"""Device physics against closed forms (TRICE Eq. 10, 14-17; DAT III-A; aihwkit's PCM model).

Every tolerance follows from the sampling distribution it checks: sample variances
against chi-square quantiles, proportions against binomial bounds, distributions
against the Kolmogorov-Smirnov test, all at fixed seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from xbar.devices import (
    DenseCovariance,
    DeviceModel,
    DriftModel,
    KroneckerCovariance,
    NoiseFamily,
    ProgrammingNoise,
    ReadNoise,
    exponential_kernel,
    fefet_profile,
)
from xbar.mapping import MappingConfig
from xbar.presets import load

from .conftest import requires_cuda

ALPHA = 1e-3  # per-test false-alarm rate of every statistical check


def chi2_variance_ok(samples: torch.Tensor, sigma2: torch.Tensor) -> bool:
    """(n-1) s^2 / sigma^2 ~ chi2(n-1) for each column; two-sided, Bonferroni over columns."""
    n = samples.shape[0]
    s2 = samples.double().var(dim=0)
    stat = (n - 1) * s2 / sigma2.double()
    k = stat.numel()
    lo, hi = stats.chi2.ppf(ALPHA / (2 * k), n - 1), stats.chi2.ppf(1 - ALPHA / (2 * k), n - 1)
    return bool(((stat >= lo) & (stat <= hi)).all())


def eq14_variance(code: int, sigma_of_level, cfg: MappingConfig, scale: float) -> float:
    """s^2 sum_i 4^(iB) sigma(g_i)^2 for one integer magnitude (TRICE Eq. 14)."""
    total = 0.0
    for i in range(cfg.slices):
        g = (code >> (i * cfg.bits_per_device)) & (cfg.levels - 1)
        total += 4 ** (i * cfg.bits_per_device) * sigma_of_level(g) ** 2
    return scale**2 * total


@pytest.mark.parametrize("middle", [4.0, 2.0], ids=["fefet1", "fefet2"])
@pytest.mark.parametrize("path", ["closed-form", "per-device"])
def test_per_level_variance_of_recombined_weights(middle: float, path: str) -> None:
    """Every 4-bit code 0..15 on FeFET devices has the Eq. 14 variance with Eq. 16/17 sigmas."""
    cfg = MappingConfig(weight_bits=4, bits_per_device=2)
    model = DeviceModel(cfg, fefet_profile(0.1, middle))
    w = torch.arange(16, dtype=torch.float32)  # scale 1: codes are the weights
    gen = torch.Generator().manual_seed(7)
    n = 4000
    if path == "closed-form":
        x = model.program(w, n, gen)
    else:
        x = model.program_devices(w, n, gen).weights()
    sig = {0: 0.1, 1: 0.1 * middle, 2: 0.1 * middle, 3: 0.1}
    expected = torch.tensor([eq14_variance(c, sig.__getitem__, cfg, 1.0) for c in range(16)])
    assert torch.allclose(model.weight_std(w) ** 2, expected.float(), rtol=1e-5)
    assert chi2_variance_ok(x - w, expected)
    # means: z-test with Bonferroni over 16 codes
    z = (x - w).double().mean(0) / (expected.sqrt() / math.sqrt(n))
    assert z.abs().max() < stats.norm.ppf(1 - ALPHA / 32)


def test_uniform_rram_weight_sigma_is_sigma_d_times_gain_norm() -> None:
    """Uniform sigma_d: std = s sigma_d sqrt(1 + 16) for H = 4, B = 2, independent of the level."""
    model = load("rram-uniform", sigma_d=0.2).device_model()
    w = torch.randn(50, 20)
    s = w.abs().max() / 15
    assert torch.allclose(model.weight_std(w), torch.full_like(w, float(s * 0.2 * math.sqrt(17))), rtol=1e-5)


def test_differential_pair_counts_both_devices() -> None:
    cfg = MappingConfig(weight_bits=4, bits_per_device=2, sign="differential")
    model = DeviceModel(cfg, ProgrammingNoise(sigma_d=0.1))
    w = torch.tensor([15.0, -3.0])
    assert torch.allclose(model.weight_std(w), torch.full((2,), 0.1 * math.sqrt(2 * 17)), rtol=1e-5)


@pytest.mark.parametrize("kind", ["gaussian", "right-censored", "left-censored", "right-truncated", "left-truncated"])
def test_injection_family_ks_and_moments(kind: str) -> None:
    fam = NoiseFamily(kind, threshold=1.5)
    x = fam.sample((20000,), torch.Generator().manual_seed(3)).double().numpy()
    if kind.endswith("censored"):
        # atom at the threshold: its mass is 1 - Phi(th), checked with a binomial bound
        at = np.isclose(np.abs(x), 1.5)
        p = 1 - stats.norm.cdf(1.5)
        assert stats.binomtest(int(at.sum()), x.size, p).pvalue > ALPHA
        cont = x[~at]
        # the continuous part is the normal restricted to the other side
        lo, hi = (-np.inf, 1.5) if kind == "right-censored" else (-1.5, np.inf)
        assert stats.kstest(cont, stats.truncnorm(lo, hi).cdf).pvalue > ALPHA
    else:
        assert stats.kstest(x, np.vectorize(fam.cdf)).pvalue > ALPHA
    # closed-form moments against sample moments (z-tests)
    m2 = fam.second_moment()
    var = m2 - fam.mean() ** 2
    assert abs(x.mean() - fam.mean()) < stats.norm.ppf(1 - ALPHA / 2) * math.sqrt(var / x.size)
    var_sq = np.var(x**2)
    assert abs((x**2).mean() - m2) < stats.norm.ppf(1 - ALPHA / 2) * math.sqrt(var_sq / x.size)


def test_right_censored_never_exceeds_threshold_and_has_negative_mean() -> None:
    fam = NoiseFamily("right-censored", 2.0)
    x = fam.sample((100000,), torch.Generator().manual_seed(0))
    assert x.max() <= 2.0
    assert fam.mean() < 0  # TRICE Sec. III-D: E[dw] != 0


def test_injected_right_censored_weight_noise_is_bounded() -> None:
    """Per device x <= th, so recombined weight noise <= th * s * sum_i 2^(iB) sigma_max."""
    model = load("rram-uniform", sigma_d=0.1).device_model()
    w = torch.randn(200, 50)
    s = float(w.abs().max() / 15)
    fam = NoiseFamily("right-censored", 2.0)
    noise = torch.stack([model.inject_noise(w, fam, 1.0, torch.Generator().manual_seed(i)) for i in range(20)])
    sign = torch.where(w < 0, -1.0, 1.0)
    assert (noise * sign).max() <= 2.0 * 0.1 * s * (1 + 4) + 1e-6


def _cov_zscores(samples: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """z-scores of sample covariances; Var(S_ij) ~ (S_ii S_jj + S_ij^2) / n for Gaussians."""
    n = samples.shape[0]
    emp = torch.cov(samples.double().T)
    d = torch.diag(cov)
    se = ((d[:, None] * d[None, :] + cov**2) / n).sqrt()
    return (emp - cov) / se


def test_kronecker_samples_have_the_target_covariance() -> None:
    k = KroneckerCovariance(sigma=0.3, length_rows=2.0, length_cols=5.0)
    f = k.sample(6, 8, 40000, 6, 8, torch.Generator().manual_seed(1), dtype=torch.float64)
    z = _cov_zscores(f.reshape(40000, -1), k.to_dense(6, 8))
    m = z.numel()
    assert z.abs().max() < stats.norm.ppf(1 - ALPHA / (2 * m))


def test_kronecker_tiles_are_independent_and_partial_tiles_keep_marginals() -> None:
    k = KroneckerCovariance(sigma=1.0, length_rows=3.0, length_cols=3.0)
    f = k.sample(10, 7, 20000, 4, 4, torch.Generator().manual_seed(2), dtype=torch.float64)
    flat = f.reshape(20000, -1)
    emp = torch.corrcoef(flat.T)
    # (0,0) and (3,0) share a tile: corr exp(-3/3); (3,0) and (4,0) are in different tiles: 0
    assert abs(emp[0, 3 * 7].item() - math.exp(-1)) < 5 / math.sqrt(20000)
    assert abs(emp[3 * 7, 4 * 7].item()) < 5 / math.sqrt(20000)
    assert chi2_variance_ok(flat, torch.ones(70, dtype=torch.float64))


def test_kronecker_eigenpairs_match_dense_eigendecomposition() -> None:
    k = KroneckerCovariance(sigma=0.5, length_rows=3.0, length_cols=1.5)
    vals, vr, vc = k.eigenpairs(6, 5, 7)
    dense = torch.linalg.eigvalsh(k.to_dense(5, 7)).flip(0)[:6]
    assert torch.allclose(vals, dense, rtol=1e-8)
    cov = k.to_dense(5, 7)
    for j in range(6):
        v = torch.outer(vr[:, j], vc[:, j]).flatten()
        assert torch.allclose(cov @ v, vals[j] * v, atol=1e-9)


def test_low_rank_factor_reproduces_the_top_k_covariance() -> None:
    k = KroneckerCovariance(sigma=1.0, length_rows=4.0, length_cols=1.7)  # no degenerate eigenvalues
    dense = DenseCovariance(k.to_dense(4, 4))
    lr = dense.low_rank(5)
    vals, vecs = torch.linalg.eigh(k.to_dense(4, 4))
    top = (vecs[:, -5:] * vals[-5:]) @ vecs[:, -5:].T
    assert torch.allclose(lr.to_dense(), top, atol=1e-10)
    kl = k.low_rank(5, 4, 4)
    s = kl.sample(30000, torch.Generator().manual_seed(0), dtype=torch.float64).reshape(30000, -1)
    z = _cov_zscores(s, top)
    assert z.abs().max() < stats.norm.ppf(1 - ALPHA / (2 * z.numel()))


def test_dense_covariance_rejects_non_psd() -> None:
    with pytest.raises(ValueError, match="positive semidefinite"):
        DenseCovariance(torch.tensor([[1.0, 2.0], [2.0, 1.0]]))


def test_large_tile_never_forms_the_dense_matrix(monkeypatch) -> None:
    """A 512 x 512 tile (262,144 devices; a dense Sigma would be 275 GB) samples directly:
    no dense covariance, no factorisation of anything larger than one 512 x 512 kernel."""
    import xbar.devices.correlated as correlated

    def small_only(fn):
        def wrapped(a, *args, **kw):
            assert a.shape[-1] <= 512, f"{fn.__name__} of a {tuple(a.shape)} matrix"
            return fn(a, *args, **kw)
        return wrapped

    for name in ("eigh", "cholesky", "eigvalsh"):
        monkeypatch.setattr(torch.linalg, name, small_only(getattr(torch.linalg, name)))
    monkeypatch.setattr(torch, "kron", lambda *a: pytest.fail("kron formed a dense covariance"))
    correlated._kernel_factors.cache_clear()  # factor the kernels under the guards
    k = KroneckerCovariance(sigma=0.2, length_rows=8.0, length_cols=8.0)
    f = k.sample(512, 512, 2, 512, 512, torch.Generator().manual_seed(0))
    assert f.shape == (2, 512, 512)
    # sd of s for N correlated samples: Var(s^2) = 2 sigma^4 sum(rho^2) / N, sum(rho^2) =
    # (sum_k exp(-2|k| / 8))^2 = coth(1/8)^2 over both axes; s ~ sigma (1 + (s^2/sigma^2 - 1) / 2)
    n = f.numel()
    se = 0.2 * math.sqrt(2 * (1 / math.tanh(1 / 8)) ** 2 / n) / 2
    assert abs(f.std().item() - 0.2) < stats.norm.ppf(1 - ALPHA / 2) * se
    vals, vr, vc = k.eigenpairs(10, 512, 512)
    assert vals.shape == (10,) and vr.shape == (512, 10)
    # the top eigenvalue is the product of the two kernels' largest, times sigma^2
    top = torch.linalg.eigvalsh(exponential_kernel(512, 8.0))[-1]
    assert vals[0].item() == pytest.approx(0.04 * top.item() ** 2, rel=1e-9)


def test_correlated_weight_noise_uses_crossbar_layout() -> None:
    """Weight noise covariance = s^2 sum 4^(iB) planes * K over (input, output) neighbours."""
    cfg = MappingConfig(weight_bits=4, bits_per_device=2, sign="differential", tile_rows=8, tile_cols=8)
    k = KroneckerCovariance(sigma=0.1, length_rows=2.0, length_cols=0.0)
    model = DeviceModel(cfg, None, k)
    w = torch.full((4, 8), 15.0)  # 4 outputs, 8 inputs; s = 1
    x = model.program(w, 20000, torch.Generator().manual_seed(0)) - w
    var = 0.01 * 2 * 17
    # neighbouring inputs of one output are correlated exp(-1/2); different outputs are not
    c = torch.corrcoef(x.reshape(20000, -1).T.double())
    assert abs(c[0, 1].item() - math.exp(-0.5)) < 5 / math.sqrt(20000)
    assert abs(c[0, 8].item()) < 5 / math.sqrt(20000)
    assert chi2_variance_ok(x.reshape(20000, -1), torch.full((32,), var, dtype=torch.float64))


def test_pcm_programming_matches_aihwkit() -> None:
    from aihwkit.inference import PCMLikeNoiseModel

    target = torch.linspace(0.5, 25.0, 50).repeat(400)
    torch.manual_seed(0)
    ref = PCMLikeNoiseModel(g_max=25.0).apply_programming_noise_to_conductance(target)
    model = load("pcm").device_model()
    cfg = model.mapping
    sig = model.programming.sigma(target, cfg)
    ours = (target + sig * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))).clamp(min=0)
    for lo in range(0, 50, 10):
        sel = (torch.arange(target.numel()) % 50 >= lo) & (torch.arange(target.numel()) % 50 < lo + 10)
        assert stats.ks_2samp((ours - target)[sel].numpy(), (ref - target)[sel].numpy()).pvalue > ALPHA


def test_pcm_drift_coefficients_match_aihwkit() -> None:
    from aihwkit.inference import PCMLikeNoiseModel

    g = torch.full((50000,), 5.0)
    torch.manual_seed(0)
    ref = PCMLikeNoiseModel(g_max=25.0).generate_drift_coefficients(g)
    model = load("pcm").device_model()
    ours = model.drift.sample_nu(g, model.mapping, torch.randn(g.shape, generator=torch.Generator().manual_seed(2)))
    assert stats.ks_2samp(ours.numpy(), ref.numpy()).pvalue > ALPHA


def test_drift_at_t0_is_programmed_state_and_decays_later() -> None:
    model = load("pcm").device_model()
    w = torch.randn(30, 40)
    gen = torch.Generator().manual_seed(0)
    state = model.program_devices(w, 3, gen)
    no_read = DeviceModel(model.mapping, model.programming, None, drift=model.drift)
    assert torch.equal(no_read.read(state, 0.0), state.weights())
    later = no_read.read(state, 86400.0, compensate=False)
    assert later.abs().sum() < state.weights().abs().sum()
    comp = no_read.read(state, 86400.0, compensate=True)
    assert torch.allclose(comp.flatten(1).abs().sum(1), state.weights().flatten(1).abs().sum(1), rtol=1e-4)


def test_per_level_drift_power_law() -> None:
    cfg = MappingConfig(weight_bits=2, bits_per_device=2)
    drift = DriftModel(t0_s=10.0, nu_mean_levels=(0.0, 0.1, 0.1, 0.1), nu_std_levels=(0.0, 0.0, 0.0, 0.0))
    model = DeviceModel(cfg, drift=drift)
    w = torch.tensor([3.0])
    st = model.program_devices(w, 1)
    out = model.read(st, 90.0, compensate=False)
    assert out.item() == pytest.approx(3.0 * (100.0 / 10.0) ** -0.1, rel=1e-6)


def test_gaussian_read_noise_per_level() -> None:
    cfg = MappingConfig(weight_bits=2, bits_per_device=2)
    model = DeviceModel(cfg, read_noise=ReadNoise(sigma_levels=(0.0, 0.05, 0.1, 0.2)))
    w = torch.arange(4.0)
    st = model.program_devices(w, 1)
    reads = torch.cat([model.read(st, 1.0, torch.Generator().manual_seed(i)) for i in range(3000)])
    assert chi2_variance_ok(reads[:, 1:] - w[1:], torch.tensor([0.05, 0.1, 0.2]) ** 2)
    assert torch.equal(reads[:, 0], torch.zeros(3000))


@pytest.mark.parametrize("preset", ["rram-uniform", "fefet1", "reram-correlated-a", "pcm", "hfox-bitflip"])
def test_instances_do_not_depend_on_batching(preset: str) -> None:
    model = load(preset).device_model()
    w = torch.randn(12, 9, generator=torch.Generator().manual_seed(0))
    seeds = list(range(100, 110))
    whole = model.program(w, seeds=seeds)
    parts = torch.cat([model.program(w, seeds=seeds[:3]), model.program(w, seeds=seeds[3:])])
    assert torch.equal(whole, parts)


@pytest.mark.parametrize("seeds", [None, list(range(8))])
def test_programming_quantizes_the_weights_once(monkeypatch, seeds) -> None:
    """One quantization serves every instance of a draw, with or without per-instance seeds."""
    import xbar.devices.model as device_model

    calls = []
    real = device_model.quantize
    monkeypatch.setattr(device_model, "quantize", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = load("fefet1").device_model()
    model.program(torch.randn(16, 24), 8, seeds=seeds)
    assert len(calls) == 1


@pytest.mark.parametrize("preset", ["fefet1", "wvat-5", "reram-correlated-a"])
def test_monte_carlo_and_dat_share_one_draw(preset: str) -> None:
    """Programming is the stored weights plus DAT's noise profile sample: one draw, same generator use."""
    from xbar.training.dat import NoiseProfile

    model = load(preset).device_model()
    w = torch.randn(16, 24, generator=torch.Generator().manual_seed(1)) * 0.3
    programmed = model.program(w, 1, torch.Generator().manual_seed(3))[0]
    rank = model.correlation.rank or None if model.correlation is not None else None
    eta = NoiseProfile(model, rank=rank).sample(w, torch.Generator().manual_seed(3))
    assert eta.abs().max() > 0
    torch.testing.assert_close(programmed - model.target(w), eta, rtol=0, atol=1e-6)


def test_same_seed_same_result() -> None:
    model = load("fefet2").device_model()
    w = torch.randn(20, 20)
    a = model.program(w, 4, torch.Generator().manual_seed(5))
    b = model.program(w, 4, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_noise_free_preset_programs_exact_quantized_weights() -> None:
    model = load("rram-uniform", sigma_d=0.0).device_model()
    w = torch.randn(7, 7)
    x = model.program(w, 3)
    assert torch.equal(x, model.target(w).expand(3, 7, 7))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_are_kept(dtype: torch.dtype) -> None:
    for name in ["fefet1", "reram-correlated-b", "pcm"]:
        x = load(name).device_model().program(torch.randn(5, 6, dtype=dtype), 2)
        assert x.dtype == dtype


@requires_cuda
def test_cuda_instances_flip_the_bits_of_the_cpu_instances() -> None:
    """Per-instance flip streams are drawn on the CPU whatever the device: the CUDA instances of a
    flips-only preset are the CPU's bit for bit."""
    model = load("hfox-bitflip", **{"bitflip.p_0to1": 1e-3, "bitflip.p_1to0": 1e-3}).device_model()
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(3))
    seeds = [11, 12, 13]
    ref = model.program(w, seeds=seeds)
    assert int((ref != w).sum()) > 0
    torch.testing.assert_close(model.program(w.cuda(), seeds=seeds).cpu(), ref, rtol=0, atol=0, equal_nan=True)


@requires_cuda
@pytest.mark.parametrize("preset", ["fefet1", "reram-correlated-a", "pcm"])
def test_sampling_on_cuda(preset: str) -> None:
    """CUDA instances have the CPU's distribution: the closed-form std agrees and, instances
    being independent, two weights' errors pass a two-sample KS test (Bonferroni over 2)."""
    model = load(preset).device_model()
    w = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    n = 4000
    x = model.program(w.cuda(), n, torch.Generator(device="cuda").manual_seed(0))
    assert x.device.type == "cuda" and x.shape == (n, 8, 4)
    torch.testing.assert_close(model.weight_std(w.cuda()).cpu(), model.weight_std(w), rtol=1e-5, atol=1e-7)
    ref = model.program(w, n, torch.Generator().manual_seed(1))
    err_cuda, err_cpu = x.cpu() - model.target(w), ref - model.target(w)
    for i, j in ((0, 0), (3, 2)):
        assert stats.ks_2samp(err_cuda[:, i, j].numpy(), err_cpu[:, i, j].numpy()).pvalue > ALPHA / 2


def test_rank_k_kronecker_sampling_has_the_top_k_covariance() -> None:
    # distinct lengths: no degenerate eigenvalues, so the rank-4 truncation is unique
    k = KroneckerCovariance(sigma=0.5, length_rows=3.0, length_cols=1.3, rank=4)
    f = k.sample(5, 5, 30000, 5, 5, torch.Generator().manual_seed(4), dtype=torch.float64)
    full = KroneckerCovariance(sigma=0.5, length_rows=3.0, length_cols=1.3)
    vals, vecs = torch.linalg.eigh(full.to_dense(5, 5))
    top = (vecs[:, -4:] * vals[-4:]) @ vecs[:, -4:].T
    z = _cov_zscores(f.reshape(30000, -1), top)
    assert z.abs().max() < stats.norm.ppf(1 - ALPHA / (2 * z.numel()))


# ------------------------------------------- closed form vs per device vs injection
def _signed_codes() -> torch.Tensor:
    """Every signed 4-bit code -15..15 (s = 1: codes are the weights), both signs of zero's neighbours."""
    return torch.arange(-15, 16, dtype=torch.float64)


def _moments_agree(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> bool:
    """Sample means within z-bounds of ``mean`` and variances within chi-square bounds of ``var``.

    Bonferroni over the weights of both checks at the module's false-alarm rate.
    """
    n = x.shape[0]
    z = (x.double().mean(0) - mean) / (var / n).sqrt()
    return bool(z.abs().max() < stats.norm.ppf(1 - ALPHA / (4 * mean.numel()))) and chi2_variance_ok(x, var)


@pytest.mark.parametrize("sign", ["magnitude", "differential"])
def test_correlated_mean_recombines_like_a_level_offset(sign: str) -> None:
    """Field N(mu, sigma_c^2 K) on every device (DAT III-A) through Eq. 14.

    Mean: s mu sum_p sign_p sum_i 2^(iB) (5 mu for magnitude, 0 for a differential
    pair), times the digital sign; variance: s^2 sum_p sum_i 4^(iB) (sigma_d^2 + sigma_c^2).
    The closed form (``program``) and the per-device path must both match it.
    """
    cfg = MappingConfig(weight_bits=4, bits_per_device=2, sign=sign, tile_rows=8, tile_cols=8)
    mu, sig_c, sig_d = 0.1, 0.1, 0.05
    model = DeviceModel(cfg, ProgrammingNoise(sigma_d=sig_d), KroneckerCovariance(sigma=sig_c, length_rows=2.0, mean=mu))
    w = _signed_codes()
    planes = 2 if sign == "differential" else 1
    mean = w.sign().where(w != 0, torch.ones_like(w)) * mu * (5.0 if planes == 1 else 0.0)
    var = torch.full_like(w, 17 * planes * (sig_d**2 + sig_c**2))
    n = 4000
    closed = model.program(w, n, torch.Generator().manual_seed(11)) - w
    devices = model.program_devices(w, n, torch.Generator().manual_seed(12)).weights() - w
    assert _moments_agree(closed, mean, var)
    assert _moments_agree(devices, mean, var)


def test_correlated_mean_reproducer_from_review() -> None:
    """reram-correlated-a with correlation.mean = 0.1: differential, so the mean cancels in both paths."""
    from xbar import presets, sample_weights

    p = presets.load("reram-correlated-a", **{"correlation.mean": 0.1})
    w = torch.ones(16, 16)
    dm = p.device_model()
    n = 500
    # Var(mean of one instance's 256 weights) = (256 indep^2 + corr^2 1'(K_r (x) K_c)1) / 256^2, with
    # corr = 2 indep (sigma 0.1 against sigma_d 0.05, the same Eq. 14 gain) and 1'(K_r (x) K_c)1 the
    # product of the two 16 x 16 kernels' sums (one tile holds the whole layer)
    indep = dm.weight_std(w)[0, 0].item()
    c = p.correlation
    kernel_sum = float(exponential_kernel(16, c.length_rows).sum() * exponential_kernel(16, c.length_cols).sum())
    var_mean = (256 * indep**2 + (2 * indep) ** 2 * kernel_sum) / 256**2 / n
    bound = stats.norm.ppf(1 - ALPHA / 4) * math.sqrt(var_mean)  # two checks
    assert abs((sample_weights(w, p, n, generator=torch.Generator().manual_seed(0)) - dm.target(w)).mean()) < bound
    assert abs((dm.program_devices(w, n, torch.Generator().manual_seed(1)).weights() - dm.target(w)).mean()) < bound


def _offset_model(sign: str) -> DeviceModel:
    """Per-level sigma and mean offsets plus a correlated field with a mean: every part of programming."""
    cfg = MappingConfig(weight_bits=4, bits_per_device=2, sign=sign, tile_rows=8, tile_cols=8)
    prog = ProgrammingNoise(sigma_d=0.05, level_multipliers=(1.0, 3.0, 2.0, 1.0), mean_levels=(0.0, 0.05, -0.04, 0.02))
    return DeviceModel(cfg, prog, KroneckerCovariance(sigma=0.05, length_cols=1.5, mean=0.03))


@pytest.mark.parametrize("sign", ["magnitude", "differential"])
def test_gaussian_injection_has_the_programming_distribution(sign: str) -> None:
    """target + inject_noise at sigma_scale 1 (Gaussian) has program()'s mean and variance per weight.

    The reference is the per-device programming (``program_devices``): each weight's mean
    is its Eq. 14 offset, its variance the Eq. 14 variance plus the field's.
    """
    model = _offset_model(sign)
    w = _signed_codes().reshape(1, -1).expand(2, -1).contiguous()  # two outputs
    n = 3000
    ref = model.program_devices(w, 6000, torch.Generator().manual_seed(3)).weights()
    mean = ref.double().mean(0)
    var = ref.double().var(0)
    gen = torch.Generator().manual_seed(4)
    inj = torch.stack([model.target(w) + model.inject_noise(w, NoiseFamily(), 1.0, gen) for _ in range(n)])
    prog = model.program(w, n, torch.Generator().manual_seed(5))
    # two-sample comparisons against the reference: Var(mean difference) = var (1/n + 1/6000)
    for x in (inj, prog):
        z = (x.double().mean(0) - mean) / (var * (1 / n + 1 / 6000)).sqrt()
        assert z.abs().max() < stats.norm.ppf(1 - ALPHA / (4 * w.numel()))
        # variance ratio of two samples ~ F(n - 1, 6000 - 1)
        f = x.double().var(0) / var
        lo, hi = stats.f.ppf(ALPHA / (4 * w.numel()), n - 1, 5999), stats.f.ppf(1 - ALPHA / (4 * w.numel()), n - 1, 5999)
        assert bool(((f > lo) & (f < hi)).all())
    # the offsets are there: some weights' means differ from the target by many standard errors
    z0 = (mean - model.target(w).double()) / (var / 6000).sqrt()
    assert z0.abs().max() > 10


def test_sigma_scale_scales_only_the_fluctuation() -> None:
    """sigma_scale = 0.5: same mean (offsets, field mean), a quarter of the variance."""
    model = _offset_model("magnitude")
    w = _signed_codes()
    n = 4000
    gen = torch.Generator().manual_seed(6)
    full = torch.stack([model.inject_noise(w, NoiseFamily(), 1.0, gen) for _ in range(n)]).double()
    half = torch.stack([model.inject_noise(w, NoiseFamily(), 0.5, gen) for _ in range(n)]).double()
    var = full.var(0)
    z = (half.mean(0) - full.mean(0)) / (var * 1.25 / n).sqrt()
    assert z.abs().max() < stats.norm.ppf(1 - ALPHA / (2 * w.numel()))
    f = 4 * half.var(0) / var
    lo, hi = stats.f.ppf(ALPHA / (4 * w.numel()), n - 1, n - 1), stats.f.ppf(1 - ALPHA / (4 * w.numel()), n - 1, n - 1)
    assert bool(((f > lo) & (f < hi)).all())
    # no fluctuation at all at sigma_scale = 0: the offsets remain, exactly the closed-form shift
    zero = model.inject_noise(w, NoiseFamily(), 0.0, gen)
    assert torch.allclose(zero, model.weight_mean_shift(w) + 0.03 * 5 * torch.where(w < 0, -1.0, 1.0).double())


@pytest.mark.parametrize("preset", ["rram-uniform", "fefet1", "reram-correlated-a", "pcm"])
@pytest.mark.parametrize("kind", ["gaussian", "right-censored"])
def test_training_weight_is_target_plus_injected_noise_with_straight_through_gradient(preset: str, kind: str) -> None:
    """training_weight draws what target + inject_noise draws (same generator state) and its gradient is 1."""
    model = load(preset).device_model()
    w = torch.randn(24, 40, generator=torch.Generator().manual_seed(0), requires_grad=True)
    fam = NoiseFamily(kind, 2.0)
    tw = model.training_weight(w, fam, 0.7, torch.Generator().manual_seed(9))
    ref = model.target(w.detach()) + model.inject_noise(w, fam, 0.7, torch.Generator().manual_seed(9))
    torch.testing.assert_close(tw.detach(), ref)
    g = torch.randn(24, 40)
    (tw * g).sum().backward()
    assert torch.equal(w.grad, g)


def test_seeds_must_match_the_instance_count() -> None:
    from xbar import presets, sample_weights

    w = torch.randn(4, 5)
    p = presets.load("fefet1")
    with pytest.raises(ValueError, match="seeds has 10 entries: expected n = 3"):
        sample_weights(w, p, n=3, seeds=range(10))
    assert sample_weights(w, p, n=3, seeds=range(3)).shape == (3, 4, 5)
    assert torch.equal(p.device_model().program(w, seeds=[7, 8]), sample_weights(w, p, 2, seeds=[7, 8]))
    with pytest.raises(ValueError, match="expected n = 1"):
        p.device_model().program_devices(w, 1, seeds=[1, 2])


def test_bit_pattern_presets_count_one_cell_per_stored_bit() -> None:
    from xbar.devices import BitFlipModel

    assert load("hfox-bitflip").device_model().devices_per_weight == 32
    assert load("hfox-bitflip", storage="int8").devices_per_weight == 8
    assert load("fefet1").devices_per_weight == 2 and load("reram-correlated-a").devices_per_weight == 4
    cfg = MappingConfig(weight_bits=0)
    flips = BitFlipModel(p_0to1=1e-3, p_1to0=1e-3, storage="float16")
    assert DeviceModel(cfg, bitflip=flips, bitflip_targets=("activations",)).devices_per_weight == 2
    assert DeviceModel(cfg, bitflip=flips).devices_per_weight == 16


@pytest.mark.parametrize("rank", [0, 3])
def test_kronecker_transposed_and_scaled_samples_are_the_same_fields(rank: int) -> None:
    """``transposed`` lays the same draw out as [cols, rows]; ``scale`` multiplies the fluctuation, not the mean."""
    k = KroneckerCovariance(sigma=0.3, length_rows=2.0, length_cols=1.0, mean=0.2, rank=rank)
    args = (10, 7, 3, 4, 4)  # partial tiles on both axes
    plain = k.sample(*args, torch.Generator().manual_seed(5), dtype=torch.float64)
    moved = k.sample(*args, torch.Generator().manual_seed(5), dtype=torch.float64, transposed=True, scale=2.0)
    assert moved.shape == (3, 7, 10)
    torch.testing.assert_close(moved, 2.0 * (plain.transpose(1, 2) - 0.2) + 0.2)
    centered = k.sample(*args, torch.Generator().manual_seed(5), dtype=torch.float64, centered=True)
    torch.testing.assert_close(centered, plain - 0.2)
