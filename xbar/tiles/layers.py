"""Analog layers whose forward runs native ``F.linear``/``F.conv2d`` on the tile's effective weight.

aihwkit's torch-tile convolution unfolds the input and runs a matmul, which is
slow (most of aihwkit's GPU training cost). When the tile's periphery is
elementwise (see ``xbar.tiles.simulator.elementwise``) the same result comes from
a native convolution with the effective (quantized, noisy, programmed...) weight
and the input/output processing applied to the conv input and output; otherwise
these layers fall back to aihwkit's path. The bias stays digital.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from aihwkit.nn import AnalogConv2d, AnalogLinear

from xbar.tiles.tile import XbarInferenceTile


class XbarLinear(AnalogLinear):
    """``AnalogLinear`` with an ``F.linear`` fast path."""

    def forward(self, x_input: torch.Tensor) -> torch.Tensor:
        tile = self.analog_module
        if isinstance(tile, XbarInferenceTile) and tile.native_supported(conv=False):
            view = tile.get_tensor_view(x_input.dim())
            return tile.native_forward(x_input, F.linear, x_input.dim() - 1, view)
        return tile(x_input)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the digital layer's weight."""
        return (self.out_features, self.in_features)


class XbarConv2d(AnalogConv2d):
    """``AnalogConv2d`` with an ``F.conv2d`` fast path (aihwkit's unfold path otherwise)."""

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        w = weight.reshape(self.out_channels, self.in_channels, *self.kernel_size)
        return F.conv2d(x, w, bias, self.stride, self.padding, self.dilation)

    def forward(self, x_input: torch.Tensor) -> torch.Tensor:
        tile = self.analog_module
        if isinstance(tile, XbarInferenceTile) and tile.native_supported(conv=True):
            return tile.native_forward(x_input, self._conv, x_input.dim() - 3, (-1, 1, 1))
        return self.unfold_forward(x_input)

    def unfold_forward(self, x_input: torch.Tensor) -> torch.Tensor:
        """aihwkit's own path (unfold + tile matmul), kept for non-elementwise peripheries and tests."""
        return AnalogConv2d.forward(self, x_input)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels, *self.kernel_size)
