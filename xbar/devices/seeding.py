"""Random streams: the one seeding scheme of xbar, its 64-bit mixing function and the generators it seeds.

Every random stream is named by a key path under a seed and seeded by a SplitMix64 chain
(Steele et al. 2014), :func:`derive_seed`: h_0 = SplitMix64(seed), h_j = SplitMix64(h_{j-1}
xor key_j), seed = h_m >> 1. Monte Carlo instances (programming noise, read noise, the bit
flips of each instance) are keyed by purpose tag, layer and global instance index
(:mod:`xbar.evaluation.streams`); training streams by name, e.g. ``derive_seed(seed,
"data-order", epoch)``. The counter-based bit-flip draws of :mod:`xbar.devices.bitflip`
apply the same mixing function elementwise on int64 tensors.

Why not ``numpy.random.SeedSequence`` spawn keys: they name streams the same way, but
the bit-flip draws need the hash elementwise on (GPU) tensors, and one function for both
keeps a single definition; SplitMix64 is SeedSequence's quality class for seeding
(equidistributed, avalanche-tested) and costs a few integer operations.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import TypeVar

import torch

__all__ = ["GOLDEN", "FLIP_STREAM", "chain", "derive_seed", "mix64", "srl", "splitmix64", "generators"]

_MASK = (1 << 64) - 1
_SIGN = 1 << 63


def _signed(x: int) -> int:
    """``x`` modulo 2^64 as a two's complement int64 value."""
    return ((x + _SIGN) & _MASK) - _SIGN


GOLDEN = _signed(0x9E3779B97F4A7C15)  #: SplitMix64's increment, as a signed int64
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)

#: Key of an instance's bit-flip stream under its programming stream (``derive_seed(seed, FLIP_STREAM)``).
FLIP_STREAM = 0x5EED

Int64 = TypeVar("Int64", int, torch.Tensor)


def srl(z: Int64, s: int) -> Int64:
    """Logical right shift of int64 values (Python ints in int64 range, or int64 tensors)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64(z: Int64) -> Int64:
    """The SplitMix64 finaliser without its leading ``+ golden``, on int64 values.

    Works elementwise on int64 tensors (two's complement wrap-around) and on Python
    ints in int64 range (wrapped to it after each product), with the same bits: a few
    scalar seeds cost no tensor calls, many counters cost no Python loop.
    """
    wrap = _signed if isinstance(z, int) else (lambda v: v)
    z = wrap((z ^ srl(z, 30)) * _M1)
    z = wrap((z ^ srl(z, 27)) * _M2)
    return z ^ srl(z, 31)


def splitmix64(x: int) -> int:
    """SplitMix64 of one 64-bit value (any int, taken modulo 2^64), as an unsigned int in [0, 2^64)."""
    return mix64(_signed(x + GOLDEN)) & _MASK


def _key(k: object) -> int:
    """A stream key as a 64-bit value: an int modulo 2^64; anything else the first 8 bytes of
    the BLAKE2b digest of its ``repr`` (stable across runs, processes and platforms)."""
    if isinstance(k, int):
        return k & _MASK
    return _digest(repr(k))


@functools.lru_cache(maxsize=1024)
def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def chain(seed: int, *keys: object) -> int:
    """The 64-bit SplitMix64 chain of ``seed`` and ``keys`` (see the module docstring)."""
    h = splitmix64(int(seed) & _MASK)
    for k in keys:
        h = splitmix64(h ^ _key(k))
    return h


def derive_seed(seed: int, *keys: object) -> int:
    """The 63-bit seed of the stream named by ``keys`` under ``seed`` (``chain(seed, *keys) >> 1``)."""
    return chain(seed, *keys) >> 1


def generators(seeds: Sequence[int], device: torch.device | str | None = None) -> list[torch.Generator]:
    """One ``torch.Generator`` per seed on ``device`` (CPU when None): one per Monte Carlo instance."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return [torch.Generator(device=dev).manual_seed(int(s)) for s in seeds]
