#!/usr/bin/env python
"""Your own networks on xbar: a torchvision ResNet-18 and a network of your own, from Python and the CLI.

1. Python: ``torchvision.models.resnet18`` converted to analog tiles of the FeFET2
   preset (``xbar.convert``), its crossbar tile map printed.
2. Python: ``SmallCNN`` below (an ordinary ``nn.Module``) trained with device-noise
   injection on the bundled 8x8 digits (``xbar.training.train`` takes the instance),
   then its 1st-percentile accuracy over programmed instances (``monte_carlo``).
3. Command line, the same two networks named by spec: ``torchvision:resnet18`` (input
   channels and classes taken from ``--data``) and this very file as
   ``FILE.py:FACTORY`` (``small_cnn`` below): ``xbar convert``, ``xbar train``,
   ``xbar eval RUN`` (the run's manifest records the spec and this file's SHA-256, so
   the study rebuilds the network; only the file you named is imported, weights are
   read as plain tensors).

About a minute on two CPU cores. Runs from any working directory.

Usage: ``.venv/bin/python examples/01_convert_your_model.py [--epochs N] [--mc N] [--out DIR]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from torch import nn

HERE = Path(__file__).resolve()


class SmallCNN(nn.Module):
    """Two 3x3 convolutions and a linear classifier: a stand-in for your own network."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Linear(16 * 2 * 2, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def small_cnn(num_classes: int, in_channels: int) -> nn.Module:
    """The factory ``xbar train --model 01_convert_your_model.py:small_cnn`` calls (sizes from the data)."""
    return SmallCNN(in_channels, num_classes)


def xbar_cli(*args: str) -> None:
    """Run ``xbar ARGS`` (the console script's entry point, with this interpreter) and show it."""
    print(f"$ xbar {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-c", "from xbar.cli import entry; entry()", *args], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--mc", type=int, default=50, help="Monte Carlo instances of each evaluation")
    ap.add_argument("--out", help="directory for the run directories (default: a temporary one)")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # keep our lines in order with the commands' output

    import torchvision

    import xbar
    from xbar import data, presets
    from xbar.evaluation import monte_carlo
    from xbar.tiles import format_tile_map, tile_map
    from xbar.training import train

    preset = presets.load("fefet2")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)

        print("[1] torchvision ResNet-18 -> analog tiles of fefet2 (Python)")
        analog = xbar.convert(torchvision.models.resnet18(num_classes=10), preset)
        rows = tile_map(analog)
        print("\n".join(format_tile_map(rows).splitlines()[:4] + ["  ..."] + format_tile_map(rows).splitlines()[-2:]))

        print(f"\n[2] SmallCNN instance trained with noise injection, {args.epochs} epochs on the 8x8 digits (Python)")
        model, history = train(SmallCNN(), "digits", preset, "noise", epochs=args.epochs, lr=0.05, batch_size=32,
                               progress=False, out=root / "python", force=True)
        split = data.load("digits")
        res = monte_carlo(model, split.test, preset, n=args.mc, seed=1, progress=False)
        print(f"clean accuracy {res.clean['accuracy']:.3f}, 1st percentile over {args.mc} programmed instances "
              f"{res.kpp(1):.3f}")

        print("\n[3] the same networks by spec on the command line")
        xbar_cli("convert", "torchvision:resnet18", "--data", "digits", "--preset", "fefet2", "--out",
                 str(root / "resnet18-fefet2.pt"), "--force")
        run = root / "cli"
        xbar_cli("train", "--model", f"{HERE}:small_cnn", "--data", "digits", "--preset", "fefet2", "--algo",
                 "noise", "--epochs", str(args.epochs), "--lr", "0.05", "--batch-size", "32", "--out", str(run),
                 "--force", "--quiet")
        xbar_cli("eval", str(run), "--mc", str(args.mc), "--no-progress")
        if args.out:
            print(f"\nruns in {root}")


if __name__ == "__main__":
    main()
