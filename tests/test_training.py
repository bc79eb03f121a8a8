"""xbar.training: every update against a hand-written reference step on a tiny model."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xbar import presets
from xbar.devices import NoiseFamily
from xbar.mapping import quantize, quantize_activation, quantize_activations
from xbar.training import (
    DAT,
    SAM,
    SWA,
    TRICE,
    WVAT,
    NoiseInjection,
    NoiseProfile,
    forward_weights,
    hsv_sigma,
    layer_range,
    noisy_parameters,
    other_parameters,
    projection,
    quartiles,
    sam_perturbation,
    search_update,
)
from xbar.training.trice import LEFT, MID, RIGHT


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(7)
    return torch.randn(16, 12, generator=g), torch.randint(0, 3, (16,), generator=g)


@pytest.fixture
def fefet2():
    return presets.load("fefet2", sigma_d=0.2)


def closure_of(model, x, y):
    def closure():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    return closure


def grads_at(model, weights: dict[str, torch.Tensor], x, y) -> dict[str, torch.Tensor]:
    """Reference gradient of the loss at explicit parameter values (torch.func)."""
    params = {n: w.detach().clone().requires_grad_(True) for n, w in weights.items()}
    loss = F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
    g = torch.autograd.grad(loss, list(params.values()))
    return dict(zip(params, g))


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def gen_copy(g: torch.Generator) -> torch.Generator:
    c = torch.Generator()
    c.set_state(g.get_state())
    return c


# ------------------------------------------------------------------ forward swap
def test_forward_weights_quantizes_perturbs_and_restores_exactly(fefet2, batch):
    m = tiny()
    targets = noisy_parameters(m, fefet2)
    before = snapshot(m)
    deltas = [torch.full_like(t.param, 0.01) for t in targets]
    with forward_weights(targets, deltas):
        for t, d in zip(targets, deltas):
            assert torch.equal(t.param.detach(), fefet2.device_model().target(before[t.name]) + d)
    after = snapshot(m)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_noisy_parameters_selects_layers(fefet2):
    m = tiny()
    assert [t.name for t in noisy_parameters(m, fefet2)] == ["1.weight", "3.weight"]
    assert [t.name for t in noisy_parameters(m, fefet2, "last")] == ["3.weight"]
    assert [t.name for t in noisy_parameters(m, fefet2, ["1"])] == ["1.weight"]
    from xbar.errors import InputError

    with pytest.raises(InputError):
        noisy_parameters(m, fefet2, ["nope"])


# ------------------------------------------------------------- noise injection
def test_noise_injection_step_matches_reference(fefet2, batch):
    x, y = batch
    m = tiny()
    targets = noisy_parameters(m, fefet2)
    g = torch.Generator().manual_seed(3)
    ref_gen = gen_copy(g)
    w0 = snapshot(m)
    lr = 0.1
    opt = NoiseInjection(torch.optim.SGD(m.parameters(), lr=lr), targets, NoiseFamily("right-censored", 2.0), 0.7, g)
    opt.step(closure_of(m, x, y))
    dm = fefet2.device_model()
    forward = dict(w0)
    for t in targets:  # Alg. 1 line 4-5: forward at target(w) + dW
        noise = dm.inject_noise(w0[t.name], NoiseFamily("right-censored", 2.0), 0.7, ref_gen)
        forward[t.name] = dm.target(w0[t.name]) + noise
    gr = grads_at(m, forward, x, y)
    for n, p in m.named_parameters():  # line 6: the clean weights take the step
        torch.testing.assert_close(p.detach(), w0[n] - lr * gr[n], rtol=0, atol=1e-6)


def test_right_censored_injection_never_above_threshold():
    """TRICE Eq. 10: every device's draw is min(g, th); in weight space the noise stays below
    th * sigma_t * sum_i 2^(iB) sigma(level_i) * scale on the weight's own sign side."""
    p = presets.load("rram-uniform", sigma_d=0.3)
    dm = p.device_model()
    torch.manual_seed(0)
    w = torch.randn(64, 64)
    th, scale = 0.5, 1.5
    fam = NoiseFamily("right-censored", th)
    gen = torch.Generator().manual_seed(1)
    cfg = dm.mapping
    s = w.abs().max() / cfg.max_code
    bound = th * scale * 0.3 * sum(cfg.slice_gains()) * s
    sign = torch.where(w < 0, -1.0, 1.0)
    worst = max(float((dm.inject_noise(w, fam, scale, gen) * sign).max()) for _ in range(20))
    assert worst <= float(bound) + 1e-6
    assert worst > 0.8 * float(bound)  # the censoring point is reached (mass th..inf)
    x = fam.sample((200000,), torch.Generator().manual_seed(2))
    assert float(x.max()) == th and math.isclose(float(x.mean()), fam.mean(), abs_tol=0.01)


