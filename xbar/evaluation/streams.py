"""Random streams of Monte Carlo instances: one seed per (study seed, instance, purpose, layer).

Every random draw of instance ``i`` comes from generators seeded with
``instance_seeds(seed, [i], *tags)``, a SplitMix64 hash of the study seed, the tags
(what is drawn, which layer, which read time) and the instance's global index. So an
instance's result depends only on ``(seed, i)``: not on how many instances share a
forward pass (``batch_instances``), on how instances are split across processes, or
on how many instances were drawn in total (adaptive stopping just adds instances).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = ["PROGRAM", "READ", "ACTIVATION", "DIRECTION", "BIAS", "instance_seeds", "generators", "time_tag"]

#: Purpose tags: what an instance's stream is used for.
PROGRAM, READ, ACTIVATION, DIRECTION, BIAS = 1, 2, 3, 4, 5

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser (a bijective 64-bit mix), vectorised over uint64 arrays."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


_MASK = (1 << 64) - 1


def _splitmix64_int(x: int) -> int:
    """:func:`_splitmix64` of one value, on Python ints (a study asks for a few seeds per
    layer and instance: numpy's per-call cost would dominate)."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def instance_seeds(seed: int, indices: Iterable[int], *tags: int) -> list[int]:
    """63-bit seeds, one per global instance index, for the stream named by ``tags``.

    ``seeds = mix(mix(...mix(seed) ^ tag_1 ...) ^ tag_m ^ index)``; deterministic across
    platforms and processes.
    """
    h = _splitmix64_int(int(seed) & _MASK)
    for t in tags:
        h = _splitmix64_int(h ^ (int(t) & _MASK))
    idx = [int(i) & _MASK for i in indices]
    if len(idx) <= 16:
        return [_splitmix64_int(h ^ i) >> 1 for i in idx]
    out = _splitmix64(np.uint64(h) ^ np.asarray(idx, dtype=np.uint64)) >> np.uint64(1)
    return [int(v) for v in out]


def generators(seeds: Sequence[int], device: torch.device | str | None = None) -> list[torch.Generator]:
    """One ``torch.Generator`` per seed on ``device`` (CPU when None)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return [torch.Generator(device=dev).manual_seed(int(s)) for s in seeds]


def time_tag(t: float) -> int:
    """A tag for read time ``t`` (its float64 bits), so a read does not depend on other times."""
    return struct.unpack("<q", struct.pack("<d", float(t)))[0]
