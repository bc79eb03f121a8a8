"""The wrapped training optimizers are ``torch.optim.Optimizer``s: torch's LR schedulers drive them.

Every algorithm (SAM, DAT, WVAT, noise injection and TRICE's right-censored injection) is
checked on the update it applies, not only on the ``lr`` attribute: a scheduled step equals,
bit for bit, the step of a twin whose rate was set by hand, and halving the rate halves the
update (plain SGD: ``w <- w - lr g``, with ``g`` the same for both).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, StepLR
from torch.optim.swa_utils import SWALR

from xbar import presets
from xbar.devices import NoiseFamily
from xbar.training import (
    DAT,
    SAM,
    WVAT,
    EpochScheduler,
    NoiseInjection,
    Schedule,
    WrappedOptimizer,
    make_optimizer,
    noisy_parameters,
    other_parameters,
)

LR = 0.1
ALGOS = ["sam", "dat", "wvat", "injection", "trice"]
#: Each turns the rate LR into LR / 2 by the second step.
SCHEDULERS: dict[str, Callable[[torch.optim.Optimizer], object]] = {
    "cosine": lambda o: CosineAnnealingLR(o, T_max=2),  # epoch 1 of 2: (1 + cos(pi / 2)) / 2 = 1/2
    "step": lambda o: StepLR(o, step_size=1, gamma=0.5),
    "swalr": lambda o: SWALR(o, swa_lr=LR / 2, anneal_epochs=0),
}
PRESET = presets.load("fefet2", sigma_d=0.2)


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def wrap(algo: str, model: nn.Module, inner: torch.optim.Optimizer, seed: int = 3) -> WrappedOptimizer:
    """``algo``'s step around ``inner`` on every device-stored weight of ``model``."""
    targets = noisy_parameters(model, PRESET)
    others = other_parameters(model, targets)
    g = torch.Generator().manual_seed(seed)
    if algo == "sam":
        return SAM(inner, targets + others, rho=0.05)
    if algo == "dat":
        return DAT(inner, targets, alpha=1.0, rank=2, others=others, generator=g)
    if algo == "wvat":
        return WVAT(inner, targets, sigma_v=0.05, others=others, generator=g)
    if algo == "injection":
        return NoiseInjection(inner, targets, None, 1.0, g)
    return NoiseInjection(inner, targets, NoiseFamily("right-censored", 2.0), 0.5, g)  # one of TRICE's models


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(16, 12, generator=g), torch.randint(0, 3, (16,), generator=g)


def closure_of(model: nn.Module) -> Callable[[], torch.Tensor]:
    x, y = batch()

    def closure() -> torch.Tensor:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    return closure


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def two_steps(make: Callable[[], tuple[nn.Module, WrappedOptimizer]], scheduler=None, lrs=None):
    """Two steps of a fresh model; the rate comes from ``scheduler`` (stepped after each step)
    or is set by hand to ``lrs[i]`` before step i. Returns the rates used and the weights
    after each step."""
    model, opt = make()
    sched = scheduler(opt) if scheduler is not None else None
    used, after = [], []
    for i in range(2):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[i]
        used.append(opt.optimizer.param_groups[0]["lr"])
        opt.step(closure_of(model))
        after.append(weights(model))
        if sched is not None:
            sched.step()
    return used, after


def assert_half_update(a: list[list[torch.Tensor]], d: list[list[torch.Tensor]]) -> None:
    """Step 2 of ``a`` moved each weight by half of what step 2 of ``d`` did (same start).

    Each fp32 weight is rounded once per step: the differences are exact to within one ulp of
    the weights on each side, |error| <= 1.5 ulp(max |w|) <= 1.5 * 2 eps max|w|."""
    for w1a, w1d in zip(a[0], d[0]):
        assert torch.equal(w1a, w1d)
    moved = 0.0
    for w1, w2a, w2d in zip(a[0], a[1], d[1]):
        tol = 3 * torch.finfo(torch.float32).eps * float(torch.cat([w1.flatten(), w2d.flatten()]).abs().max())
        torch.testing.assert_close(w2a - w1, 0.5 * (w2d - w1), rtol=0, atol=tol)
        moved = max(moved, float((w2d - w1).abs().max()))
    assert moved > 1e-4  # the comparison is not between two zero updates


