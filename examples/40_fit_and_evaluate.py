#!/usr/bin/env python
"""Fit -> train -> program -> record -> fit: the hardware-in-the-loop cycle on one CPU in about a minute.

1. Fit a device preset from a measurement file (``xbar.calibration.fit``).
2. Train LeNet on the 4,000 training images of the 5,000 bundled MNIST digits with
   noise injection from that preset (``xbar.training.train``).
3. Evaluate it with its stored (quantized, noise-free) weights.
4. Program it through an emulated chip that behaves like the fitted preset, once with
   one pulse per device and once with write-verify, read the conductances back and
   evaluate the network with them (recording the write-verify session).
5. Replay the recording: the same accuracy, bit for bit, without the chip.
6. Fit the recording itself, which shows the device statistics after write-verify.

Usage: ``.venv/bin/python examples/40_fit_and_evaluate.py [--measurements FILE] [--epochs N]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from xbar import hil
from xbar.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
MEASUREMENTS = ROOT / "calibration" / "examples" / "fefet_per_level.h5"


def fit_preset(path: Path):
    """The preset fitted from ``path``, with its fit table printed."""
    from xbar.calibration import fit
    from xbar.calibration.result import format_table

    result = fit(path, name="fitted-fefet")
    print(format_table(result.summary_rows()))
    return result.preset


def train_model(preset, epochs: int, seed: int) -> tuple[nn.Module, torch.utils.data.Dataset]:
    """LeNet trained with noise injection from ``preset``; returns (model, test set)."""
    from xbar import data
    from xbar.training import train

    split = data.load("mnist5k", seed=seed)
    model, history = train(
        "lenet", "mnist5k", preset, "noise", epochs=epochs, seed=seed, lr=0.05, batch_size=64, progress=False
    )
    for row in history:
        print("  epoch", {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    return model, split.test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measurements", type=Path, default=MEASUREMENTS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=0.1, help="write-verify tolerance, level units")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.time()
    try:
        print(f"1. fitting {args.measurements}")
        preset = fit_preset(args.measurements)
        print(f"2. training lenet on mnist5k for {args.epochs} epochs with {preset.name}")
        model, test = train_model(preset, args.epochs, args.seed)
        model.eval()
        acc = hil.evaluate(hil.stored_copy(model, preset), test).accuracy
        print(f"3. stored weights: accuracy {acc:.4f}")

        print("4. programming an emulated chip that behaves like the fitted preset")
        chip = hil.EmulatedBackend(preset, seed=args.seed)
        session = hil.program_model(model, chip, preset)
        once = hil.evaluate(hil.read_model(session, model), test).accuracy
        wv = session.summary()["write_verify"]
        print(f"   one pulse:     accuracy {once:.4f}   device error rms {wv['error_rms']:.3f} levels")

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "session.h5"
            chip = hil.EmulatedBackend(preset, seed=args.seed, tolerance=args.tolerance, max_pulses=20)
            with hil.RecordingBackend(chip, path) as rec:
                session = hil.program_model(model, rec, preset)
                verified = hil.evaluate(hil.read_model(session, model), test)
            wv = session.summary()["write_verify"]
            print(
                f"   write-verify:  accuracy {verified.accuracy:.4f}   device error rms {wv['error_rms']:.3f} levels, "
                f"{wv['pulses_mean']:.2f} pulses/device (max {wv['pulses_max']}), {wv['unconverged']} unconverged"
            )
            print(f"   recorded {path.stat().st_size / 1e6:.1f} MB")
            for group, why in rec.omitted.items():
                print(f"   (no /{group} group: {why})")

            print("5. replaying the recording")
            replay = hil.ReplayBackend(path)
            again = hil.evaluate(hil.read_model(hil.program_model(model, replay, preset), model), test)
            same = torch.equal(again.logits, verified.logits)
            print(f"   replay:        accuracy {again.accuracy:.4f}   logits identical: {same}")

            print("6. fitting the recording: the chip's statistics after write-verify")
            from xbar.calibration import fit

            after = fit(path, name="after-write-verify").preset.device_model()
            levels = torch.arange(float(after.mapping.levels))
            before = preset.device_model().programming.sigma(levels, preset.mapping)
            sigma = after.programming.sigma(levels, after.mapping)
            print("   sigma per level:", [round(float(v), 3) for v in before], "->", [round(float(v), 3) for v in sigma])
    except InputError as exc:
        print(f"40_fit_and_evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(f"done in {time.time() - start:.0f} s")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
