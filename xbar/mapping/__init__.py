"""Weights <-> device levels: quantization, sign handling, bit slicing, tiling.

Implements the H-bit weight / B-bit device mapping of TRICE (Yan et al.),
Eq. 11-14, plus the crossbar tiling geometry.
"""

from xbar.mapping.config import MappingConfig
from xbar.mapping.quantize import dequantize, quantize, quantize_ste, straight_through, weight_scale
from xbar.mapping.slicing import DeviceLevels, recombine, slice_weights
from xbar.mapping.tiling import TileGrid, crossbar_matrix, from_crossbar_matrix, tile_grid

__all__ = [
    "MappingConfig",
    "DeviceLevels",
    "TileGrid",
    "crossbar_matrix",
    "dequantize",
    "from_crossbar_matrix",
    "quantize",
    "quantize_ste",
    "recombine",
    "slice_weights",
    "straight_through",
    "tile_grid",
    "weight_scale",
]