@pytest.mark.parametrize("algo", ALGOS)
def test_a_wrapper_is_a_torch_optimizer_with_the_inner_groups(algo):
    model = tiny()
    inner = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    opt = wrap(algo, model, inner)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is inner.param_groups and opt.state is inner.state
    # the inner optimizer's load_state_dict replaces its groups (TRICE's reassignment calls it)
    opt.step(closure_of(model))
    inner.load_state_dict(inner.state_dict())
    assert opt.param_groups is inner.param_groups and opt.state is inner.state
    assert set(opt.state) == set(inner.state) != set()  # momentum buffers, seen through the wrapper
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kind", list(SCHEDULERS))
@pytest.mark.parametrize("algo", ALGOS)
def test_a_torch_scheduler_sets_the_rate_the_update_uses(algo, kind):
    def make():
        model = tiny()
        return model, wrap(algo, model, torch.optim.SGD(model.parameters(), lr=LR))

    used, scheduled = two_steps(make, SCHEDULERS[kind])
    assert used[1] == pytest.approx(LR / 2, rel=1e-15)
    _, by_hand = two_steps(make, lrs=used)
    for a, b in zip(scheduled[1], by_hand[1]):
        assert torch.equal(a, b)  # the scheduled rate is exactly the rate of the update
    _, full = two_steps(make, lrs=[used[0], LR])
    assert_half_update(scheduled, full)


@pytest.mark.parametrize("algo", ALGOS)
def test_state_dict_round_trip_gives_identical_next_steps(algo):
    """Momentum, the scheduled rate, the generator and the algorithm's own state come back
    (through a ``weights_only`` load, as in a checkpoint file)."""
    a_model = tiny()
    a = wrap(algo, a_model, torch.optim.SGD(a_model.parameters(), lr=LR, momentum=0.9))
    sched = StepLR(a, step_size=1, gamma=0.5)
    for _ in range(2):
        a.step(closure_of(a_model))
        sched.step()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    b_model = tiny(seed=1)
    b_model.load_state_dict(a_model.state_dict())
    b = wrap(algo, b_model, torch.optim.SGD(b_model.parameters(), lr=0.7, momentum=0.9), seed=99)
    if isinstance(b, NoiseInjection):
        b.sigma_scale = 0.123
    b.load_state_dict(state)
    assert b.param_groups[0]["lr"] == a.param_groups[0]["lr"] == LR / 4
    assert getattr(b, "sigma_scale", None) == getattr(a, "sigma_scale", None)
    for _ in range(2):
        a.step(closure_of(a_model))
        b.step(closure_of(b_model))
    for wa, wb in zip(weights(a_model), weights(b_model)):
        assert torch.equal(wa, wb)


def test_the_tiles_of_a_converted_model_follow_the_scheduler():
    """AnalogSGD hands every group's ``lr`` to its tile at each step; xbar's tiles store their
    weight as a torch parameter that SGD updates with that rate: the tile weights move by
    the scheduled amount."""
    import xbar
    from xbar import tiles

    def make():
        model = xbar.convert(tiny(), PRESET)
        tiles.set_injection(model, enabled=False)
        targets = noisy_parameters(model, PRESET)
        assert targets and all(t.tile is not None for t in targets)
        return model, NoiseInjection(make_optimizer(model, LR), targets, None, 0.0, None, model)

    model, opt = make()
    assert type(opt.optimizer).__name__ == "AnalogSGD"
    sched = CosineAnnealingLR(opt, T_max=2)
    opt.step(closure_of(model))
    sched.step()
    assert len(opt.param_groups) > 1  # AnalogSGD's regrouped groups: each tile's own
    assert all(g["lr"] == LR / 2 for g in opt.optimizer.param_groups)

    torch.manual_seed(0)
    used, scheduled = two_steps(make, lambda o: CosineAnnealingLR(o, T_max=2))
    torch.manual_seed(0)
    _, full = two_steps(make, lrs=[used[0], LR])
    assert used[1] == LR / 2
    assert_half_update(scheduled, full)


