#!/usr/bin/env python
"""Loss landscapes along device-noise directions (DAT Sec. III-C, Fig. 1) in a few minutes on a CPU.

1. Train three LeNets on the 4,000 bundled MNIST training digits with ``xbar.training.train``:
   plain SGD (w_SGD), and DAT-Fast (Algorithm 1) against the correlated devices
   ``reram-correlated-a`` (w_A) and ``reram-correlated-b`` (w_B).
2. 1D: g(alpha) along 4 device-noise directions of device A (d ~ the device's noise,
   normalised by ||d||_F) for each model, averaged over the directions; plot.
3. 2D: g(alpha, beta) on the plane w = w_SGD, u = w_A - w_SGD, v = 2 w_B - w_A - w_SGD
   over the paper's grid alpha in [-0.5, 1.5], beta in [-0.3, 0.8]; contour plot.

Usage: ``.venv/bin/python examples/33_loss_landscape.py [--out DIR] [--images N]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from xbar import data
from xbar.evaluation import landscape_1d, landscape_2d
from xbar.evaluation.plots import plot_landscape_1d
from xbar.training import train as xtrain


def train(preset: str | None, epochs: int = 3, seed: int = 0):
    """LeNet on mnist5k by SGD, or with ``preset`` by DAT-Fast against its correlated noise (DAT's beta = 0.015)."""
    model, _ = xtrain("lenet", "mnist5k", preset or "reram-correlated-a", "dat-fast" if preset else "sgd",
                      epochs=epochs, seed=seed, lr=0.015, batch_size=64, act_bits=0, checkpoint_every=0,
                      progress=False)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", help="directory for the plots (default: a new temporary directory)")
    ap.add_argument("--images", type=int, default=500, help="training digits the loss is averaged over")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="xbar-example-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    split = data.load("mnist5k", seed=0)
    sgd, dev_a, dev_b = train(None, seed=0), train("reram-correlated-a", seed=1), train("reram-correlated-b", seed=2)
    print(f"trained three LeNets in {time.time() - t0:.0f} s")

    # 1D along device A's noise
    curves, alphas = {}, None
    for name, m in (("SGD", sgd), ("DAT A", dev_a), ("DAT B", dev_b)):
        curves[name] = landscape_1d(m, split.train, "reram-correlated-a", alphas=alphas, directions=4, seed=0,
                                    limit=args.images, split="train", progress=False)
        alphas = curves["SGD"].alphas  # the same alpha grid for every model (+-2 device draws of w_SGD)
    first = curves["SGD"]
    print(f"\n1D: training loss along device-A noise directions (||d||_F = 1; one device draw has "
          f"||d||_F = {first.noise_norm:.3g})")
    print(f"{'alpha':>8}" + "".join(f"{n:>10}" for n in curves))
    for j in range(0, first.alphas.size, 2):
        print(f"{first.alphas[j]:8.2f}" + "".join(f"{c.mean_loss[j]:10.4f}" for c in curves.values()))
    plot_landscape_1d(curves, out / "landscape_1d.png", force=True)

    # 2D through the three models
    r = landscape_2d(sgd, dev_a, dev_b, split.train, limit=args.images, labels=("SGD", "A", "B"), progress=False)
    ia, ib = np.unravel_index(np.nanargmin(r.loss), r.loss.shape)
    print(f"\n2D: {r.alphas.size} x {r.betas.size} grid; loss at SGD {r.loss[5, 3]:.4f}, at A {r.loss[15, 3]:.4f}, "
          f"at B {r.loss[10, 8]:.4f}; lowest {r.loss[ia, ib]:.4f} at alpha {r.alphas[ia]:.2f}, beta {r.betas[ib]:.2f}")
    r.plot(out / "landscape_2d.png", force=True)
    print(f"\nplots in {out}/ ; total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
