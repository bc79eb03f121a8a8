"""Per-instance random streams: the one 64-bit mixing function and the generators it seeds.

Every stream of a Monte Carlo instance (programming noise, bit flips, read noise, the
counter-based bit-flip draws) is keyed by SplitMix64 (Steele et al. 2014), written once
here and used by :mod:`xbar.devices.bitflip` (counter-based flips, on tensors) and
:mod:`xbar.evaluation.streams` (instance seeds, on Python ints).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

__all__ = ["GOLDEN", "FLIP_STREAM", "mix64", "srl", "splitmix64", "generators"]

_MASK = (1 << 64) - 1
_SIGN = 1 << 63


def _signed(x: int) -> int:
    """``x`` modulo 2^64 as a two's complement int64 value."""
    return ((x + _SIGN) & _MASK) - _SIGN


GOLDEN = _signed(0x9E3779B97F4A7C15)  #: SplitMix64's increment, as a signed int64
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)

#: Offset of an instance's bit-flip stream from its programming stream (``seed + FLIP_STREAM``).
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


def generators(seeds: Sequence[int], device: torch.device | str | None = None) -> list[torch.Generator]:
    """One ``torch.Generator`` per seed on ``device`` (CPU when None): one per Monte Carlo instance."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return [torch.Generator(device=dev).manual_seed(int(s)) for s in seeds]