def test_noise_injection_through_trice_step_respects_censoring(batch):
    """Deltas of a TRICE NoiseInjection step are right-censored at th * sigma_t."""
    x, y = batch
    p = presets.load("rram-uniform", sigma_d=0.2)
    m = tiny()
    targets = noisy_parameters(m, p)
    seen = []
    import xbar.training.injection as inj

    orig = inj.sample_injection

    def spy(*a, **k):
        out = orig(*a, **k)
        seen.append(out)
        return out

    inj.sample_injection = spy
    try:
        opt = NoiseInjection(torch.optim.SGD(m.parameters(), lr=0.0), targets, NoiseFamily("right-censored", 1.0), 1.3,
                             torch.Generator().manual_seed(0))
        for _ in range(5):
            opt.step(closure_of(m, x, y))
    finally:
        inj.sample_injection = orig
    cfg = p.device_model().mapping
    for deltas in seen:
        for t, d in zip(targets, deltas):
            s = t.param.detach().abs().max() / cfg.max_code
            bound = 1.0 * 1.3 * 0.2 * sum(cfg.slice_gains()) * s
            sign = torch.where(t.param.detach() < 0, -1.0, 1.0)
            assert float((d * sign).max()) <= float(bound) + 1e-6


# ----------------------------------------------------------------------- TRICE
@pytest.mark.parametrize(
    "perf, new, winner",
    [
        ([0.5, 0.9, 0.5], (0.5, 1.5), MID),  # line 22: start, end = left, right
        ([0.9, 0.5, 0.5], (0.0, 1.5), LEFT),  # line 24: end = right
        ([0.5, 0.5, 0.9], (0.5, 2.0), RIGHT),  # line 26: start = left
        ([0.9, 0.9, 0.9], (0.5, 1.5), MID),  # ties: mid is checked first
        ([0.9, 0.5, 0.9], (0.0, 1.5), LEFT),  # then left
    ],
)
def test_trice_search_bounds_follow_algorithm_3(perf, new, winner):
    assert quartiles(0.0, 2.0) == (0.5, 1.0, 1.5)
    start, end, win = search_update(0.0, 2.0, perf)
    assert (start, end) == new and win == winner


@pytest.mark.parametrize("ranking", [MID, LEFT, RIGHT])
def test_trice_trainer_reassigns_weights_and_merges(fefet2, batch, ranking):
    x, y = batch
    calls = []

    def kpp(model, epoch):
        i = next(k for k, m in enumerate(tr.models) if m is model)
        calls.append(i)
        return 1.0 if i == ranking else 0.5

    m = tiny()
    tr = TRICE(m, lambda mm: torch.optim.SGD(mm.parameters(), lr=0.1), lambda mm: noisy_parameters(mm, fefet2), kpp,
               start=0.0, end=2.0, th=2.0, warm=1, tol=0.3,
               generators=[torch.Generator().manual_seed(i) for i in range(3)])
    assert all(torch.equal(a, b) for a, b in zip(tr.models[0].parameters(), tr.models[1].parameters()))

    def step_all():
        tr.train_batch(lambda mm: closure_of(mm, x, y))

    tr.begin_epoch(0)
    assert [o.sigma_scale for o in tr.opts] == [0.5, 1.0, 1.5]
    step_all()
    info = tr.end_epoch(0)  # warm-up epoch: no ranking
    assert calls == [] and "trice_kpp" not in info and (tr.start, tr.end) == (0.0, 2.0)
    assert not torch.equal(tr.models[0][1].weight, tr.models[2][1].weight)
    tr.begin_epoch(1)
    step_all()
    winner_w = tr.models[ranking][1].weight.detach().clone()
    tr.end_epoch(1)
    assert calls == [0, 1, 2]
    expected = {MID: (0.5, 1.5), LEFT: (0.0, 1.5), RIGHT: (0.5, 2.0)}[ranking]
    assert (tr.start, tr.end) == expected
    for mm in tr.models:  # every model holds the winner's weights
        assert torch.equal(mm[1].weight, winner_w)
    # keep the same winner until |end - start| <= tol, then only w1 trains at sigma = start
    epoch = 2
    while not tr.merged:
        tr.begin_epoch(epoch)
        step_all()
        tr.end_epoch(epoch)
        epoch += 1
    assert abs(tr.end - tr.start) <= 0.3
    tr.begin_epoch(epoch)
    assert tr.active == [0] and tr.sigmas() == [tr.start] and tr.model is tr.models[0]
    n = len(calls)
    step_all()
    tr.end_epoch(epoch)
    assert len(calls) == n  # merged: no more ranking


