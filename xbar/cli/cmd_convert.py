"""``xbar convert``: build a model (any model spec), convert it to xbar tiles, print the tile map, save the state."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from xbar.cli.common import add_preset_overrides, emit, positive_int, preset_with_overrides
from xbar.errors import InputError

MANIFEST_VERSION = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a model to analog tiles of a preset and print its crossbar tile map",
        description="Build MODEL - a zoo name, torchvision:NAME, FILE.py:FACTORY or package.module:FACTORY - "
        "(optionally loading a tensors-only checkpoint), "
        "convert its Linear/Conv2d layers to xbar analog tiles of PRESET, print the tile map and "
        "optionally save the converted state (tensors only) plus a JSON manifest.",
    )
    p.add_argument("target", nargs="?", metavar="MODEL_OR_CHECKPOINT", help="model spec, a checkpoint file (then --model names the model unless a manifest lies next to it) or an `xbar train` run directory")
    p.add_argument("--model", metavar="SPEC", help="model: a zoo name (lenet, mlp, cnn6, vgg8, resnet18, ...), "
                   "torchvision:NAME, FILE.py:FACTORY or package.module:FACTORY")
    p.add_argument("--data", metavar="SPEC", help="take in_channels, num_classes and image_size from this data set "
                   "(name, npz:FILE or imagefolder:DIR) and record it for xbar eval")
    p.add_argument("--checkpoint", help="tensors-only state dict to load into the model before converting")
    p.add_argument("--preset", required=True, help="shipped preset name or preset TOML file")
    add_preset_overrides(p)
    p.add_argument("--in-channels", type=positive_int, help="input channels (default: --data's, else the model's natural input)")
    p.add_argument("--num-classes", type=positive_int, help="number of classes (default: the model's)")
    p.add_argument("--image-size", type=positive_int, help="input image side in pixels (default: the model's)")
    p.add_argument("--out", help="write the converted state here (.pt) and its manifest next to it (.json)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--json", action="store_true", help="print the machine-readable result on stdout")
    p.set_defaults(func=run)


def _resolve(args: argparse.Namespace) -> tuple[str, str | None, dict[str, Any]]:
    model, checkpoint, target = args.model, args.checkpoint, args.target
    if target:
        if os.path.isdir(target) and os.path.isfile(os.path.join(target, "model.pt")):
            target = os.path.join(target, "model.pt")  # an `xbar train` run directory
        if os.path.isfile(target) or target.endswith((".pt", ".pth")):
            if checkpoint and checkpoint != target:
                raise InputError(f"two checkpoints given: {target} and --checkpoint {checkpoint}")
            checkpoint = target
        elif model and model != target:
            raise InputError(f"two models given: {target} and --model {model}")
        else:
            model = target
    options: dict[str, Any] = {}
    if checkpoint:
        found, options = _manifest_model(checkpoint)
        model = model or found
        if model != found:
            options = {}
    if not model:
        raise InputError("no model: give a model spec (MODEL_OR_CHECKPOINT or --model)")
    return model, checkpoint, options


def _manifest_model(checkpoint: str) -> tuple[str | None, dict[str, Any]]:
    """Model name and size options from a manifest next to ``checkpoint`` (``<name>.json`` or ``manifest.json``)."""
    import json

    for path in (manifest_path(checkpoint), Path(checkpoint).parent / "manifest.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            # a convert manifest keeps the sizes under model_options, an `xbar train` run at the top
            opts = data.get("model_options") if isinstance(data.get("model_options"), dict) else data
            keys = ("in_channels", "num_classes", "image_size")
            found = {k: v for k, v in opts.items() if k in keys and isinstance(v, int)}
            if isinstance(data.get("data"), str):
                found["data"] = data["data"]
            return data["model"], found
    return None, {}


def manifest_path(out: str | os.PathLike) -> Path:
    """The JSON manifest written next to a converted state file."""
    return Path(out).with_suffix(".json")


def run(args: argparse.Namespace) -> int:
    from xbar import data, models, tiles
    from xbar.checkpoints import CONVERT_FORMAT
    from xbar.fileio import atomic_write_json, check_writable, sha256_of

    name, checkpoint, found = _resolve(args)
    preset = preset_with_overrides(args.preset, args)
    source = models.resolve(name)
    data_name = args.data or found.get("data")
    from_data = dict(zip(("in_channels", "num_classes", "image_size"), data.shape_of(args.data))) if args.data else {}
    sizes = {"in_channels": args.in_channels, "num_classes": args.num_classes, "image_size": args.image_size}
    sizes = {k: from_data.get(k, found.get(k)) if v is None else v for k, v in sizes.items()}
    model = source.build(**sizes)
    name = source.spec
    out = manifest = None
    if args.out:
        out, manifest = Path(args.out), manifest_path(args.out)
        if out == manifest:
            raise InputError(f"{out}: --out must not end in .json (the manifest goes there)")
        for path in (out, manifest):
            check_writable(path, args.force)
    analog = tiles.convert(model, preset)
    if checkpoint:
        tiles.load_state(analog, checkpoint)
    rows = tiles.tile_map(analog)
    totals = tiles.tile_map_totals(rows)
    result: dict[str, Any] = {
        "model": name,
        "model_options": {k: v for k, v in sizes.items() if v is not None},
        "preset": preset.name,
        "checkpoint": checkpoint,
        "tile_map": rows,
        "totals": totals,
        "out": str(out) if out else None,
        "manifest": str(manifest) if manifest else None,
    }
    if out is not None:
        record = {
            "format": CONVERT_FORMAT,
            "format_version": MANIFEST_VERSION,
            "model": name,
            "model_spec": source.to_dict(),
            "model_options": result["model_options"],
            "data": data_name,
            "state_file": out.name,
            "checkpoint": checkpoint,
            "checkpoint_sha256": sha256_of(checkpoint) if checkpoint else None,
            "preset": preset.to_dict(),
            "tile_map": rows,
            "totals": totals,
        }
        tiles.save_state(analog, out, force=args.force)
        try:
            atomic_write_json(manifest, record, force=args.force)
        except BaseException:
            out.unlink(missing_ok=True)  # no state file without its manifest
            raise
    text = [
        f"{name} -> {preset.name} ({presets_storage(preset)}), {totals['layers']} analog layer(s)"
        + (f", weights from {checkpoint}" if checkpoint else ""),
        "",
        tiles.format_tile_map(rows),
    ]
    if out is not None:
        text += ["", f"wrote {out} (tensors only) and {manifest}"]
    emit(result, args.json, "\n".join(text))
    return 0


def presets_storage(preset) -> str:
    from xbar.cli.cmd_presets import storage

    return storage(preset)

