"""The autograd function of :func:`xbar.mapping.quantize.straight_through`.

Its own module because defining a ``torch.autograd.Function`` imports torch, which
``import xbar.mapping`` avoids.
"""

from __future__ import annotations

import torch


class StraightThrough(torch.autograd.Function):
    """Forward: ``value``; backward: the gradient goes to ``weights`` unchanged."""

    @staticmethod
    def forward(ctx, weights: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None
