#!/usr/bin/env python
"""Drift study on phase-change memory: accuracy percentiles from 1 second to 10 years, in a few minutes on a CPU.

1. Train LeNet on the 4,000 training images of the 5,000 bundled MNIST digits (plain SGD through `xbar.training.train`).
2. Program 30 instances with the ``pcm`` preset (aihwkit's PCMLikeNoiseModel statistics:
   programming noise, per-device drift exponents, accumulated 1/f read noise), read each
   at 1 s, 1 h, 1 day, 1 month, 1 year and 10 years, with and without global drift
   compensation; print the table and plot mean and 1st-percentile accuracy against time.
3. Cross-check one read time against aihwkit itself: the same weights converted with
   ``TorchInferenceRPUConfig`` + ``PCMLikeNoiseModel`` + ``GlobalDriftCompensation``,
   ``program_analog_weights()`` then ``drift_analog_weights(t)`` for a few instances.

Usage: ``.venv/bin/python examples/31_drift_study.py [--out DIR] [--mc N] [--no-aihwkit]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from xbar import data
from xbar.evaluation import drift_study
from xbar.evaluation.drift import time_label
from xbar.training import train as xtrain


def train(epochs: int = 3, seed: int = 0):
    """LeNet on mnist5k by plain SGD (``xbar.training``; float weights and activations)."""
    model, _ = xtrain("lenet", "mnist5k", "pcm", "sgd", epochs=epochs, seed=seed, lr=0.05, batch_size=64,
                      act_bits=0, quantize_weights=False, checkpoint_every=0, progress=False)
    return model.eval()


def aihwkit_accuracy(model, split, t: float, n: int) -> np.ndarray:
    """Accuracy of ``n`` aihwkit instances (program, then drift to ``t``) of ``model``."""
    from aihwkit.inference.compensation.drift import GlobalDriftCompensation
    from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
    from aihwkit.nn.conversion import convert_to_analog
    from aihwkit.simulator.configs import TorchInferenceRPUConfig

    cfg = TorchInferenceRPUConfig()
    cfg.forward.is_perfect = True  # xbar's drift study models the devices, not the periphery's IO noise
    cfg.noise_model = PCMLikeNoiseModel(g_max=25.0)
    cfg.drift_compensation = GlobalDriftCompensation()
    analog = convert_to_analog(model, cfg).eval()
    x, y = split.test.tensors
    accs = []
    with torch.no_grad():
        for _ in range(n):
            analog.program_analog_weights()
            analog.drift_analog_weights(t)
            accs.append(float((analog(x).argmax(1) == y).double().mean()))
    return np.array(accs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", help="directory for the plot (default: a new temporary directory)")
    ap.add_argument("--mc", type=int, default=30, help="Monte Carlo instances")
    ap.add_argument("--no-aihwkit", action="store_true", help="skip the aihwkit cross-check")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="xbar-example-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    split = data.load("mnist5k", seed=0)
    model = train()
    print(f"trained LeNet in {time.time() - t0:.0f} s")

    r = drift_study(model, split, "pcm", n=args.mc, seed=0, percentile=1)
    print(f"\npcm preset, {r.n} instances on {r.num_images} test digits (clean accuracy {r.clean['accuracy']:.4f})")
    print(f"{'time':>9} {'compensation':>13} {'mean':>7} {'std':>7} {'1st pct':>8}")
    for row in r.table():
        comp = "global" if row["compensation"] else "none"
        print(f"{row['time']:>9} {comp:>13} {row['mean']:7.4f} {row['std']:7.4f} {row['kpp']:8.4f}")
    r.plot(out / "accuracy_vs_time.png", force=True)

    if not args.no_aihwkit:
        t = 86400.0
        theirs = aihwkit_accuracy(model, split, t, 10)
        ours = r.accuracy[r.compensation.index(True), r.times.index(t)]
        print(f"\nafter {time_label(t)}, compensated: xbar mean {ours.mean():.4f} (std {ours.std(ddof=1):.4f}, "
              f"{ours.size} instances); aihwkit mean {theirs.mean():.4f} (std {theirs.std(ddof=1):.4f}, "
              f"{theirs.size} instances)")
    print(f"\nplot in {out}/ ; total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
