"""Sharding Monte Carlo instances across processes (``torchrun --nproc_per_node=N``).

Rank r of W evaluates the global instance indices r, r + W, r + 2W, ... Every
instance draws from streams seeded by its global index (``xbar.evaluation.streams``),
so the gathered per-instance metrics, ordered by index, are identical to a single
process run. The process group is initialised from the ``WORLD_SIZE`` / ``RANK`` /
``MASTER_ADDR`` / ``MASTER_PORT`` environment that torchrun sets: gloo on CPU, NCCL
when the study runs on CUDA.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from xbar.errors import InputError

__all__ = ["Dist", "context", "local_device"]


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: ``rank`` of ``world`` (1 when not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: Sequence[int]) -> list[int]:
        """This rank's share of the global instance ``indices`` (strided: i = rank, rank + world, ...)."""
        return list(indices)[self.rank :: self.world]

    def gather(self, indices: Sequence[int], values: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """All ranks' (indices, per-instance arrays), concatenated and sorted by global index.

        Every rank receives the full result, so all ranks take the same decisions
        (adaptive stopping) afterwards.
        """
        idx = np.asarray(list(indices), dtype=np.int64)
        if not self.active:
            order = np.argsort(idx, kind="stable")
            return idx[order], {k: np.asarray(v)[order] for k, v in values.items()}
        parts: list = [None] * self.world
        dist.all_gather_object(parts, (idx, {k: np.asarray(v) for k, v in values.items()}))
        all_idx = np.concatenate([p[0] for p in parts])
        order = np.argsort(all_idx, kind="stable")
        merged = {k: np.concatenate([p[1][k] for p in parts])[order] for k in values}
        return all_idx[order], merged

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def context(device: torch.device | str | None = None) -> Dist:
    """The distributed context from torchrun's environment, initialising the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ.get("RANK", "0"))
    if not dist.is_initialized():
        dev = torch.device(device) if device is not None else torch.device("cpu")
        backend = "nccl" if dev.type == "cuda" and dist.is_nccl_available() else "gloo"
        if backend == "nccl":
            local = local_device(str(dev))
            if local.index >= torch.cuda.device_count():
                raise InputError(
                    f"rank {rank} would use {local}, but this machine has {torch.cuda.device_count()} GPU(s): "
                    "NCCL needs one GPU per process; expected --nproc_per_node <= the number of GPUs"
                )
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        atexit.register(_shutdown)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size())


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def local_device(requested: str | None = None) -> torch.device:
    """The device of this process: CUDA ``LOCAL_RANK`` under torchrun when CUDA is used."""
    if requested in (None, "auto"):
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(requested)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev
