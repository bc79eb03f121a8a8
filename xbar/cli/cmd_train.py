"""``xbar train``: train a model (any model spec) on a data set (any data spec) against a device preset."""

from __future__ import annotations

import argparse
import json
import os
import sys

from xbar.cli.common import (
    add_preset_overrides,
    fraction,
    nonneg_int,
    positive_float,
    positive_int,
    preset_with_overrides,
)
from xbar.errors import InputError

ALGOS = ("sgd", "noise", "trice", "dat-fast", "dat-full", "wvat", "sam", "swa")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a network against a device preset (sgd, noise, trice, dat-fast, dat-full, wvat, sam, swa)",
        description="Train MODEL on DATA with ALGO against the device noise of PRESET. MODEL is a zoo name, "
        "torchvision:NAME, FILE.py:FACTORY or package.module:FACTORY; DATA a data set name, npz:FILE or "
        "imagefolder:DIR (see docs/your-own.md). Writes RUN_DIR/"
        "manifest.json, metrics.jsonl (one line per epoch), checkpoint.pt (every epoch and every "
        "--checkpoint-every steps) and model.pt (the digital state dict). Unset hyper-parameters take "
        "the papers' defaults; algorithm ones are set with --hp KEY=VALUE (see --list-hp). Under "
        "'torchrun --nproc_per_node=N xbar train ...' one model trains on N processes "
        "(DistributedDataParallel; --batch-size is the global batch; rank 0 writes RUN_DIR).",
    )
    p.add_argument("--model", metavar="SPEC", help="zoo model (lenet, mlp, cnn6, vgg5, vgg8, resnet18, ...), "
                   "torchvision:NAME, FILE.py:FACTORY or package.module:FACTORY; required unless --resume")
    p.add_argument("--data", metavar="SPEC", help="data set (digits, mnist5k offline; mnist, cifar10, cifar100 from "
                   "--data-root), npz:FILE or imagefolder:DIR; required unless --resume")
    p.add_argument("--preset", help="shipped preset name or preset TOML file; required unless --resume")
    add_preset_overrides(p)
    p.add_argument("--algo", choices=ALGOS, help="training algorithm; required unless --resume")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory")
    p.add_argument("--epochs", type=positive_int, help="epochs (default: the paper's, 100 or 200)")
    p.add_argument("--lr", type=positive_float, help="learning rate")
    p.add_argument("--batch-size", type=positive_int, help="batch size (default 128)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--data-root", help="directory holding MNIST/CIFAR files")
    p.add_argument("--split-seed", type=int, help="seed of the mnist5k/digits train/test split (default: --seed)")
    p.add_argument("--data-split", choices=("stratified", "random"), help="mnist5k/digits split: per class "
                   "(stratified, default) or one unstratified random permutation")
    p.add_argument("--train-fraction", type=fraction, help="share of mnist5k/digits in the training part (default 0.8)")
    p.add_argument("--normalize", metavar="MODE", help="input normalisation: default (the data set's), none "
                   "(pixels in [0, 1]) or MEAN/STD per channel, e.g. 0.1307/0.3081")
    p.add_argument("--device", help="torch device (default cpu)")
    p.add_argument("--act-bits", type=nonneg_int, help="activation bits (default: TRICE's per model, 0 = none)")
    p.add_argument("--weight-bits", type=nonneg_int, metavar="H",
                   help="stored weight bits, overriding the preset's (default: TRICE's per model - lenet 4, "
                   "vgg8/resnet18 6 - else the preset's; 0 = analog); recorded in the run's preset_spec")
    p.add_argument("--checkpoint-every", type=nonneg_int, help="checkpoint every K steps inside an epoch (default 50)")
    p.add_argument("--eval-mc", type=nonneg_int, help="Monte Carlo instances for the test KPP per epoch (default 0)")
    p.add_argument("--convert", action=argparse.BooleanOptionalAction, default=None,
                   help="train the aihwkit model from xbar.convert (default: the plain model)")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="algorithm hyper-parameter (repeatable)")
    p.add_argument("--list-hp", action="store_true", help="list the hyper-parameters of --algo and exit")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR from its last checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an existing RUN_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON on stdout")
    p.set_defaults(func=run)


