"""Weights <-> device levels: quantization, sign handling, bit slicing, tiling.

Implements the H-bit weight / B-bit device mapping of TRICE (Yan et al.),
Eq. 11-14, TRICE's activation quantization (Sec. IV), plus the crossbar tiling geometry.
"""

from xbar.mapping.activations import (
    ActivationQuantizer,
    default_activation_bits,
    default_weight_bits,
    quantize_activation,
    quantize_activations,
)
from xbar.mapping.config import MappingConfig
from xbar.mapping.quantize import dequantize, quantize, quantize_ste, straight_through, weight_scale
from xbar.mapping.slicing import DeviceLevels, recombine, slice_weights
from xbar.mapping.tiling import TileGrid, crossbar_matrix, from_crossbar_matrix, tile_grid

__all__ = [
    "ActivationQuantizer",
    "MappingConfig",
    "DeviceLevels",
    "TileGrid",
    "crossbar_matrix",
    "default_activation_bits",
    "default_weight_bits",
    "dequantize",
    "from_crossbar_matrix",
    "quantize",
    "quantize_activation",
    "quantize_activations",
    "quantize_ste",
    "recombine",
    "slice_weights",
    "straight_through",
    "tile_grid",
    "weight_scale",
]
