"""Loading a trained model for a study: an ``xbar train`` run directory or a plain state dict.

``load_model(path)`` accepts

(a) a run directory (or its ``manifest.json`` / ``model.pt``): the manifest names the
    model, data set, input shape and preset; ``model.pt`` is a dict of tensors;
(b) a plain PyTorch state-dict file plus ``model_name`` (and ``dataset`` for the input
    shape; without it the model's natural input is assumed).

Files are always read with ``torch.load(..., weights_only=True)``: a checkpoint from a
stranger never executes code. Every problem is an ``InputError`` naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xbar.errors import InputError
from xbar.fileio import torch_load_safe

__all__ = ["DATA_SHAPES", "MANIFEST", "MODEL_FILE", "load_model", "read_state_dict", "read_manifest"]

MANIFEST, MODEL_FILE = "manifest.json", "model.pt"
#: (in_channels, num_classes, image_size) of the known data sets.
DATA_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist5k": (1, 10, 28),
    "mnist": (1, 10, 28),
    "digits": (1, 10, 8),
    "cifar10": (3, 10, 32),
    "cifar100": (3, 100, 32),
}
_REQUIRED = ("model", "data", "in_channels", "num_classes", "image_size")


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON manifest of a run directory, with its required keys checked."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: no such manifest") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: expected a JSON object with keys {', '.join(_REQUIRED)}")
    for key in _REQUIRED:
        if key not in data:
            raise InputError(f"{p}: {key}: missing; a run manifest needs {', '.join(_REQUIRED)}")
    if not isinstance(data["model"], str) or not isinstance(data["data"], str):
        raise InputError(f"{p}: model and data: expected names (strings)")
    for key in ("in_channels", "num_classes", "image_size"):
        v = data[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{p}: {key} = {v!r}: expected a positive integer")
    for key, ok, expected in _OPTIONAL:
        if data.get(key) is not None and not ok(data[key]):
            raise InputError(f"{p}: {key} = {data[key]!r}: expected {expected}")
    return data


def _int_in(lo: int, hi: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


#: Optional manifest keys the studies read: (key, check, what is expected); null means absent.
_OPTIONAL = (
    ("model_options", lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
     "an object of model keyword arguments"),
    ("seed", _int_in(0, 2**63 - 1), "a non-negative integer"),
    ("act_bits", _int_in(0, 16), "an integer from 0 to 16 (activation bits)"),
    ("preset", lambda v: isinstance(v, str), "a preset name (string)"),
    ("preset_spec", lambda v: isinstance(v, dict), "a preset table (object)"),
)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A dict of tensors from ``path`` (``weights_only=True``); nested ``state_dict``/``model`` entries are unwrapped."""
    p = Path(path)
    obj = torch_load_safe(p)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{p}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(f"{p}: holds no tensors; expected a state dict")
    check_finite(tensors, p)
    return tensors


def check_finite(state: dict[str, torch.Tensor], where: str | os.PathLike) -> None:
    """InputError naming the first floating-point tensor with a NaN or infinite entry."""
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise InputError(f"{where}: {k}: holds NaN or infinite values; expected finite weights")


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], where: str, name: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise InputError(
            f"{where}: the state dict does not fit model {name!r} ({what}; {len(missing)} missing, "
            f"{len(unexpected)} unexpected keys)"
        )
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise InputError(
                f"{where}: {k}: shape {tuple(state[k].shape)} does not fit model {name!r} ({tuple(v.shape)}); "
                "wrong --model or --data?"
            )
    model.load_state_dict(state)


def load_model(
    path: str | os.PathLike,
    model_name: str | None = None,
    dataset: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model (eval mode, CPU) and ``info``: model, data, shapes, preset, seed, manifest.

    ``model_name``/``dataset`` override the manifest's (for a plain state dict they are
    how the network is known). ``info["preset"]`` is the run's preset name (or None) and
    ``info["preset_spec"]`` its full description when the manifest has one.
    """
    from xbar import models

    p = Path(path)
    manifest: dict[str, Any] | None = None
    if p.is_dir():
        manifest = read_manifest(p / MANIFEST)
        weights = p / MODEL_FILE
        if not weights.is_file():
            raise InputError(f"{p}: no {MODEL_FILE}; the run has not finished (or is not an xbar train run)")
    elif p.name == MANIFEST:
        manifest = read_manifest(p)
        weights = p.parent / MODEL_FILE
    else:
        weights = p
        if (p.parent / MANIFEST).is_file() and model_name is None:
            manifest = read_manifest(p.parent / MANIFEST)
    if not p.exists():
        raise InputError(f"{p}: no such checkpoint file or run directory")
    name = model_name or (manifest or {}).get("model")
    if not name:
        raise InputError(f"{p}: a plain state dict needs --model NAME (one of {', '.join(models.names())})")
    data = dataset or (manifest or {}).get("data")
    if manifest is not None and (dataset is None or dataset == manifest.get("data")):
        shape = (manifest["in_channels"], manifest["num_classes"], manifest["image_size"])
    elif data is not None:
        if data not in DATA_SHAPES:
            raise InputError(f"dataset {data!r}: expected one of {', '.join(DATA_SHAPES)}")
        shape = DATA_SHAPES[data]
    else:
        s = models.spec(name)
        shape = (s.in_channels, s.num_classes, s.image_size)
    options = (manifest or {}).get("model_options") or {}
    options = {k: v for k, v in options.items() if k not in ("in_channels", "num_classes", "image_size")}
    try:
        model = models.build(name, in_channels=shape[0], num_classes=shape[1], image_size=shape[2], **options)
    except InputError:
        raise
    except (ValueError, TypeError) as exc:  # TypeError: a model option the network does not take
        raise InputError(f"{p}: cannot build model {name!r} for input {shape}: {exc}") from None
    state = read_state_dict(weights)
    _load_into(model, state, str(weights), name)
    model.eval()
    info: dict[str, Any] = {
        "path": str(p),
        "weights": str(weights),
        "model": name,
        "data": data,
        "in_channels": shape[0],
        "num_classes": shape[1],
        "image_size": shape[2],
        "preset": (manifest or {}).get("preset"),
        "preset_spec": (manifest or {}).get("preset_spec"),
        "seed": (manifest or {}).get("seed", 0),
        "act_bits": (manifest or {}).get("act_bits"),
        "manifest": manifest,
    }
    return model, info
