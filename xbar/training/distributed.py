"""Training one model on several processes: ``torchrun --nproc_per_node=N xbar train ...``.

The process group comes from ``xbar.evaluation.distributed.context`` (gloo on CPU,
NCCL on CUDA, one GPU per process). Every rank builds the same model from the same
seed and wraps it in ``DistributedDataParallel``; the trainer then

* splits every global batch of ``batch_size`` samples across the ranks: rank r
  takes positions r, r + W, r + 2W, ... of the batch (:func:`shard_positions`).
  Data order and augmentation stay keyed by the *global* position, so the ranks
  together see exactly the batches of a one-process run. A rank's loss is scaled
  by ``n_r W / n`` (:func:`loss_scale`) so that DDP's gradient average equals the
  gradient of the mean loss over the whole batch also when the shards differ in
  size (an odd batch, the last batch of an epoch). A rank whose shard is empty
  (a last batch smaller than W) runs the batch's first sample at scale 0, so
  every rank joins every gradient all-reduce;
* draws the device noise of each step from generators reseeded with
  ``(seed, rank, step)`` (:meth:`DataParallel.begin_step`), so the ranks inject
  independent noise (the gradient average is over W noise draws) and a resumed
  run replays every rank's noise without per-rank generator states in the
  checkpoint. Decisions that change the work of a step (WVAT's HSV-or-GAV coin
  and its perturb-or-not coin) come from a stream of ``(seed, step)`` shared by
  all ranks, so every rank runs the same passes and the same collectives;
* sums the per-step loss and accuracy counts over the ranks, so the metrics
  (and the checkpoint, which rank 0 alone writes) describe the global batch.

Two-pass algorithms (DAT, SAM, WVAT's GAV): the first (ascent) pass is
synchronised too, not run under ``no_sync``. Its gradient sets the perturbation
(SAM's e(w), DAT's projection eps_j of Alg. 1 line 9, WVAT's GAV direction), and
with the synchronised gradient every rank perturbs the weights by the same
global-batch direction: with noise off the run is the one-process algorithm on
the same global batch, whatever the number of processes (a ``no_sync`` ascent
would give each rank its own "m-sharpness" direction, a different algorithm per
process count). The price is one more all-reduce per step. DAT's first pass
skips the gradients of the unperturbed layers in one process; DDP needs every
parameter's gradient in every synchronised backward, so here it computes them
all (and discards them).

Batch normalisation keeps per-rank batch statistics (plain DDP; the running
statistics of rank 0 are broadcast at every forward). A network with batch norm
therefore trains slightly differently on W processes than on one; the bundled
LeNet and MLP have none.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from xbar.devices.seeding import derive_seed
from xbar.errors import InputError
from xbar.evaluation.distributed import Dist, context, local_device

__all__ = ["DataParallel", "loss_scale", "shard_positions", "start"]


def shard_positions(first: int, end: int, rank: int, world: int) -> list[int]:
    """Positions of the global batch ``[first, end)`` that rank ``rank`` of ``world`` trains on.

    Strided (``first + rank``, ``first + rank + world``, ...); an empty share becomes
    ``[first]``, the batch's first sample, which :func:`loss_scale` weights 0.
    """
    mine = list(range(first + rank, end, world))
    return mine or [first]


def shard_count(n: int, rank: int, world: int) -> int:
    """How many of a global batch of ``n`` samples rank ``rank`` really trains on (0 for a stand-in)."""
    return len(range(rank, n, world))


def loss_scale(n: int, rank: int, world: int) -> float:
    """Factor on rank ``rank``'s mean loss so that DDP's average over ``world`` ranks is the
    mean over all ``n`` samples of the batch: ``n_r world / n`` (1 for equal shares)."""
    n_r = shard_count(n, rank, world)
    return 0.0 if n_r == 0 else n_r * world / n


class DataParallel:
    """One rank's part in a data-parallel training run.

    Args:
        dist: this process's rank and the number of processes.
        seed: the run's seed (the noise streams derive from it).
        device: this rank's device.
    """

    def __init__(self, dist_ctx: Dist, seed: int, device: torch.device) -> None:
        self.dist = dist_ctx
        self.seed = int(seed)
        self.device = device
        self._wrapped: dict[int, nn.Module] = {}

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def world(self) -> int:
        return self.dist.world

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    # ------------------------------------------------------------------ model
    def wrap(self, model: nn.Module) -> nn.Module:
        """The ``DistributedDataParallel`` wrapper of ``model`` (made once; it shares the parameters)."""
        key = id(model)
        if key not in self._wrapped:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._wrapped[key] = DistributedDataParallel(model, device_ids=ids)
        return self._wrapped[key]

    def attach(self, runner) -> None:
        """Make ``runner`` (a StepRunner or TriceRunner) train through DDP with per-rank noise."""
        from xbar.training.dat import DAT
        from xbar.training.wvat import WVAT

        runner.wrap = self.wrap
        for model in runner.models():
            self.wrap(model)
        for step in runner.steps():
            if isinstance(step, DAT):
                step.freeze_others = False  # DDP reduces every parameter's gradient in every backward
            if isinstance(step, WVAT) and step.choice_generator is None:
                step.choice_generator = torch.Generator(device=self.device)

    # ------------------------------------------------------------------ steps
    def begin_step(self, runner, step: int) -> None:
        """Reseed the noise of global step ``step``: per-rank streams ``(seed, rank, step)`` for
        device noise (and the global generators, which aihwkit tiles and dropout use), one
        stream ``(seed, step)`` shared by all ranks for decisions that change a step's passes."""
        for i, opt in enumerate(runner.steps()):
            if opt.generator is not None:
                opt.generator.manual_seed(derive_seed(self.seed, "ddp-noise", i, self.rank, step))
            shared = getattr(opt, "choice_generator", None)
            if shared is not None and shared is not opt.generator:
                shared.manual_seed(derive_seed(self.seed, "ddp-choice", i, step))
        torch.manual_seed(derive_seed(self.seed, "ddp-global", self.rank, step))

    def positions(self, first: int, end: int) -> list[int]:
        return shard_positions(first, end, self.rank, self.world)

    def scale(self, n: int) -> float:
        return loss_scale(n, self.rank, self.world)

    def count(self, n: int) -> int:
        return shard_count(n, self.rank, self.world)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of ``values`` over the ranks (float64, one all-reduce)."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(t)
        return [float(v) for v in t.cpu()]

    def barrier(self) -> None:
        self.dist.barrier()

    def _collective_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def start(device: torch.device, seed: int, convert: bool = False) -> DataParallel | None:
    """The data-parallel context under torchrun (``WORLD_SIZE`` > 1), else None.

    Initialises the process group (gloo on CPU, NCCL on CUDA with ``LOCAL_RANK``'s GPU).
    """
    probe = context(device)
    if not probe.active:
        return None
    if convert:
        raise InputError("convert = True: training a converted (aihwkit) model on several processes is not "
                         "supported; expected one process, or the plain model (convert = False)")
    dev = local_device(str(device)) if device.type == "cuda" else device
    return DataParallel(probe, seed, dev)