def _hyper(args: argparse.Namespace) -> dict:
    from xbar.training.config import parse_value

    hyper: dict = {}
    for item in args.hp:
        if "=" not in item:
            raise InputError(f"--hp {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        hyper[key] = parse_value(args.algo, key, value)
    flags = {
        "lr": args.lr,
        "batch_size": args.batch_size,
        "data_root": args.data_root,
        "split_seed": args.split_seed,
        "split": args.data_split,
        "train_fraction": args.train_fraction,
        "normalize": args.normalize,
        "device": args.device,
        "act_bits": args.act_bits,
        "weight_bits": args.weight_bits,
        "checkpoint_every": args.checkpoint_every,
        "eval_mc": args.eval_mc,
        "convert": args.convert,
    }
    for key, value in flags.items():
        if value is None:
            continue
        if key in hyper and hyper[key] != value:
            flag = "data-split" if key == "split" else key.replace("_", "-")
            raise InputError(f"--hp {key}={hyper[key]!r} conflicts with --{flag} {value!r}")
        hyper[key] = value
    return hyper


def _from_manifest(args: argparse.Namespace) -> dict:
    """With --resume: fill omitted --model/--data/--preset/--algo/--epochs/--seed from RUN_DIR/manifest.json.

    Returns the run's recorded hyper-parameters (explicit ones must match them; ``train`` checks).
    """
    from pathlib import Path

    path = Path(args.out) / "manifest.json"
    try:
        man = json.loads(path.read_text())
    except (OSError, ValueError):
        raise InputError(f"{path}: no readable manifest; nothing to resume") from None
    if not isinstance(man, dict):
        raise InputError(f"{path}: not a run manifest")
    for key in ("model", "data", "preset", "algo", "epochs", "seed"):
        if getattr(args, key) is None:
            setattr(args, key, man.get(key))
            if key == "preset" and isinstance(man.get("preset_spec"), dict):
                from xbar.presets import resolve

                args.preset = resolve(man["preset_spec"], origin=f"{path}: preset_spec")
    hyper = man.get("hyper")
    return dict(hyper) if isinstance(hyper, dict) else {}


def run(args: argparse.Namespace) -> int:
    from xbar.training.config import PAPER_DEFAULTS, hyper_spec
    from xbar.training.run import train

    if args.list_hp:
        if not args.algo:
            raise InputError("--list-hp: needs --algo")
        paper = PAPER_DEFAULTS[args.algo]
        print(f"{'epochs':18s} {'int':6s} {paper['epochs']!s:10s} training epochs")
        for key, h in hyper_spec(args.algo).items():
            default = paper.get(key, h.default)
            print(f"{key:18s} {h.type.__name__:6s} {default!s:10s} {h.help}")
        return 0
    if not args.out:
        raise InputError("--out RUN_DIR: required")
    from xbar.fileio import check_writable_dir

    if os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 alone writes (and probes)
        check_writable_dir(args.out)  # before any work: an unwritable place is refused at once
    if args.resume and args.force:
        raise InputError("--resume and --force: give one of them")
    recorded = _from_manifest(args) if args.resume else {}
    missing = [f"--{k}" for k in ("model", "data", "preset", "algo") if not getattr(args, k)]
    if missing:
        raise InputError(f"{', '.join(missing)}: required")
    if args.algo not in ALGOS:
        raise InputError(f"--algo {args.algo!r}: expected one of {', '.join(ALGOS)}")
    if args.overrides:  # the run records the changed preset in its preset_spec
        args.preset = preset_with_overrides(args.preset, args)
    if args.seed is None:
        args.seed = 0
    hyper = {**recorded, **_hyper(args)}
    hyper.pop("progress", None)
    if args.quiet:
        hyper["progress"] = False
    _, history = train(
        args.model, args.data, args.preset, args.algo, args.epochs, args.seed, args.out,
        resume=args.resume, force=args.force, **hyper,
    )
    from pathlib import Path

    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 alone reports
        return 0

    man = json.loads((Path(args.out) / "manifest.json").read_text())
    metrics = man.get("metrics", {})
    if args.json:
        json.dump({"run_dir": str(args.out), "metrics": metrics, "history": history}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not args.quiet:
        extra = f", test KPP {metrics['test_kpp']:.4f}" if "test_kpp" in metrics else ""
        label = getattr(args.preset, "name", args.preset)
        print(f"{args.algo} {args.model}/{args.data} on {label}: {metrics.get('epochs_done', 0)} epochs, "
              f"test accuracy {metrics.get('test_acc', float('nan')):.4f}{extra} -> {args.out}")
    return 0
