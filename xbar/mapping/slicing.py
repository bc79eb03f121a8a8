"""Bit slicing of integer weight codes into B-bit devices and exact recombination.

TRICE Eq. 12 splits the H-bit magnitude into H/B device levels
g_i = sum_j h_{iB+j} 2^j; Eq. 14 recombines programmed levels with weights 2^(iB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from xbar.mapping.config import MappingConfig
from xbar.mapping.quantize import quantize

if TYPE_CHECKING:  # torch is imported where tensors are made: presets load without it
    import torch


@dataclass
class DeviceLevels:
    """Target levels of every device of a weight tensor.

    ``levels`` has shape ``[planes, slices, *weights.shape]`` (float, level units);
    ``scale`` is the weight value of one level step of slice 0.
    """

    levels: torch.Tensor
    scale: torch.Tensor
    cfg: MappingConfig

    @property
    def shape(self) -> torch.Size:
        return self.levels.shape[2:]


def slice_codes(q: torch.Tensor, cfg: MappingConfig) -> torch.Tensor:
    """Levels ``[planes, slices, *q.shape]`` of integer codes q (Eq. 12, sign per cfg.sign)."""
    import torch

    if cfg.analog:
        return torch.stack([q.clamp(min=0), (-q).clamp(min=0)]).unsqueeze(1)
    if cfg.sign == "offset":
        planes = [(q + 2 ** (cfg.weight_bits - 1)).to(torch.int64)]
    elif cfg.sign == "differential":
        planes = [q.clamp(min=0).to(torch.int64), (-q).clamp(min=0).to(torch.int64)]
    else:
        planes = [q.abs().to(torch.int64)]
    mask = cfg.levels - 1
    out = []
    for code in planes:
        out.append(torch.stack([(code >> (i * cfg.bits_per_device)) & mask for i in range(cfg.slices)]))
    return torch.stack(out).to(q.dtype)


def slice_weights(weights: torch.Tensor, cfg: MappingConfig) -> DeviceLevels:
    """Quantize ``weights`` and slice them into device levels."""
    q, s = quantize(weights, cfg)
    return DeviceLevels(slice_codes(q, cfg), s, cfg)


def recombine(levels: torch.Tensor, sign: torch.Tensor | None, scale: torch.Tensor, cfg: MappingConfig) -> torch.Tensor:
    """Weights from (possibly noisy) device levels, TRICE Eq. 14.

    ``levels`` has shape ``[..., planes, slices, *w]``; leading dimensions (Monte
    Carlo instances) broadcast. ``sign`` is the digital sign of each weight for
    ``magnitude`` mapping (ignored otherwise). Exact when the levels are noise-free.
    """
    import torch

    nd = scale.dim()  # weight dimensions (weight_scale keeps them all)
    # levels [..., P, S, *w]; bring P and S to dims -nd-2 and -nd-1 of the weight layout
    gains = torch.tensor(cfg.slice_gains(), dtype=levels.dtype, device=levels.device)
    gains = gains.reshape(-1, *([1] * nd))
    signs = torch.tensor([1.0, -1.0] if cfg.planes == 2 else [1.0], dtype=levels.dtype, device=levels.device)
    signs = signs.reshape(-1, *([1] * nd))
    mag = (levels * gains).sum(dim=-nd - 1)  # [..., P, *w]
    value = (mag * signs).sum(dim=-nd - 1)  # [..., *w]
    if cfg.sign == "offset":
        value = value - 2 ** (cfg.weight_bits - 1)
    elif cfg.sign == "magnitude" and not cfg.analog:
        value = value * sign
    return value * scale


def level_sign(weights: torch.Tensor) -> torch.Tensor:
    """Digital sign used by ``magnitude`` mapping (zeros count as +): 1 - 2 [w < 0]."""
    import torch

    w = weights.detach()
    return torch.lt(w, 0, out=torch.empty_like(w)).mul_(-2.0).add_(1.0)
