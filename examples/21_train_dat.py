#!/usr/bin/env python
"""Device-Aware Training (DAT, Park et al., Algorithm 1): DAT-Fast and DAT-Full against SGD in a few minutes.

The paper's set-up in miniature: spatially correlated ReRAM noise N(0, Sigma) (a
Kronecker exponential covariance per crossbar tile, ``reram-correlated-a`` made
noisier) on the last fully connected layer of LeNet, 8x8 digits.

1. The noise profile of that layer: how much of a tile's variance the top-k
   eigen-directions hold (DAT-Fast keeps k = 10).
2. Train ``sgd``, ``dat-fast`` (rank 10 per tile) and ``dat-full`` (full covariance
   through its Kronecker factors), perturbing the last layer (``layers=last``), all at
   the paper's learning rate beta = 0.015.
3. Monte Carlo with noise on the last layer only: mean and 1st-percentile accuracy.

Usage: ``.venv/bin/python examples/21_train_dat.py [--epochs N] [--alpha A] [--out DIR]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from xbar import data, presets
from xbar.evaluation import monte_carlo
from xbar.training import forward_weights, noisy_parameters, train
from xbar.training.trainer import Batches


def spectrum(preset, rows: int, cols: int, k: int) -> float:
    """Share of one tile's correlated variance held by its top-k eigenpairs."""
    c = preset.correlation
    total = c.sigma**2 * rows * cols
    vals, _, _ = c.eigenpairs(k, rows, cols)
    return float(vals.sum()) / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--alpha", type=float, default=None, help="DAT perturbation step (default: the library's)")
    ap.add_argument("--p", type=int, default=1, help="perturbations per step")
    ap.add_argument("--lr", type=float, default=0.015, help="learning rate, DAT's beta (the paper: 0.015)")
    ap.add_argument("--mc", type=int, default=1000)
    ap.add_argument("--out", help="directory for the run directories (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="xbar-dat-"))
    preset = presets.load("reram-correlated-a", **{"correlation.sigma": 1.0, "sigma_d": 0.5})
    print(f"last layer of LeNet on 8x8 digits: an 84 x 10 crossbar tile; top-10 eigenpairs hold "
          f"{spectrum(preset, 84, 10, 10):.0%} of its correlated variance")
    split = data.load("digits", seed=args.seed)
    x, y = Batches(split.test).all()
    hyper = {"p": args.p, **({"alpha": args.alpha} if args.alpha is not None else {})}
    rows = []
    for algo in ("sgd", "dat-fast", "dat-full"):
        t0 = time.perf_counter()
        model, history = train("lenet", "digits", preset, algo, epochs=args.epochs, seed=args.seed, lr=args.lr,
                               batch_size=32, schedule="cosine", progress=False, force=True, out=root / algo,
                               **({} if algo == "sgd" else hyper))
        secs = time.perf_counter() - t0
        targets = noisy_parameters(model, preset)
        last = targets[-1].name.rpartition(".")[0]
        with forward_weights(targets[:-1]):  # the other layers hold their clean stored weights
            mc = monte_carlo(model, (x, y), preset, n=args.mc, seed=1, layers=[last], metrics=("accuracy",),
                             progress=False, rule="trice")
        rows.append((algo, history[-1]["test_acc"], mc.mean, mc.kpp(1.0), secs / args.epochs))
    print(f"\nnoise on the last layer, {args.mc} Monte Carlo instances")
    print(f"{'algo':9s} {'clean':>7s} {'MC mean':>8s} {'1st pct':>8s} {'s/epoch':>8s}")
    for algo, clean, mean, kpp, spe in rows:
        print(f"{algo:9s} {clean:7.3f} {mean:8.3f} {kpp:8.3f} {spe:8.3f}")
    print(f"\nrun directories under {root}")


if __name__ == "__main__":
    main()
