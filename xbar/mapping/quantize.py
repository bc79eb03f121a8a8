"""H-bit weight quantization with a per-tensor or per-output-channel scale (TRICE Eq. 11)."""

from __future__ import annotations

import torch

from xbar.mapping.config import MappingConfig


def weight_scale(weights: torch.Tensor, cfg: MappingConfig) -> torch.Tensor:
    """The weight value of one integer step: max|W| / max_code (TRICE Eq. 11).

    For analog storage it is the weight per conductance unit, max|W| / g_max.
    Returned with as many dimensions as ``weights`` (``[out, 1, ...]`` per channel,
    ``[1, 1, ...]`` per tensor), so that ``recombine`` can tell the weight dimensions apart.
    """
    w = weights.detach()
    if cfg.scale == "per-channel" and w.dim() > 1:
        top = w.abs().reshape(w.shape[0], -1).amax(dim=1).reshape(-1, *([1] * (w.dim() - 1)))
    else:
        top = w.abs().amax().reshape([1] * w.dim())
    top = torch.where(top > 0, top, torch.ones_like(top))
    denom = cfg.conductance_max_uS if cfg.analog else cfg.max_code
    return top / denom


def quantize(weights: torch.Tensor, cfg: MappingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed integer codes q (float tensor, integral values) and the scale s, with w ~= s q.

    Analog storage returns the conductance-unit value w / s unrounded.
    """
    s = weight_scale(weights, cfg)
    q = weights.detach() / s
    if cfg.analog:
        return q, s
    q = torch.round(q).clamp_(-cfg.max_code, cfg.max_code)
    return q, s


def dequantize(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return q * s


def quantize_ste(weights: torch.Tensor, cfg: MappingConfig) -> torch.Tensor:
    """Quantized weights whose gradient passes straight through to ``weights``."""
    if cfg.analog:
        return weights
    q, s = quantize(weights, cfg)
    return weights + (q * s - weights).detach()
