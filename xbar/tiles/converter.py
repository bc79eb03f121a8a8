"""Bit-slicing conductance converter: weights <-> per-device levels (aihwkit converter API).

aihwkit's converters (``inference/converter``) map a weight onto one or a few
analog conductance pairs. A bit-sliced crossbar stores an H-bit weight on H/B
devices of B bits per sign plane (TRICE Eq. 11-14); this converter does that
with :mod:`xbar.mapping`, so aihwkit-style code can see the device levels.
"""

from __future__ import annotations

from typing import Any

import torch
from aihwkit.inference.converter.base import BaseConductanceConverter

from xbar.mapping import MappingConfig, recombine, slice_weights
from xbar.mapping.slicing import level_sign


class BitSlicingConverter(BaseConductanceConverter):
    """Weights -> device levels ``[plane][slice]`` (level units; uS for analog storage) and back.

    ``convert_to_conductances`` returns a flat list of ``planes * slices`` tensors
    shaped like the weights (plane-major, slice 0 = least significant) and the
    parameters (scale, digital sign) needed by ``convert_back_to_weights``, which
    recombines with Eq. 14 and is exact for noise-free levels.
    """

    def __init__(self, mapping: MappingConfig | None = None) -> None:
        self.mapping = mapping or MappingConfig()

    def __str__(self) -> str:
        m = self.mapping
        if m.analog:
            return f"BitSlicingConverter(analog, g_max={m.conductance_max_uS:g} uS, sign={m.sign})"
        return f"BitSlicingConverter(H={m.weight_bits}, B={m.bits_per_device}, sign={m.sign})"

    @torch.no_grad()
    def convert_to_conductances(self, weights: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, Any]]:
        lv = slice_weights(weights.detach(), self.mapping)
        planes, slices = lv.levels.shape[:2]
        levels = [lv.levels[p, i] for p in range(planes) for i in range(slices)]
        return levels, {"scale": lv.scale, "sign": level_sign(weights.detach()), "shape": (planes, slices)}

    @torch.no_grad()
    def convert_back_to_weights(self, conductances: list[torch.Tensor], params: dict[str, Any]) -> torch.Tensor:
        planes, slices = params["shape"]
        if len(conductances) != planes * slices:
            raise ValueError(f"expected {planes * slices} device tensors (planes x slices), got {len(conductances)}")
        levels = torch.stack(list(conductances)).reshape(planes, slices, *conductances[0].shape)
        return recombine(levels, params["sign"], params["scale"], self.mapping)
