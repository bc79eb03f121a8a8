"""Random streams of Monte Carlo instances: one seed per (study seed, instance, purpose, layer).

Every random draw of instance ``i`` comes from generators seeded with
``instance_seeds(seed, [i], *tags)``, a SplitMix64 hash (:mod:`xbar.devices.seeding`) of the study seed, the tags
(what is drawn, which layer, which read time) and the instance's global index. So an
instance's result depends only on ``(seed, i)``: not on how many instances share a
forward pass (``batch_instances``), on how instances are split across processes, or
on how many instances were drawn in total (adaptive stopping just adds instances).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import torch

from xbar.devices.seeding import GOLDEN, chain, generators, mix64, splitmix64

__all__ = ["PROGRAM", "READ", "ACTIVATION", "DIRECTION", "BIAS", "instance_seeds", "generators", "time_tag"]

#: Purpose tags: what an instance's stream is used for.
PROGRAM, READ, ACTIVATION, DIRECTION, BIAS = 1, 2, 3, 4, 5

_MASK = (1 << 64) - 1


def instance_seeds(seed: int, indices: Iterable[int], *tags: int) -> list[int]:
    """63-bit seeds, one per global instance index, for the stream named by ``tags``.

    ``derive_seed(seed, *tags, index)`` of :mod:`xbar.devices.seeding` (a SplitMix64
    chain), vectorized over the indices; deterministic across platforms and processes.
    """
    h = chain(seed, *(int(t) for t in tags))
    idx = [int(i) & _MASK for i in indices]
    if len(idx) <= 16:
        return [splitmix64(h ^ i) >> 1 for i in idx]
    z = torch.tensor([(h ^ i) - (1 << 64) if (h ^ i) >> 63 else h ^ i for i in idx], dtype=torch.int64)
    return (mix64(z + GOLDEN) >> 1 & ((1 << 63) - 1)).tolist()


def time_tag(t: float) -> int:
    """A tag for read time ``t`` (its float64 bits), so a read does not depend on other times."""
    return struct.unpack("<q", struct.pack("<d", float(t)))[0]
