"""Loading a trained model for a study: an ``xbar train`` run directory or a plain state dict.

``load_model(path)`` accepts

(a) a run directory (or its ``manifest.json`` / ``model.pt``): the manifest names the
    model (any model spec, with its source file's SHA-256), data set, input shape and
    preset; ``model.pt`` is a dict of tensors;
(b) the ``NAME.pt`` / ``NAME.json`` pair ``xbar convert --out NAME.pt`` writes;
(c) a plain PyTorch state-dict file plus ``model_name`` (and ``dataset`` for the input
    shape; without it the model's natural input is assumed).

Only the Python code the manifest or the user names is imported to build the network.

Files are always read with ``torch.load(..., weights_only=True)``: a checkpoint from a
stranger never executes code. Every problem is an ``InputError`` naming the file.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xbar.data.registry import SHAPES as DATA_SHAPES
from xbar.errors import InputError
from xbar.fileio import torch_load_safe

__all__ = ["DATA_SHAPES", "MANIFEST", "MODEL_FILE", "SourceChangedWarning", "load_model", "read_state_dict",
           "read_manifest"]

MANIFEST, MODEL_FILE = "manifest.json", "model.pt"
#: ``format`` of the manifest ``xbar convert --out`` writes next to its state file.
CONVERT_FORMAT = "xbar-converted-model"
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


class SourceChangedWarning(UserWarning):
    """The Python file a run's model was built from changed since the run was recorded."""


def _convert_manifest(p: Path) -> dict[str, Any] | None:
    """The manifest ``xbar convert --out`` wrote (``p`` itself or ``p`` with a .json suffix), or None."""
    path = p if p.suffix == ".json" else p.with_suffix(".json")
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if p.suffix == ".json":
            raise InputError(f"{path}: not a readable JSON manifest ({exc})") from None
        return None
    if not isinstance(data, dict) or data.get("format") != CONVERT_FORMAT:
        if p.suffix == ".json" and p.name != MANIFEST:
            raise InputError(f"{path}: format = {data.get('format') if isinstance(data, dict) else None!r}: "
                             f"expected {CONVERT_FORMAT!r} (a manifest written by xbar convert --out)")
        return None
    if not isinstance(data.get("model"), str) or not isinstance(data.get("state_file"), str):
        raise InputError(f"{path}: model and state_file: expected strings (a manifest written by xbar convert --out)")
    sizes = data.get("model_options") if isinstance(data.get("model_options"), dict) else {}
    return {
        **{k: sizes.get(k) for k in ("in_channels", "num_classes", "image_size")},
        "model": data["model"],
        "model_spec": data.get("model_spec"),
        "model_options": {k: v for k, v in sizes.items() if k not in ("in_channels", "num_classes", "image_size")},
        "data": data.get("data"),
        "preset": data["preset"].get("name") if isinstance(data.get("preset"), dict) else None,
        "preset_spec": data.get("preset") if isinstance(data.get("preset"), dict) else None,
        "weights": path.parent / data["state_file"],
        "path": path,
    }


def load_model(
    path: str | os.PathLike,
    model_name: str | None = None,
    dataset: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model (eval mode, CPU) and ``info``: model, data, shapes, preset, seed, manifest.

    ``path`` is an ``xbar train`` run directory (or its ``manifest.json``), the ``.pt`` or
    ``.json`` of ``xbar convert --out``, or a plain state-dict file. ``model_name``
    (any model spec, see ``xbar.models.resolve``) and ``dataset`` override the manifest's
    (for a plain state dict they are how the network is known). A model built from the
    user's Python file whose SHA-256 differs from the recorded one gives a
    :class:`SourceChangedWarning` (the weights must still fit it). ``info["preset"]`` is
    the run's preset name (or None) and ``info["preset_spec"]`` its full description.
    """
    from xbar import models
    from xbar.data import shape_of

    p = Path(path)
    manifest: dict[str, Any] | None = None
    convert = _convert_manifest(p) if p.suffix in (".json", ".pt", ".pth") and p.name != MANIFEST else None
    if p.is_dir():
        manifest = read_manifest(p / MANIFEST)
        weights = p / MODEL_FILE
        if not weights.is_file():
            raise InputError(f"{p}: no {MODEL_FILE}; the run has not finished (or is not an xbar train run)")
    elif p.name == MANIFEST:
        manifest = read_manifest(p)
        weights = p.parent / MODEL_FILE
    elif convert is not None:
        manifest, weights = convert, convert["weights"]
    else:
        weights = p
        if (p.parent / MANIFEST).is_file() and model_name is None:
            manifest = read_manifest(p.parent / MANIFEST)
    if not p.exists():
        raise InputError(f"{p}: no such checkpoint file or run directory")
    name = model_name or (manifest or {}).get("model")
    if not name:
        raise InputError(f"{p}: a plain state dict needs --model SPEC (one of {', '.join(models.names())}, "
                         "torchvision:NAME, FILE.py:FACTORY or package.module:FACTORY)")
    record = (manifest or {}).get("model_spec") if model_name is None else None
    source = models.ModelSource.from_record(name, record, (manifest or {}).get("model_options"))
    changed = source.changed(record)
    if changed:
        warnings.warn(f"{changed}; the weights still load if the layers are the same", SourceChangedWarning,
                      stacklevel=2)
    data = dataset or (manifest or {}).get("data")
    if manifest is not None and (dataset is None or dataset == manifest.get("data")):
        shape = (manifest.get("in_channels"), manifest.get("num_classes"), manifest.get("image_size"))
    elif data is not None:
        shape = shape_of(data)
    else:
        shape = (None, None, None)
    if source.zoo_name and None in shape:
        s = models.spec(source.zoo_name)
        shape = tuple(v if v is not None else d for v, d in zip(shape, (s.in_channels, s.num_classes, s.image_size)))
    try:
        model = source.build(*shape)
    except InputError as exc:
        if (record or {}).get("kind") == "instance":  # trained from a Python object: rebuilt from its class
            raise InputError(f"{exc}; the run's model was an instance of {source.factory}, rebuilt by calling its "
                             "class: pass --model SPEC (model_name=) naming a factory for it") from None
        raise
    except (ValueError, TypeError) as exc:  # TypeError: a model option the network does not take
        raise InputError(f"{p}: cannot build model {name!r} for input {shape}: {exc}") from None
    state = read_state_dict(weights)
    _load_into(model, state, str(weights), source.spec)
    model.eval()
    info: dict[str, Any] = {
        "path": str(p),
        "weights": str(weights),
        "model": source.spec,
        "data": data,
        "in_channels": shape[0],
        "num_classes": shape[1],
        "image_size": shape[2],
        "preset": (manifest or {}).get("preset"),
        "preset_spec": (manifest or {}).get("preset_spec"),
        "seed": (manifest or {}).get("seed", 0),
        "act_bits": (manifest or {}).get("act_bits"),
        "data_spec": (manifest or {}).get("data_spec") if data == (manifest or {}).get("data") else None,
        "manifest": manifest,
    }
    return model, info
