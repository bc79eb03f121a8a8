"""Shared plumbing of the study commands (eval, drift, bitflip, landscape).

Loads the checkpoint and its evaluation data, resolves the preset, checks the output
paths before any work, and writes results (atomically, rank 0 only under torchrun).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Iterator
from typing import Any

from xbar.cli.common import add_study_args, emit, fraction, percentile, positive_int
from xbar.errors import InputError, first_line


def add_workload_args(p: argparse.ArgumentParser, split: str = "test") -> None:
    """CHECKPOINT and the options every study shares."""
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="xbar train run directory, the .pt/.json pair of "
                   "xbar convert --out, or a state-dict file with --model")
    p.add_argument("--model", metavar="SPEC", help="model: zoo name, torchvision:NAME, FILE.py:FACTORY or "
                   "package.module:FACTORY (needed for a plain state-dict file; overrides the manifest)")
    p.add_argument("--data", metavar="SPEC", help="data: name, npz:FILE or imagefolder:DIR (default: the run's; "
                   "sets the input shape of a plain state dict)")
    p.add_argument("--data-root", help="directory of the MNIST/CIFAR files (default $XBAR_DATA or ./data)")
    p.add_argument("--split", choices=("test", "train"), default=split, help=f"which part of the data set to evaluate (default {split})")
    p.add_argument("--limit", type=positive_int, help="evaluate only the first N images")
    p.add_argument("--act-bits", type=int, help="quantize ReLU outputs to this many bits (default: the run's act_bits; 0 = none)")
    p.add_argument("--batch-instances", type=positive_int, help="instances per forward pass (speed/memory only; default 4 on CPU, 32 on CUDA)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass (default 256)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")
    p.add_argument("--plot", metavar="PATH", help="write a plot (.png, .pdf or .svg)")
    p.add_argument("--out", metavar="RESULT.json", help="write the JSON result to this file (atomically)")
    p.add_argument("--force", action="store_true", help="overwrite --out / --plot files that exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_study_args(p)


def add_instance_args(p: argparse.ArgumentParser, mc: int) -> None:
    """The Monte Carlo options of eval and drift: N (default ``mc``), k, the interval's confidence, the noisy layers."""
    p.add_argument("--mc", type=positive_int, default=mc, help=f"Monte Carlo instances N (default {mc})")
    p.add_argument("--percentile", type=percentile, default=1.0, help="k of the k-th percentile (default 1)")
    p.add_argument("--confidence", type=fraction, default=0.95, help="confidence of the KPP intervals (default 0.95)")
    p.add_argument("--layers", help="comma-separated names of the noisy layers (default: every Conv/Linear)")


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse existing --out/--plot files before any work is done."""
    from pathlib import Path

    from xbar.fileio import check_writable

    for path in (args.out, args.plot):
        if path:
            check_writable(path, args.force, create=False)
    if args.plot and Path(args.plot).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise InputError(f"--plot {args.plot}: expected a .png, .pdf or .svg file name")
    if args.out and args.plot and Path(args.out).resolve() == Path(args.plot).resolve():
        raise InputError(f"--out and --plot both name {args.out}: expected two different files")


def load_checkpoint(args: argparse.Namespace, path: str | None = None):
    """The model of ``path`` (default CHECKPOINT) with the run's activation quantization applied."""
    import warnings

    from xbar.checkpoints import SourceChangedWarning, load_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SourceChangedWarning)
        model, info = load_model(path or args.checkpoint, args.model, args.data)
    for w in caught:
        if issubclass(w.category, SourceChangedWarning):
            print(f"xbar {args.command}: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    bits = args.act_bits if args.act_bits is not None else info.get("act_bits")
    if bits:
        from xbar.mapping import quantize_activations

        try:
            quantize_activations(model, int(bits))
        except ValueError as exc:
            where = "--act-bits" if args.act_bits is not None else "the run's act_bits"
            raise InputError(f"{where} {bits}: {exc}") from None
    info["act_bits"] = int(bits or 0)
    return model, info


def load_data(args: argparse.Namespace, info: dict[str, Any]):
    """The evaluation part (``--split``) of the run's data set, split with the run's seed."""
    split = load_split(args, info)
    return split.train if args.split == "train" else split.test


def load_split(args: argparse.Namespace, info: dict[str, Any]):
    """The run's data set (or ``--data``), split and normalized as the run recorded it."""
    from xbar import data

    name = args.data or info.get("data")
    recorded = info.get("data_spec") if not args.data or args.data == info.get("data") else None
    recorded = recorded if isinstance(recorded, dict) else {}
    if not name or recorded.get("kind") == "python":
        why = "the run's data came from Python datasets" if name else "no data set known"
        raise InputError(f"{args.checkpoint}: {why}; pass --data SPEC (one of {', '.join(data.names())}, "
                         "npz:FILE or imagefolder:DIR)")
    seed = recorded.get("split_seed", info.get("seed") or 0)
    opts = {k: recorded[k] for k in ("split", "train_fraction", "normalize") if recorded.get(k) is not None}
    split = data.load(name, args.data_root, int(seed), **opts)
    for key in ("in_channels", "image_size", "num_classes"):
        if info.get(key) is None:
            info[key] = getattr(split, key)
    if (split.in_channels, split.image_size) != (info["in_channels"], info["image_size"]):
        raise InputError(
            f"--data {name}: images are {split.in_channels}x{split.image_size}x{split.image_size}, but the model "
            f"expects {info['in_channels']}x{info['image_size']}x{info['image_size']}"
        )
    info["data"] = name
    info["split"] = args.split
    return split


def resolve_preset(args: argparse.Namespace, info: dict[str, Any], required: bool = True):
    """``--preset`` or the run's own preset (its stored description first), with ``--set`` applied."""
    from xbar import presets

    preset = _recorded_preset(args, info, required)
    items = getattr(args, "overrides", None) or []
    if items and preset is None:
        raise InputError(f"--set {items[0]}: needs a preset; pass --preset NAME_OR_PATH")
    return presets.apply_overrides(preset, items) if items else preset


def _recorded_preset(args: argparse.Namespace, info: dict[str, Any], required: bool):
    from xbar import presets

    if getattr(args, "preset", None):
        return presets.resolve(args.preset)
    spec = info.get("preset_spec")
    if isinstance(spec, dict):
        try:
            return presets.resolve(spec, origin=f"{args.checkpoint}: preset_spec")
        except InputError as exc:  # never fall back to a shipped preset the run may not have used
            raise InputError(f"{exc} (the run's recorded preset); pass --preset NAME_OR_PATH to choose one") from None
    if info.get("preset"):
        return presets.resolve(info["preset"])
    if required:
        raise InputError(f"{args.checkpoint}: no preset recorded; pass --preset NAME_OR_PATH")
    return None


def device_of(args: argparse.Namespace):
    import torch

    from xbar.evaluation.distributed import local_device

    want = args.device
    if want not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", want or ""):
        raise InputError(f"--device {want}: expected cpu, cuda, cuda:N or auto")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {want}: CUDA is not available on this machine")
    return local_device(want)


@contextlib.contextmanager
def library_errors() -> Iterator[None]:
    """Report the library's ValueErrors about arguments as bad input (exit 2)."""
    try:
        yield
    except InputError:
        raise
    except (ValueError, KeyError) as exc:
        msg = first_line(exc, limit=10_000)
        raise InputError(msg) from None


def finish(args: argparse.Namespace, result: dict[str, Any], text: str, plot=None) -> int:
    """Write --out and --plot, print JSON or ``text``: on rank 0 only."""
    from xbar.evaluation.distributed import context
    from xbar.fileio import atomic_write_json

    if not context().is_main:
        return 0
    notes = []
    if args.out:
        atomic_write_json(args.out, result, force=args.force)
        notes.append(f"wrote {args.out}")
    if args.plot and plot is not None:
        plot(args.plot, args.force)
        notes.append(f"wrote {args.plot}")
    emit(result, args.json, "\n".join([text, *notes]))
    if args.json and notes:
        print("\n".join(notes), file=sys.stderr)
    return 0


def header(info: dict[str, Any], n_images: int) -> str:
    return f"{info['model']} on {info['data']} ({n_images} {info.get('split', 'test')} images)"


def parse_list(text: str, kind: type, what: str) -> list:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} {text!r}: expected a comma-separated list of {kind.__name__}s") from None
