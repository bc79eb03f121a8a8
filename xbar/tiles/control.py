"""Model-wide handles on converted models: injection settings, programming reset, parameter lists."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn

from xbar.devices import DeviceModel, NoiseFamily
from xbar.tiles.layers import XbarConv2d, XbarLinear
from xbar.tiles.simulator import Injection
from xbar.tiles.tile import XbarInferenceTile


def xbar_layers(model: nn.Module) -> list[tuple[str, XbarLinear | XbarConv2d]]:
    """``(name, layer)`` of every xbar analog layer, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, XbarLinear | XbarConv2d)]


def xbar_tiles(model: nn.Module) -> list[XbarInferenceTile]:
    return [m for m in model.modules() if isinstance(m, XbarInferenceTile)]


def _family(family: NoiseFamily | str | None) -> NoiseFamily | None:
    if family is None or isinstance(family, NoiseFamily):
        return family
    return NoiseFamily(kind=str(family))


def set_injection(
    model: nn.Module,
    enabled: bool = True,
    family: NoiseFamily | str | None = None,
    sigma_scale: float = 1.0,
) -> None:
    """Set training-time noise injection of every xbar tile of ``model``.

    ``family`` None uses each preset's injection family (a string names a family
    with the default threshold); ``sigma_scale`` multiplies the device sigma
    (TRICE's sigma_t = sigma_scale * sigma_d).
    """
    if sigma_scale < 0:
        raise ValueError(f"sigma_scale = {sigma_scale}: expected >= 0")
    inj = Injection(enabled=bool(enabled), family=_family(family), sigma_scale=float(sigma_scale))
    for tile in xbar_tiles(model):
        tile.tile.injection = replace(inj)


def get_injection(model: nn.Module) -> list[Injection]:
    """The injection settings of each xbar tile."""
    return [replace(t.tile.injection) for t in xbar_tiles(model)]


@contextmanager
def injection_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Turn noise injection off inside the block (clean training forwards); restores the settings."""
    tiles = xbar_tiles(model)
    saved = [t.tile.injection for t in tiles]
    try:
        for t, inj in zip(tiles, saved):
            t.tile.injection = replace(inj, enabled=False)
        yield model
    finally:
        for t, inj in zip(tiles, saved):
            t.tile.injection = inj


def reset_programming(model: nn.Module) -> None:
    """Forget programmed/drifted weights: evaluation uses the clean quantized weights again."""
    for tile in xbar_tiles(model):
        tile.reset_programming()


def is_programmed(model: nn.Module) -> bool:
    """Whether any xbar tile holds programmed weights."""
    return any(t.is_programmed for t in xbar_tiles(model))


def noisy_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter, DeviceModel]]:
    """``(name, clean weight Parameter, DeviceModel)`` of every analog layer.

    The Parameter is the tile's ``[out, in]`` (conv: ``[out, in*kh*kw]``) clean
    weight that optimizers update; ``name`` is the digital model's key
    (``"features.0.weight"``). The device model gives its noise
    (``inject_noise``, ``weight_std``, ``program``...).
    """
    out = []
    for name, layer in xbar_layers(model):
        tile = layer.analog_module
        out.append((f"{name}.weight" if name else "weight", tile.tile.weight, tile.tile.device_model))
    return out


def effective_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight each analog layer evaluates with now, in the digital layer's shape.

    Programmed/drifted weights (times the drift compensation) after
    ``program_analog_weights()``/``drift_analog_weights(t)``, else the clean
    quantized weights; detached copies, keyed like :func:`noisy_parameters`.
    """
    out = {}
    for name, layer in xbar_layers(model):
        w = layer.analog_module.eval_weight()
        out[f"{name}.weight" if name else "weight"] = w.reshape(layer.weight_shape)
    return out
