"""The epoch loop shared by every algorithm: data order, schedule, metrics, checkpoints.

Everything random is derived from the seed: the data order of epoch e is a
permutation drawn from a generator seeded with (seed, e), and each sample's
augmentation from a seed of (seed, e, position) (:class:`Batches`), so a run
resumed in the middle of an epoch replays the same batches; algorithm noise comes
from generators whose states are checkpointed, and the global random states (which
aihwkit tiles inject from) are checkpointed too. On CPU a resumed run therefore
ends with the same weights as an uninterrupted one.

A step whose loss or updated weights are not finite stops the run with
:class:`TrainingDiverged` (an ``InputError``: the hyper-parameters are too large).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, StepLR
from torch.optim.swa_utils import SWALR, update_bn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from xbar.data.seeded import SeededSamples
from xbar.devices.seeding import derive_seed
from xbar.errors import InputError
from xbar.progress import progress_bar
from xbar.training.base import WrappedOptimizer
from xbar.training.checkpoint import load_tensors, rng_state, set_rng_state, tensor_state
from xbar.training.config import SCHEDULES
from xbar.training.params import NoisyParam, forward_weights
from xbar.training.swa import SWA, has_batch_norm
from xbar.training.trice import TRICE

if TYPE_CHECKING:  # pragma: no cover
    from xbar.training.distributed import DataParallel

#: Test hook: after this many optimizer steps the process kills itself (SIGKILL), as if it crashed.
KILL_ENV = "XBAR_TRAIN_KILL_AFTER_STEPS"


# ---------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class Schedule:
    """A run's learning-rate schedule, applied by torch's schedulers once per epoch.

    ``cosine``: ``CosineAnnealingLR(T_max=epochs)``, lr (1 + cos(pi e / E)) / 2; ``step``:
    ``StepLR(step_size, gamma)``, lr * gamma^(e // step_size) (DAT: 0.8 every 10 epochs);
    ``constant``: no scheduler. With SWA from epoch ``swa_start`` (WVAT Sec. 4.2) the
    schedule runs over the first ``swa_start`` epochs (cosine towards ``eta_min = swa_lr``)
    and ``SWALR`` holds ``swa_lr`` from epoch ``swa_start`` on.
    """

    kind: str
    epochs: int
    step_size: int = 10
    gamma: float = 0.8
    swa_start: int | None = None
    swa_lr: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule = {self.kind!r}: expected cosine, step or constant")
        if (self.swa_start is None) != (self.swa_lr is None):
            raise ValueError("swa_start and swa_lr: expected both or neither")

    def main(self, optimizer: Optimizer) -> LRScheduler | None:
        """The scheduler of the epochs before ``swa_start`` (None: a constant rate)."""
        if self.kind == "cosine":
            if self.swa_start is None:
                return CosineAnnealingLR(optimizer, T_max=max(1, self.epochs))
            return CosineAnnealingLR(optimizer, T_max=max(1, self.swa_start), eta_min=self.swa_lr)
        if self.kind == "step":
            return StepLR(optimizer, step_size=max(1, self.step_size), gamma=self.gamma)
        return None

    def swa_from(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) runs at the SWA rate."""
        return self.swa_start is not None and epoch >= self.swa_start


class EpochScheduler:
    """One optimizer's torch schedulers, stepped at the end of every epoch.

    :meth:`Schedule.main` until ``swa_start``, then ``SWALR(swa_lr, anneal_epochs=0)``
    (built on entering the SWA phase: building one sets the rate). Its state (the epoch and
    the schedulers' counters: plain numbers) is part of a checkpoint, so a resumed run
    continues the same recursion and gets the same rates as an uninterrupted one.
    """

    def __init__(self, optimizer: Optimizer, schedule: Schedule) -> None:
        self.optimizer = optimizer
        self.schedule = schedule
        self.epoch = 0
        self.main = None if schedule.swa_from(0) else schedule.main(optimizer)
        self.swa = self._swa() if schedule.swa_from(0) else None

    def _swa(self) -> SWALR:
        return SWALR(self.optimizer, self.schedule.swa_lr, anneal_epochs=0)

    @property
    def lr(self) -> float:
        """The rate of the current epoch (of the first param group: the schedule sets them all alike)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self) -> None:
        """Move to the next epoch's rate."""
        self.epoch += 1
        if self.swa is not None:
            self.swa.step()
        elif self.schedule.swa_from(self.epoch):
            self.swa = self._swa()
        elif self.main is not None:
            self.main.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "main": self.main.state_dict() if self.main is not None else None,
            "swa": self.swa.state_dict() if self.swa is not None else None,
        }

    def replay(self, epochs: int) -> None:
        """Reach epoch ``epochs`` from the start: a version-1 checkpoint (rates computed from the
        epoch) holds no scheduler state, so the schedulers are stepped again from the base rate."""
        if self.main is not None:
            for group, base in zip(self.optimizer.param_groups, self.main.base_lrs):
                group["lr"] = base
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notice of a scheduler step before any optimizer step
            for _ in range(epochs):
                self.step()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore after the optimizer's own state (its groups hold the current rate)."""
        self.epoch = int(state["epoch"])
        if self.main is not None and state["main"] is not None:
            self.main.load_state_dict(state["main"])
        if state["swa"] is not None:
            self.swa = self.swa or self._swa()
            self.swa.load_state_dict(state["swa"])


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of epoch ``epoch``: a permutation seeded with (seed, epoch)."""
    g = torch.Generator().manual_seed(derive_seed(seed, "data-order", epoch))
    return torch.randperm(n, generator=g)


# -------------------------------------------------------------------------------- data
class Batches:
    """Index-addressed access to a dataset (a fast path for ``TensorDataset``).

    Other datasets (torchvision's, with random augmentation) are read through
    :class:`xbar.data.seeded.SeededSamples`: sample ``p`` of an order (its position)
    is fetched with the global generators seeded by ``derive_seed(seed, p)`` and
    restored after, and the ``DataLoader`` gets its own seeded generator, so a batch
    - augmentation included - is a function of ``(seed, order, position)`` alone and
    reading data never moves the global random state.
    """

    def __init__(self, dataset: Dataset, device: torch.device | str = "cpu", num_workers: int = 0) -> None:
        self.dataset = dataset
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.tensors = dataset.tensors if isinstance(dataset, TensorDataset) else None

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(
        self,
        order: torch.Tensor,
        batch_size: int,
        start: int = 0,
        seed: int = 0,
        shard: Callable[[int, int], list[int]] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``order[i*bs:(i+1)*bs]`` for i >= ``start``; ``seed`` keys the augmentation.

        ``shard(first, end)`` picks the positions of the global batch ``[first, end)`` this
        process trains on (:func:`xbar.training.distributed.shard_positions`); augmentation
        stays keyed by the global position.
        """
        n = len(order)
        first = start * batch_size

        def positions(i: int) -> range | list[int]:
            end = min(i + batch_size, n)
            return range(i, end) if shard is None else shard(i, end)

        if self.tensors is not None:
            x, y = self.tensors
            for i in range(first, n, batch_size):
                idx = order[i : i + batch_size] if shard is None else order[positions(i)]
                yield x[idx].to(self.device), y[idx].to(self.device)
            return
        index = order.tolist()
        sampler = [[(index[p], derive_seed(seed, "sample", p)) for p in positions(i)] for i in range(first, n, batch_size)]
        loader = DataLoader(SeededSamples(self.dataset), batch_size=None, sampler=sampler,
                            num_workers=self.num_workers,
                            generator=torch.Generator().manual_seed(derive_seed(seed, "loader")))
        for x, y in loader:
            yield x.to(self.device), torch.as_tensor(y).to(self.device)

    def all(self, limit: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole set (or a fixed random subset of ``limit`` samples) as two tensors."""
        n = len(self)
        order = torch.arange(n)
        if limit and limit < n:
            g = torch.Generator().manual_seed(derive_seed(seed, "subset", limit))
            order = torch.randperm(n, generator=g)[:limit].sort().values
        xs, ys = [], []
        for x, y in self.batches(order, 4096, seed=derive_seed(seed, "all", limit)):
            xs.append(x)
            ys.append(y)
        return torch.cat(xs), torch.cat(ys)


# ----------------------------------------------------------------------------- runners
def closure_for(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, record: dict, scale: float = 1.0
) -> Callable[[], torch.Tensor]:
    """Cross-entropy forward/backward; the first call's logits are kept for the train accuracy.

    The gradient is that of ``scale`` times the mean loss (a rank's share of a batch split
    across processes, :func:`xbar.training.distributed.loss_scale`); the mean loss is returned.
    """

    def closure() -> torch.Tensor:
        out = model(x)
        loss = F.cross_entropy(out, y)
        (loss if scale == 1.0 else loss * scale).backward()
        if "out" not in record:
            record["out"] = out.detach()
        return loss.detach()

    return closure


class StepRunner:
    """One model trained by one algorithm step (``WrappedOptimizer``), with optional SWA."""

    def __init__(
        self,
        model: nn.Module,
        step: WrappedOptimizer,
        targets: list[NoisyParam],
        swa: SWA | None = None,
    ) -> None:
        self.model = model
        self.step = step
        self.targets = targets
        self.swa = swa
        self.wrap: Callable[[nn.Module], nn.Module] = lambda m: m  # DDP under torchrun

    def models(self) -> list[nn.Module]:
        return [self.model]

    def steps(self) -> list[WrappedOptimizer]:
        return [self.step]

    def begin_epoch(self, epoch: int) -> None:
        """Nothing to prepare: the trainer's schedulers set the rate."""

    def train_batch(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> tuple[float, int]:
        self.model.train()
        record: dict = {}
        loss = self.step.step(closure_for(self.wrap(self.model), x, y, record, scale))
        return float(loss), int((record["out"].argmax(1) == y).sum())

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        if self.swa is not None and self.swa.active(epoch):
            self.swa.update(self.model)
            return {"swa_n": self.swa.n_averaged}
        return {}

    def current(self) -> tuple[nn.Module, list[NoisyParam]]:
        return self.model, self.targets

    def parameters(self) -> list[torch.Tensor]:
        """Every trained tensor (model parameters and device-stored weights)."""
        return [*self.model.parameters(), *(t.param for t in self.targets)]

    def final(self, batches: Callable[[], Iterator] | None = None) -> nn.Module:
        """The trained model: the SWA average if SWA ran (batch-norm statistics recomputed
        with the stored weights), else the model."""
        if self.swa is not None and self.swa.n_averaged > 0:
            load_tensors(self.model, tensor_state(self.swa.averaged.module))
            if batches is not None and has_batch_norm(self.model):
                with forward_weights(self.targets):
                    update_bn(batches(), self.model)
        return self.model

    def state_dict(self) -> dict[str, Any]:
        out = {"model": tensor_state(self.model), "step": self.step.state_dict()}
        if self.swa is not None:
            out["swa"] = self.swa.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_tensors(self.model, state["model"])
        self.step.load_state_dict(state["step"])
        if self.swa is not None and "swa" in state:
            self.swa.load_state_dict(state["swa"])


class TriceRunner:
    """Adapter of :class:`~xbar.training.trice.TRICE` to the trainer loop."""

    def __init__(self, trice: TRICE, targets_of: Callable[[nn.Module], list[NoisyParam]]) -> None:
        self.trice = trice
        self.targets_of = targets_of
        self.wrap: Callable[[nn.Module], nn.Module] = lambda m: m  # DDP under torchrun

    def models(self) -> list[nn.Module]:
        return list(self.trice.models)

    def steps(self) -> list[WrappedOptimizer]:
        """The optimizers that train, asked once when the trainer builds its schedulers: all
        three, or w1's alone when the models are merged from the start (the others never
        step, so they get no learning-rate scheduler). Models that merge during the run keep
        the schedulers they have; a merged model's scheduler then sets a rate nothing uses."""
        return [self.trice.opts[i] for i in self.trice.active]

    def begin_epoch(self, epoch: int) -> None:
        self.trice.begin_epoch(epoch)

    def train_batch(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> tuple[float, int]:
        report = 0 if self.trice.merged else 1
        records: dict[int, dict] = {}

        def closure_of(model: nn.Module):
            model.train()
            i = next(k for k, m in enumerate(self.trice.models) if m is model)
            records[i] = {}
            return closure_for(self.wrap(model), x, y, records[i], scale)

        loss = self.trice.train_batch(closure_of)
        return float(loss), int((records[report]["out"].argmax(1) == y).sum())

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        return self.trice.end_epoch(epoch)

    def current(self) -> tuple[nn.Module, list[NoisyParam]]:
        m = self.trice.model
        return m, self.targets_of(m)

    def parameters(self) -> list[torch.Tensor]:
        """Every trained tensor of the (up to three) models."""
        return [p for m in self.trice.models for p in (*m.parameters(), *(t.param for t in self.targets_of(m)))]

    def final(self, batches=None) -> nn.Module:
        return self.trice.model

    def state_dict(self) -> dict[str, Any]:
        return {"trice": self.trice.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trice.load_state_dict(state["trice"])


# ------------------------------------------------------------------------------ loop
class TrainingDiverged(InputError):
    """A training step gave a non-finite loss or non-finite weights (learning rate or noise too large)."""


@torch.no_grad()
def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every entry of every tensor is finite (one reduction per tensor, one sync)."""
    if not tensors:
        return True
    sums: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:  # stacked where they live: one transfer per device, not per tensor
        sums.setdefault(t.device, []).append(t.detach().sum().float())
    return all(bool(torch.stack(s).isfinite().all()) for s in sums.values())


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> float:
    """Top-1 accuracy of ``model`` on the tensors ``x``, ``y``."""
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        out = model(x[i : i + batch_size])
        correct += int((out.argmax(1) == y[i : i + batch_size]).sum())
    return correct / max(1, x.shape[0])


def epoch_line(metrics: dict[str, Any], epochs: int) -> str:
    """The line a finished epoch leaves on stderr: loss, accuracies and the KPPs it computed."""
    parts = [f"epoch {metrics['epoch']}/{epochs}", f"loss {metrics['train_loss']:.4f}",
             f"train acc {metrics['train_acc']:.4f}", f"test acc {metrics['test_acc']:.4f}"]
    if "test_kpp" in metrics:
        parts.append(f"test KPP({100 * metrics['kpp_q']:g}%) {metrics['test_kpp']:.4f}")
    if "trice_kpp" in metrics:
        parts.append("TRICE KPP left/mid/right " + "/".join(f"{v:.4f}" for v in metrics["trice_kpp"]))
    parts.append(f"{metrics['time_s']:.1f} s")
    return "  ".join(parts)


@torch.no_grad()
def clean_accuracy(model: nn.Module, targets: list[NoisyParam], x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy with the noise-free stored (quantized) weights, eval mode."""
    was = model.training
    model.eval()
    try:
        with forward_weights(targets):
            return accuracy(model, x, y)
    finally:
        model.train(was)


class Trainer:
    """Runs ``runner`` for ``epochs`` epochs with checkpoints and per-epoch metrics.

    Args:
        runner: a :class:`StepRunner` or :class:`TriceRunner`.
        train, test: the data.
        epochs, batch_size, seed: the run.
        schedule: the learning-rate schedule (:class:`Schedule`), one set of torch schedulers
            per optimizer of the runner, stepped at every epoch end.
        evaluate: extra end-of-epoch metrics ``(model, targets, epoch) -> dict`` (e.g. test KPP).
        checkpoint: called with the full state at every checkpoint.
        on_epoch: called with the history after every epoch.
        checkpoint_every: also checkpoint every this many steps inside an epoch (0: epoch ends only).
        progress: report on stderr (default True): one line per epoch (:func:`epoch_line`), also
            when stderr is not a terminal, and a bar within the epoch (``xbar.progress``); False: silent.
        parallel: this process's part of a run on several processes
            (:class:`xbar.training.distributed.DataParallel`; None: one process).
    """

    def __init__(
        self,
        runner: StepRunner | TriceRunner,
        train: Batches,
        test: Batches,
        epochs: int,
        batch_size: int,
        seed: int,
        schedule: Schedule,
        evaluate: Callable[[nn.Module, list[NoisyParam], int], dict[str, Any]] | None = None,
        checkpoint: Callable[[dict[str, Any]], None] | None = None,
        on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
        checkpoint_every: int = 0,
        progress: bool | None = None,
        parallel: DataParallel | None = None,
    ) -> None:
        self.runner = runner
        self.train_data, self.test_data = train, test
        self.epochs, self.batch_size, self.seed = int(epochs), int(batch_size), int(seed)
        self.schedulers = [EpochScheduler(opt, schedule) for opt in runner.steps()]
        self.evaluate = evaluate
        self.checkpoint = checkpoint
        self.on_epoch = on_epoch
        self.checkpoint_every = int(checkpoint_every)
        self.progress = progress is not False
        self.parallel = parallel
        if parallel is not None:
            parallel.attach(runner)
            self.progress = self.progress and parallel.is_main
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.batch = 0
        self.global_step = 0
        self.sums = [0.0, 0, 0]  # loss sum, correct, seen (current epoch)
        self.elapsed = 0.0
        self._test = None
        kill = os.environ.get(KILL_ENV)
        self.kill_after = int(kill) if kill else None

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "global_step": self.global_step,
            "sums": [float(self.sums[0]), int(self.sums[1]), int(self.sums[2])],
            "elapsed": float(self.elapsed),
            "history": list(self.history),
            "runner": self.runner.state_dict(),
            "schedulers": [s.state_dict() for s in self.schedulers],
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.batch, self.global_step = int(state["epoch"]), int(state["batch"]), int(state["global_step"])
        s = state["sums"]
        self.sums = [float(s[0]), int(s[1]), int(s[2])]
        self.elapsed = float(state.get("elapsed", 0.0))
        self.history = list(state["history"])
        self.runner.load_state_dict(state["runner"])
        if "schedulers" not in state:  # a version-1 checkpoint
            for sched in self.schedulers:
                sched.replay(self.epoch)
        for sched, s in zip(self.schedulers, state.get("schedulers", ()), strict=False):
            sched.load_state_dict(s)
        set_rng_state(state["rng"])

    def _check_finite(self, epoch: int, loss: float, lr: float) -> None:
        """Raise :class:`TrainingDiverged` if the step just taken left a non-finite loss or weights."""
        weights_ok = all_finite(self.runner.parameters())
        if math.isfinite(loss) and weights_ok:
            return
        what = f"loss {loss:.4g}" + ("" if weights_ok else ", weights not finite")
        raise TrainingDiverged(
            f"training diverged at epoch {epoch + 1} step {self.batch + 1} ({what}); "
            f"lower --lr (now {lr:g} in this epoch) or the injected noise"
        )

    def _save(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint(self.state_dict())

    # ----------------------------------------------------------------- loop
    def test_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._test is None:
            self._test = self.test_data.all()
        return self._test

    def fit(self) -> list[dict[str, Any]]:
        n = len(self.train_data)
        per_epoch = math.ceil(n / self.batch_size)
        while self.epoch < self.epochs:
            epoch = self.epoch
            t0 = time.perf_counter()
            lr = self.schedulers[0].lr
            self.runner.begin_epoch(epoch)
            order = epoch_order(n, self.seed, epoch)
            bar = None
            if self.progress:
                bar = progress_bar(per_epoch, f"epoch {epoch + 1}/{self.epochs}", initial=self.batch, leave=False)
            try:
                par = self.parallel
                batches = self.train_data.batches(order, self.batch_size, self.batch,
                                                  derive_seed(self.seed, "batches", epoch),
                                                  par.positions if par is not None else None)
                for x, y in batches:
                    if par is None:
                        loss, correct = self.runner.train_batch(x, y)
                        count = y.shape[0]
                    else:
                        whole = min(self.batch_size, n - self.batch * self.batch_size)
                        par.begin_step(self.runner, self.global_step)
                        loss, correct = self.runner.train_batch(x, y, par.scale(whole))
                        count = par.count(whole)
                        loss_sum, correct, count = par.sum([loss * count, correct if count else 0, count])
                        loss, correct, count = loss_sum / count, int(correct), int(count)
                    self._check_finite(epoch, loss, lr)
                    self.sums[0] += loss * count
                    self.sums[1] += correct
                    self.sums[2] += count
                    self.batch += 1
                    self.global_step += 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{self.sums[0] / max(1, self.sums[2]):.3f}", refresh=False)
                    if self.checkpoint_every and self.global_step % self.checkpoint_every == 0 and self.batch < per_epoch:
                        self.elapsed += time.perf_counter() - t0
                        t0 = time.perf_counter()
                        self._save()
                    if self.kill_after is not None and self.global_step >= self.kill_after:
                        os.kill(os.getpid(), signal.SIGKILL)
            finally:
                if bar is not None:
                    bar.close()
            info = self.runner.end_epoch(epoch)
            model, targets = self.runner.current()
            xt, yt = self.test_tensors()
            metrics: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": self.global_step,
                "lr": lr,
                "train_loss": self.sums[0] / max(1, self.sums[2]),
                "train_acc": self.sums[1] / max(1, self.sums[2]),
                "test_acc": clean_accuracy(model, targets, xt, yt),
            }
            if self.evaluate is not None:
                metrics.update(self.evaluate(model, targets, epoch))
            metrics.update(info)
            self.elapsed += time.perf_counter() - t0
            metrics["time_s"] = self.elapsed
            self.history.append(metrics)
            if self.progress:
                print(epoch_line(metrics, self.epochs), file=sys.stderr, flush=True)
            for sched in self.schedulers:
                sched.step()
            self.epoch += 1
            self.batch = 0
            self.sums = [0.0, 0, 0]
            if self.on_epoch is not None:
                self.on_epoch(self.history)
            self._save()
        return self.history
