"""The aihwkit integration: xbar presets as aihwkit analog tiles.

``convert(model, preset)`` replaces Linear/Conv2d layers by analog layers whose
tiles (:class:`XbarInferenceTile`, configured by :class:`XbarRPUConfig`) take
their noise from the preset's device model: injected in training forwards,
programmed by aihwkit's ``program_analog_weights()``, drifted by
``drift_analog_weights(t)``. State dicts of converted models are plain tensors
(:func:`save_state`/:func:`load_state`); :func:`tile_map` reports the crossbar tiling.
"""

from xbar.tiles.config import XbarRPUConfig, periphery
from xbar.tiles.control import (
    effective_weights,
    get_injection,
    injection_disabled,
    is_programmed,
    noisy_parameters,
    reset_programming,
    set_injection,
    xbar_layers,
    xbar_tiles,
)
from xbar.tiles.convert import convert, to_digital
from xbar.tiles.converter import BitSlicingConverter
from xbar.tiles.layers import XbarConv2d, XbarLinear
from xbar.tiles.noise_model import XbarNoiseModel
from xbar.tiles.simulator import Injection, XbarSimulatorTile
from xbar.tiles.state import clean_state_dict, load_state, load_state_dict, read_state, save_state
from xbar.tiles.tile import XbarInferenceTile
from xbar.tiles.tilemap import format_tile_map, tile_map, tile_map_totals

__all__ = [
    "BitSlicingConverter",
    "Injection",
    "XbarConv2d",
    "XbarInferenceTile",
    "XbarLinear",
    "XbarNoiseModel",
    "XbarRPUConfig",
    "XbarSimulatorTile",
    "clean_state_dict",
    "convert",
    "to_digital",
    "effective_weights",
    "format_tile_map",
    "get_injection",
    "injection_disabled",
    "is_programmed",
    "load_state",
    "load_state_dict",
    "noisy_parameters",
    "periphery",
    "read_state",
    "reset_programming",
    "save_state",
    "set_injection",
    "tile_map",
    "tile_map_totals",
    "xbar_layers",
    "xbar_tiles",
]
