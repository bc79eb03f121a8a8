"""Quantization in the training forward, as in TRICE's set-ups (Sec. IV-B to IV-D).

Weights: H-bit through the preset's ``[mapping].weight_bits`` (``DeviceModel.target``,
TRICE Eq. 11, with a straight-through gradient in training); ``xbar train`` sets H to TRICE's value per
network (4 bits for LeNet, 6 for VGG-8 and ResNet-18, :func:`default_weight_bits`)
unless told otherwise.
Activations: the outputs of every ``nn.ReLU`` quantized to ``bits`` bits by a
forward hook (4 bits for LeNet, 6 for VGG-8 and ResNet-18 in TRICE):

    s = max(a) / (2^bits - 1)   per sample,   a_q = s * round(a / s),

with a straight-through gradient. The scale is per sample (not per batch), so an
input's output does not depend on the rest of its batch. Hooks hold no state, so
state dicts are those of the plain model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xbar.mapping.quantize import straight_through

if TYPE_CHECKING:  # torch is imported where tensors are made: presets load without it
    import torch
    from torch import nn
    from torch.utils.hooks import RemovableHandle

#: TRICE's activation bits per network (Sec. IV-C: LeNet 4 bits; IV-D: VGG-8, ResNet-18 6 bits).
TRICE_ACTIVATION_BITS = {"lenet": 4, "vgg8": 6, "resnet18": 6}
#: TRICE's weight bits H per network (Sec. IV-B: 4-bit LeNet, 6-bit VGG-8 and ResNet-18).
TRICE_WEIGHT_BITS = {"lenet": 4, "vgg8": 6, "resnet18": 6}


def quantize_activation(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned ``bits``-bit quantization of non-negative activations, per sample, straight-through.

    One new tensor and three in-place passes; the gradient passes straight through
    (:func:`straight_through`), so a Monte Carlo study, which needs none, pays
    nothing for it.
    """
    if bits <= 0:
        return x
    import torch

    levels = 2**bits - 1
    dims = tuple(range(1, x.dim())) if x.dim() > 1 else (0,)
    xd = x.detach()
    s = xd.amax(dim=dims, keepdim=True).clamp_(min=1e-12).div_(levels)
    q = torch.div(xd, s).round_().clamp_(0, levels).mul_(s)
    return straight_through(x, q)


class ActivationQuantizer:
    """Forward hook of :func:`quantize_activations`: the module's output through
    :func:`quantize_activation`.

    Non-decreasing in each element with the sample's maximum as scale, so it commutes
    with max pooling windows that tile the map (``xbar.evaluation.rewrites`` relies on
    that to quantize after the pool).
    """

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def __call__(self, module: nn.Module, inputs, output):
        return quantize_activation(output, self.bits)


def quantize_activations(model: nn.Module, bits: int | None) -> list[RemovableHandle]:
    """Quantize every ``nn.ReLU`` output of ``model`` to ``bits`` bits; returns the hook handles.

    ``bits`` None or 0 does nothing. Remove with ``for h in handles: h.remove()``.
    """
    from torch import nn

    if not bits:
        return []
    if bits < 1 or bits > 16:
        raise ValueError(f"activation bits = {bits}: expected 1 to 16 (or 0 for none)")
    return [m.register_forward_hook(ActivationQuantizer(int(bits))) for m in model.modules() if isinstance(m, nn.ReLU)]


def default_activation_bits(model_name: str) -> int:
    """TRICE's activation bits for its networks, 0 (none) for the others."""
    return TRICE_ACTIVATION_BITS.get(model_name, 0)


def default_weight_bits(model_name: str, preset_bits: int) -> int:
    """TRICE's weight bits H for its networks, else ``preset_bits`` (the preset's own).

    An analog preset (``preset_bits`` 0, no quantization) stays analog: TRICE's H
    describes multi-level storage, not a property of the network.
    """
    if preset_bits == 0:
        return 0
    return TRICE_WEIGHT_BITS.get(model_name, preset_bits)
