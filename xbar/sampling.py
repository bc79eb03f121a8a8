"""``xbar.sample_weights``: Monte Carlo instances of programmed weights, the primitive under every study."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from xbar.presets import device_model_of


def sample_weights(
    weights: torch.Tensor,
    preset,
    n: int,
    generator: torch.Generator | None = None,
    seeds: Sequence[int] | None = None,
) -> torch.Tensor:
    """``n`` programmed instances of ``weights`` under ``preset``, shape ``[n, *weights.shape]``.

    Quantization, bit slicing and programming noise follow TRICE Eq. 11-14 with the
    preset's device model (per-level sigma in closed form, correlated fields, bit flips).
    Pass ``seeds`` (one per instance) to make every instance independent of batching.
    """
    if n < 0:
        raise ValueError(f"n = {n}: expected >= 0")
    return device_model_of(preset).program(weights, n, generator=generator, seeds=seeds)