# ------------------------------------------------------------------------- DAT
def test_dat_projection_is_g_dot_eta_over_norm2_times_eta():
    g = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    eta = [torch.tensor([0.5, -1.0]), torch.tensor([[2.0]])]
    coef = (1 * 0.5 + 2 * -1.0 + 3 * 2.0) / (0.25 + 1.0 + 4.0)
    eps = projection(g, eta)
    torch.testing.assert_close(eps[0], coef * eta[0])
    torch.testing.assert_close(eps[1], coef * eta[1])
    assert all(torch.equal(e, torch.zeros_like(e)) for e in projection(g, [torch.zeros(2), torch.zeros(1, 1)]))


@pytest.mark.parametrize("p", [1, 2])
def test_dat_step_matches_algorithm_1(batch, p):
    x, y = batch
    preset = presets.load("reram-correlated-a")
    m = tiny()
    targets = noisy_parameters(m, preset, "last")
    others = noisy_parameters(m, preset)[:1] + other_parameters(m, noisy_parameters(m, preset))
    g = torch.Generator().manual_seed(5)
    ref_gen = gen_copy(g)
    w0 = snapshot(m)
    alpha, beta = 3.0, 0.05
    opt = DAT(torch.optim.SGD(m.parameters(), lr=beta), targets, alpha=alpha, p=p, rank=4, others=others, generator=g)
    opt.step(closure_of(m, x, y))
    dm = preset.device_model()
    stored = dict(w0)
    for name in ("1.weight", "3.weight"):
        stored[name] = dm.target(w0[name])
    g_t = grads_at(m, stored, x, y)["3.weight"]  # line 6
    prof = NoiseProfile(dm, rank=4)
    acc = {n: torch.zeros_like(w) for n, w in w0.items()}
    for _ in range(p):
        eta = prof.sample(w0["3.weight"], ref_gen)  # line 8
        eps = (g_t * eta).sum() / (eta * eta).sum() * eta  # line 9
        pert = dict(stored)
        pert["3.weight"] = stored["3.weight"] + alpha * eps  # line 10
        for n, gr in grads_at(m, pert, x, y).items():  # line 11
            acc[n] += gr
    for n, par in m.named_parameters():  # lines 13-14
        torch.testing.assert_close(par.detach(), w0[n] - beta * acc[n] / p, rtol=0, atol=1e-6)


def test_dat_fast_is_rank_k_and_full_matches_covariance():
    """DAT-Fast samples lie in the span of the top-k eigenvectors (A_k = V_k D_k^1/2) of each
    tile; DAT-Full samples have the full Kronecker covariance (weight units)."""
    preset = presets.load("reram-correlated-a", sigma_d=0.0, tile_rows=8, tile_cols=4)
    dm = preset.device_model()
    w = torch.linspace(0.1, 1.0, 4 * 8).reshape(4, 8)  # one 8x4 tile, all positive, equal scale
    gen = torch.Generator().manual_seed(0)
    fast = NoiseProfile(dm, rank=3)
    full = NoiseProfile(dm, rank=None)
    n = 20000
    gain = dm.fluctuation_gain * float(quantize(w, dm.mapping)[1])
    fs = torch.stack([fast.sample(w, gen).t().reshape(-1) for _ in range(n)]) / gain  # crossbar layout
    us = torch.stack([full.sample(w, gen).t().reshape(-1) for _ in range(n)]) / gain
    cov_full = preset.correlation.to_dense(8, 4).float()
    vals, vecs = torch.linalg.eigh(cov_full.double())
    top = vecs[:, -3:].float()
    resid = fs - (fs @ top) @ top.T
    assert float(resid.abs().max()) < 1e-4
    low = (top * vals[-3:].float()) @ top.T
    torch.testing.assert_close(fs.T @ fs / n, low, atol=0.05 * float(cov_full.max()), rtol=0)
    torch.testing.assert_close(us.T @ us / n, cov_full, atol=0.05 * float(cov_full.max()), rtol=0)


