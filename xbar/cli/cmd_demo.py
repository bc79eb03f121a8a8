"""``xbar demo``: train LeNet three ways on bundled MNIST digits and study it on emulated devices."""

from __future__ import annotations

import argparse
from pathlib import Path

from xbar.cli.common import add_preset_overrides, emit, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job on bundled data: train LeNet (SGD, noise injection, TRICE) and study it on devices",
        description=(
            "Train LeNet on the 4,000 bundled MNIST digits with plain SGD, Gaussian noise injection "
            "and TRICE against a FeFET preset at a large device variation, program each model on "
            "emulated devices and print clean, mean and 1st-percentile accuracy; then convert the SGD "
            "model with every shipped preset and print the same. Takes a few minutes on two CPU cores. "
            "Writes the three run directories, demo.json and demo.png to --out."
        ),
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo; an earlier demo there is replaced)")
    p.add_argument("--preset", default="fefet2", help="device preset of the training comparison (default fefet2)")
    p.add_argument("--sigma-d", type=float, default=0.5, help="device variation sigma_d of that preset (default 0.5)")
    add_preset_overrides(p)
    p.add_argument("--epochs", type=positive_int, default=10,
                   help="training epochs per model (default 10; at least 2: TRICE needs a warm-up epoch)")
    p.add_argument("--mc", type=positive_int, default=200, help="Monte Carlo instances per model (default 200)")
    p.add_argument("--lr", type=float, default=0.02, help="learning rate of every model (default 0.02)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-presets", action="store_true", help="skip the tour of the shipped presets")
    p.add_argument("--force", action="store_true", help="replace --out even if it was not written by xbar demo")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print only the result (demo.json) on stdout, no tables")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xbar.demo import DemoConfig
    from xbar.demo import run as run_demo
    from xbar.fileio import check_writable_dir

    check_writable_dir(args.out)  # before any work: an unwritable place is refused at once

    cfg = DemoConfig(
        out=Path(args.out), preset=args.preset, sigma_d=args.sigma_d, epochs=args.epochs, mc=args.mc, lr=args.lr,
        seed=args.seed, presets=not args.no_presets, progress=not args.no_progress, force=args.force,
        overrides=tuple(args.overrides),
    )
    result = run_demo(cfg, say=(lambda _msg: None) if args.json else print)
    if args.json:
        emit(result, True, "")
    return 0
