"""Training checkpoints made of plain tensors and numbers (``torch.load(..., weights_only=True)``).

A checkpoint never pickles code objects: model states keep only their tensor
entries (an aihwkit model's ``analog_tile_state`` holds pickled configs, rebuilt
from the preset on resume instead), optimizer states are torch's own plain
dicts, and random-number states are byte tensors.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xbar.errors import InputError
from xbar.fileio import atomic_torch_save, remove_stale_temps, torch_load_safe

FORMAT = "xbar-train-checkpoint"
#: 2: the trainer state holds the learning-rate schedulers' state (torch schedulers). Version 1
#: (rates computed from the epoch) still resumes: the schedulers are replayed to its epoch.
VERSION = 2
READABLE = (1, 2)


def _analog(module: nn.Module) -> bool:
    from xbar.training.params import is_analog

    return is_analog(module)


def tensor_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The tensor entries of ``module.state_dict()``, detached copies.

    For a converted model, ``xbar.tiles.clean_state_dict`` (the same tensors, keyed
    like the digital model, without aihwkit's pickled tile states).
    """
    if _analog(module):
        from xbar import tiles

        return tiles.clean_state_dict(module)
    return {k: v.detach().clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


def load_tensors(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy saved tensors into the module's parameters and buffers, by name and in place."""
    if _analog(module):
        from xbar import tiles

        tiles.load_state_dict(module, state, strict=True, origin="checkpoint")
        return
    live = dict(module.named_parameters())
    live.update(dict(module.named_buffers()))
    current = module.state_dict(keep_vars=True)
    with torch.no_grad():
        for key, value in state.items():
            target = live.get(key, current.get(key))
            if not isinstance(target, torch.Tensor):
                raise InputError(f"checkpoint: {key}: no such tensor in the model")
            if target.shape != value.shape:
                raise InputError(
                    f"checkpoint: {key}: shape {tuple(value.shape)} does not match the model's {tuple(target.shape)}"
                )
            target.copy_(value)


def rng_state() -> dict[str, Any]:
    """Global random states (torch CPU/CUDA, numpy, python) as tensors and numbers."""
    np_state = np.random.get_state()
    py = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "python": torch.tensor(py[1], dtype=torch.int64),
        "python_version": int(py[0]),
        "python_gauss": py[2] if py[2] is None else float(py[2]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate((state["python_version"], tuple(int(x) for x in state["python"].tolist()), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus format tag) atomically, replacing an older checkpoint; a temporary file
    left by a write that was killed is removed (one run writes a run directory's checkpoint)."""
    remove_stale_temps(path)
    return atomic_torch_save(path, {"format": FORMAT, "version": VERSION, **state}, force=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; InputError if it is not one of ours. A resume
    removes the temporary file a killed checkpoint write left behind."""
    p = Path(path)
    remove_stale_temps(p)
    data = torch_load_safe(p, map_location, missing="no checkpoint to resume from")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{p}: format = {data.get('format') if isinstance(data, dict) else None!r}: expected {FORMAT!r}")
    if data.get("version") not in READABLE:
        raise InputError(f"{p}: version = {data.get('version')!r}: expected one of {', '.join(map(str, READABLE))}")
    return data