@pytest.mark.parametrize("sign", ["differential", "magnitude"])
@pytest.mark.parametrize("rank", [3, None])
def test_dat_noise_mean_recombines_like_a_level_offset(sign, rank):
    """eta's correlated mean is s sum_p sign_p sum_i 2^(iB) mu (zero on a differential pair),
    the same as the device model's programming; its std stays the fluctuation's."""
    preset = presets.load("reram-correlated-a", sigma_d=0.0, tile_rows=8, tile_cols=4, sign=sign,
                          **{"correlation.mean": 0.1})
    dm = preset.device_model()
    w = torch.linspace(-1.0, 1.0, 4 * 8).reshape(4, 8)
    gen = torch.Generator().manual_seed(3)
    prof = NoiseProfile(dm, rank=rank, independent=False)
    n = 4000
    draws = torch.stack([prof.sample(w, gen) for _ in range(n)]).double()
    s = float(quantize(w, dm.mapping)[1])
    want = 0.1 * dm.offset_gain * s * (torch.sign(w) if sign == "magnitude" else torch.ones_like(w))
    assert (sign == "differential") == (dm.offset_gain == 0.0)
    se = draws.std(0) / n**0.5
    z = (draws.mean(0) - want.double()) / se
    assert float(z.abs().max()) < 4.5  # 32 elements, two-sided: P(max |z| > 4.5) < 2e-4
    programmed = dm.program(w, n, generator=gen).double() - dm.target(w).double()
    z_prog = (programmed.mean(0) - want.double()) / (programmed.std(0) / n**0.5)
    assert float(z_prog.abs().max()) < 4.5


# ------------------------------------------------------------------------ WVAT
def _wvat_reference_choice(gen: torch.Generator) -> tuple[float, float]:
    c = gen_copy(gen)
    return float(torch.rand((), generator=c)), float(torch.rand((), generator=c))


@pytest.mark.parametrize("w_th", [0.0, 0.3, 0.7, 1.0])
def test_wvat_picks_hsv_or_gav_by_threshold(fefet2, batch, w_th):
    x, y = batch
    m = tiny()
    g = torch.Generator().manual_seed(11)
    opt = WVAT(torch.optim.SGD(m.parameters(), lr=0.0), noisy_parameters(m, fefet2), w_th=w_th, generator=g)
    for _ in range(10):
        _, u = _wvat_reference_choice(g)
        opt.step(closure_of(m, x, y))
        assert opt.last_kind == ("hsv" if u < w_th else "gav")


def test_wvat_hsv_scale_gav_direction_and_exact_reverse(fefet2, batch):
    x, y = batch
    m = tiny()
    targets = noisy_parameters(m, fefet2)
    lr = 0.1
    g = torch.Generator().manual_seed(2)
    opt = WVAT(torch.optim.SGD(m.parameters(), lr=lr), targets, sigma_v=0.1, gamma=1.5, w_th=0.5, alpha=0.1, generator=g)
    dm = fefet2.device_model()
    kinds = set()
    for _ in range(12):
        w0 = snapshot(m)
        opt.step(closure_of(m, x, y))
        kinds.add(opt.last_kind)
        wv = dict(zip([t.name for t in targets], opt.last_variation))
        stored = dict(w0)
        for t in targets:
            stored[t.name] = dm.target(w0[t.name])
        if opt.last_kind == "gav":  # v = alpha * g/|g| * ||HSV||
            gc = grads_at(m, stored, x, y)
            gt = [gc[t.name] for t in targets]
            norm = math.sqrt(sum(float((v**2).sum()) for v in gt))
            hsv_norm = math.sqrt(sum(t.param.numel() * hsv_sigma(w0[t.name], 0.1, 1.5) ** 2 for t in targets))
            for t, v in zip(targets, gt):
                torch.testing.assert_close(wv[t.name], 0.1 * hsv_norm / norm * v, rtol=1e-4, atol=1e-7)
        else:  # HSV std = gamma * sigma_v * A, A = 6 std of the layer
            for t in targets:
                assert math.isclose(hsv_sigma(w0[t.name], 0.1, 1.5), 1.5 * 0.1 * 6 * float(w0[t.name].std(unbiased=False)), rel_tol=1e-6)
        pert = dict(stored)
        for t in targets:
            pert[t.name] = stored[t.name] + wv[t.name]
        gr = grads_at(m, pert, x, y)
        for n, p in m.named_parameters():  # w <- w - eta grad L(w + w_v), then the reverse: exact
            assert torch.equal(p.detach(), w0[n] - lr * gr[n]) or torch.allclose(p.detach(), w0[n] - lr * gr[n], atol=1e-7)
    assert kinds == {"hsv", "gav"}
    assert layer_range(torch.tensor([0.0, 2.0])) == 6.0


def test_wvat_reverse_restores_bitwise(fefet2, batch):
    """With lr = 0 the weights after a WVAT step are bitwise the weights before."""
    x, y = batch
    m = tiny()
    w0 = snapshot(m)
    opt = WVAT(torch.optim.SGD(m.parameters(), lr=0.0), noisy_parameters(m, fefet2), generator=torch.Generator().manual_seed(0))
    for _ in range(6):
        opt.step(closure_of(m, x, y))
    assert all(torch.equal(w0[n], p) for n, p in m.named_parameters())


