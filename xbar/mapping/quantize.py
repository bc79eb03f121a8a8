"""H-bit weight quantization with a per-tensor or per-output-channel scale (TRICE Eq. 11)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xbar.mapping.config import MappingConfig

if TYPE_CHECKING:  # torch is imported where tensors are made: presets load without it
    import torch


def weight_scale(weights: torch.Tensor, cfg: MappingConfig) -> torch.Tensor:
    """The weight value of one integer step: max|W| / max_code (TRICE Eq. 11).

    max|W| = max(max W, -min W) from one ``aminmax`` pass (no ``abs`` copy).
    For analog storage it is the weight per conductance unit, max|W| / g_max.
    Returned with as many dimensions as ``weights`` (``[out, 1, ...]`` per channel,
    ``[1, 1, ...]`` per tensor), so that ``recombine`` can tell the weight dimensions apart.
    """
    import torch

    w = weights.detach()
    if cfg.scale == "per-channel" and w.dim() > 1:
        lo, hi = torch.aminmax(w.reshape(w.shape[0], -1), dim=1)
        shape = (-1, *([1] * (w.dim() - 1)))
    elif w.numel():
        lo, hi = torch.aminmax(w)
        shape = [1] * w.dim()
    else:
        return w.new_ones([1] * w.dim())
    top = torch.maximum(hi, lo.neg_())
    denom = cfg.conductance_max_uS if cfg.analog else cfg.max_code
    return top.masked_fill_(top == 0, 1.0).div_(denom).reshape(shape)  # all-zero weights: max|W| taken as 1


def quantize(
    weights: torch.Tensor, cfg: MappingConfig, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed integer codes q (float tensor, integral values) and the scale s, with w ~= s q.

    Analog storage returns the conductance-unit value w / s unrounded. ``out``
    (shaped like ``weights``) receives q instead of a new tensor.
    """
    import torch

    s = weight_scale(weights, cfg)
    q = torch.div(weights.detach(), s, out=out)
    if cfg.analog:
        return q, s
    return q.round_().clamp_(-cfg.max_code, cfg.max_code), s


def dequantize(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return q * s


def straight_through(weights: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, with d value / d weights = identity (straight-through estimator).

    The same as ``weights + (value - weights).detach()`` without its two passes over
    the weights; ``value`` must not need a gradient itself. Without autograd (no
    gradient wanted) ``value`` is returned as is.
    """
    import torch

    if not (weights.requires_grad and torch.is_grad_enabled()):
        return value
    from xbar.mapping.autograd import StraightThrough

    return StraightThrough.apply(weights, value)


def quantize_ste(weights: torch.Tensor, cfg: MappingConfig) -> torch.Tensor:
    """Quantized weights whose gradient passes straight through to ``weights``."""
    if cfg.analog:
        return weights
    q, s = quantize(weights, cfg)
    return straight_through(weights, q.mul_(s))