# ---------------------------------------------------------------------- the trainer's schedule
def rates(schedule: Schedule, lr: float, epochs: int | None = None) -> list[float]:
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = EpochScheduler(opt, schedule)
    out = []
    for _ in range(epochs or schedule.epochs):
        out.append(sched.lr)
        opt.step()
        sched.step()
    return out


def test_schedules_follow_their_closed_forms():
    """torch's cosine is recursive: each step multiplies by a ratio of cosines, a few ulp of
    relative error per epoch, so 1e-12 bounds 200 epochs with a wide margin."""
    lr, E = 0.1, 200
    cos = rates(Schedule("cosine", E), lr)
    assert cos == pytest.approx([lr * (1 + math.cos(math.pi * e / E)) / 2 for e in range(E)], rel=1e-12)
    step = rates(Schedule("step", E, step_size=10, gamma=0.8), lr)
    assert step == pytest.approx([lr * 0.8 ** (e // 10) for e in range(E)], rel=1e-12)
    assert rates(Schedule("constant", 7), lr) == [lr] * 7
    # SWA (WVAT Sec. 4.2): cosine from lr towards swa_lr over swa_start epochs, then swa_lr exactly
    start, swa_lr = 150, 0.005
    swa = rates(Schedule("cosine", E, swa_start=start, swa_lr=swa_lr), lr)
    closed = [swa_lr + (lr - swa_lr) * (1 + math.cos(math.pi * e / start)) / 2 for e in range(start)]
    assert swa[:start] == pytest.approx(closed, rel=1e-12)
    assert swa[start:] == [swa_lr] * (E - start)
    assert rates(Schedule("step", 30, 10, 0.5, swa_start=20, swa_lr=0.01), lr) == pytest.approx(
        [lr] * 10 + [lr / 2] * 10 + [0.01] * 10, rel=1e-15)
    assert rates(Schedule("constant", 4, swa_start=0, swa_lr=0.01), lr) == [0.01] * 4


@pytest.mark.parametrize("stop", [3, 6, 7])
@pytest.mark.parametrize("schedule", [Schedule("cosine", 10, swa_start=6, swa_lr=0.02), Schedule("step", 10, 2, 0.5)],
                         ids=["cosine-swa", "step"])
def test_a_resumed_schedule_gives_the_uninterrupted_rates(schedule, stop):
    """State after ``stop`` epochs (optimizer and schedulers, through a ``weights_only`` load)
    into a fresh optimizer and scheduler: the remaining rates are identical."""
    whole = rates(schedule, 0.1)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = EpochScheduler(opt, schedule)
    for _ in range(stop):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    q = nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.SGD([q], lr=0.1)
    resumed = EpochScheduler(opt2, schedule)
    opt2.load_state_dict(state["opt"])
    resumed.load_state_dict(state["sched"])
    rest = []
    for _ in range(stop, schedule.epochs):
        rest.append(resumed.lr)
        opt2.step()
        resumed.step()
    assert rest == whole[stop:]


def test_a_bad_schedule_is_refused():
    with pytest.raises(ValueError, match="cosine, step or constant"):
        Schedule("linear", 10)
    with pytest.raises(ValueError, match="both or neither"):
        Schedule("cosine", 10, swa_start=5)


def test_train_follows_the_schedule_and_steps_only_optimizers_that_train():
    """``train()``'s history records the scheduled rates (SWA: cosine towards swa_lr over
    swa_start = 2 of 4 epochs, then swa_lr); TRICE's models merged from the start leave w1's
    optimizer alone to schedule (no scheduler steps an optimizer that never steps)."""
    from xbar.training import train

    kw = dict(seed=0, lr=0.02, batch_size=256, progress=False, checkpoint_every=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*lr_scheduler")
        _, swa = train("lenet", "digits", "fefet2", "swa", epochs=4, swa_start=0.5, swa_lr=0.01, **kw)
        _, trice = train("lenet", "digits", "fefet2", "trice", epochs=2, tol=5.0, n_train=2, kpp_images=50, **kw)
    assert [r["lr"] for r in swa] == pytest.approx([0.02, 0.015, 0.01, 0.01], rel=1e-15)
    assert [r["lr"] for r in trice] == pytest.approx([0.02, 0.01], rel=1e-15)
    assert trice[-1]["trice_merged"]