# ------------------------------------------------------------------------- SAM
def test_sam_step_matches_manual_two_pass(fefet2, batch):
    x, y = batch
    m = tiny()
    targets = noisy_parameters(m, fefet2)
    params = targets + other_parameters(m, targets)
    w0 = snapshot(m)
    lr, rho = 0.1, 0.05
    SAM(torch.optim.SGD(m.parameters(), lr=lr), params, rho).step(closure_of(m, x, y))
    dm = fefet2.device_model()
    stored = {n: (dm.target(w) if n.endswith("weight") else w) for n, w in w0.items()}
    g1 = grads_at(m, stored, x, y)  # first pass
    norm = math.sqrt(sum(float((g**2).sum()) for g in g1.values()))
    pert = {n: stored[n] + rho * g1[n] / norm for n in stored}  # e(w) = rho g / ||g||
    g2 = grads_at(m, pert, x, y)  # second pass
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.detach(), w0[n] - lr * g2[n], rtol=0, atol=1e-6)
    e = sam_perturbation([torch.tensor([3.0, 4.0])], 0.5)
    torch.testing.assert_close(e[0], torch.tensor([0.3, 0.4]))


# ------------------------------------------------------------------------- SWA
def test_swa_is_the_mean_of_epoch_end_weights():
    m = tiny()
    swa = SWA(m, start=1)
    seen = []
    for epoch in range(4):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * (epoch + 1))
        if swa.active(epoch):
            swa.update(m)
            seen.append(copy.deepcopy(m.state_dict()))
    avg = swa.averaged.module
    for k, v in avg.state_dict().items():
        torch.testing.assert_close(v, torch.stack([s[k] for s in seen]).mean(0))
    assert swa.n_averaged == 3


# ------------------------------------------------------------------- activation quantization
def test_activation_quantization_levels_and_straight_through():
    x = torch.rand(3, 5, 4) * torch.tensor([1.0, 2.0, 3.0]).reshape(3, 1, 1)
    x.requires_grad_(True)
    q = quantize_activation(x, 4)
    for i in range(3):
        s = float(x[i].detach().max()) / 15
        codes = q[i].detach() / s
        torch.testing.assert_close(codes, codes.round(), atol=1e-4, rtol=0)
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    # the value is exactly s round(a / s), s = max(a) / 15 per sample, with or without autograd
    a = x.detach()
    s = a.amax(dim=(1, 2), keepdim=True) / 15
    ref = torch.round(a / s) * s
    assert torch.equal(q.detach(), ref)
    with torch.no_grad():
        assert torch.equal(quantize_activation(x, 4), ref)
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    handles = quantize_activations(m, 2)
    out = m(torch.randn(5, 4))
    assert all(len(torch.unique(r)) <= 4 for r in out)
    for h in handles:
        h.remove()


class _Augmenting(torch.utils.data.Dataset):
    """An in-memory set with random augmentation from the global generator (a flip and jitter)."""

    def __init__(self, n: int = 20) -> None:
        self.x = torch.arange(n * 4, dtype=torch.float32).reshape(n, 1, 2, 2)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x = self.x[i]
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x + 0.01 * torch.randn_like(x), i % 3


def test_batches_of_an_augmenting_set_are_a_function_of_seed_and_position():
    from xbar.training.trainer import Batches, epoch_order

    b = Batches(_Augmenting())
    order = epoch_order(len(b), 0, 1)
    torch.manual_seed(1)
    fresh = torch.get_rng_state()
    whole = list(b.batches(order, 6, seed=7))
    assert torch.equal(torch.get_rng_state(), fresh)  # reading data draws nothing from the global generator
    torch.manual_seed(2)  # another global state: the same batches from position 2 on
    tail = list(b.batches(order, 6, start=2, seed=7))
    assert len(whole) == 4 and len(tail) == 2
    assert all(torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]) for a, c in zip(whole[2:], tail))
    other = list(b.batches(order, 6, seed=8))
    assert not torch.equal(other[0][0], whole[0][0])


def test_all_finite_finds_any_nan_or_inf():
    from xbar.training.trainer import all_finite

    ok = [torch.ones(3), torch.zeros(2, 2, dtype=torch.float64)]
    assert all_finite(ok) and all_finite([])
    for bad in (float("nan"), float("inf"), -float("inf")):
        assert not all_finite([*ok, torch.tensor([1.0, bad])])
