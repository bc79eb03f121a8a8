"""Tensors-only state dicts of converted models.

aihwkit's ``state_dict()`` adds, per tile, an ``analog_tile_state`` entry: a dict
holding the pickled RPU config object (with its noise model and device model), a
second copy of the weights, hidden parameters, the tile class name, learning
rate, the ``analog_ctx`` value and the aihwkit version. Loading it needs
``torch.load(weights_only=False)``, i.e. unpickling code objects. xbar's clean
state drops those entries and the ``analog_ctx`` placeholders and renames the
tile tensors to the digital model's keys (``features.0.weight`` in the digital
layer's shape, ``features.0.bias``), so the same file loads into a freshly
converted model and into the digital model; analog-only tensors (a learned input
range, output scales...) keep their names under the layer (``features.0.input_range``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from xbar.checkpoints import check_finite
from xbar.errors import InputError
from xbar.fileio import atomic_torch_save, torch_load_safe
from xbar.tiles.control import xbar_layers

_DROPPED = ("analog_tile_state", "analog_ctx")


def _clean_items(model: nn.Module, keep_vars: bool) -> dict[str, torch.Tensor]:
    layers = {f"{name}.analog_module." if name else "analog_module.": (name, layer) for name, layer in xbar_layers(model)}
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict(keep_vars=keep_vars).items():
        prefix = next((p for p in layers if key.startswith(p)), None)
        if prefix is None:
            if isinstance(value, torch.Tensor):
                out[key] = value
            continue
        name, layer = layers[prefix]
        rest = key[len(prefix):]
        if rest in _DROPPED or not isinstance(value, torch.Tensor):
            continue
        base = f"{name}." if name else ""
        if rest == "tile.weight":
            out[base + "weight"] = value.view(layer.weight_shape)
        else:
            out[base + rest] = value
    return out


def clean_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state as a dict of detached tensor copies, keyed like the digital model."""
    return {k: v.detach().clone() for k, v in _clean_items(model, keep_vars=False).items()}


def load_state_dict(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True, origin: str = "state") -> None:
    """Copy ``state`` (a clean or digital state dict) into ``model`` in place.

    Raises ``InputError`` naming ``origin`` for missing or unexpected keys (if
    ``strict``), non-tensor values and shape mismatches.
    """
    if not isinstance(state, dict):
        raise InputError(f"{origin}: expected a dict of tensors, got {type(state).__name__}")
    with torch.no_grad():
        targets = _clean_items(model, keep_vars=True)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(f"{origin}: {bad[0]}: expected a tensor, got {type(state[bad[0]]).__name__}")
    if strict:
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing {len(missing)} key(s) ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
            if unexpected:
                parts.append(
                    f"unexpected {len(unexpected)} key(s) ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})"
                )
            raise InputError(f"{origin}: does not match the model: {'; '.join(parts)}")
    for key, value in state.items():
        if key not in targets:
            continue
        target = targets[key]
        if target.numel() != value.numel() or (target.dim() == value.dim() and target.shape != value.shape):
            raise InputError(f"{origin}: {key}: shape {tuple(value.shape)}, the model expects {tuple(target.shape)}")
    with torch.no_grad():
        for key, value in state.items():
            if key in targets:
                target = targets[key]
                target.copy_(value.reshape(target.shape).to(device=target.device, dtype=target.dtype))


def save_state(model: nn.Module, path: str | os.PathLike, force: bool = False) -> Path:
    """Write :func:`clean_state_dict` atomically (``torch.load(path, weights_only=True)`` reads it)."""
    state = {k: v.cpu() for k, v in clean_state_dict(model).items()}
    return atomic_torch_save(path, state, force=force)


def read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A tensors-only state dict from ``path``, loaded without unpickling code."""
    p = Path(path)
    state = torch_load_safe(p)
    if isinstance(state, dict) and len(state) == 1:
        (only,) = state.values()
        if isinstance(only, dict):
            state = only  # {"state_dict": {...}} / {"model": {...}}
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise InputError(f"{p}: expected a dict of tensors keyed by parameter name")
    check_finite({k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, p)
    return state


def load_state(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load a tensors-only checkpoint written by :func:`save_state` (or a digital state dict)."""
    load_state_dict(model, read_state(path), strict=strict, origin=str(path))
    return model
