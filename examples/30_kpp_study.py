#!/usr/bin/env python
"""k-th percentile accuracy by Monte Carlo (TRICE Algorithm 2, Fig. 2, Table I) in a few minutes on a CPU.

1. Train LeNet on the 4,000 bundled MNIST training digits twice with ``xbar.training.train``:
   plain SGD, and Gaussian noise injection of the ``rram-uniform`` preset's device noise
   (TRICE Algorithm 1).
2. Monte Carlo: program 200 instances of the noise-trained network (sigma_d = 0.1),
   evaluate each, report the 1st-percentile accuracy (KPP) with its distribution-free
   95% interval and plot the accuracy histogram and CDF (TRICE Fig. 2).
3. Adaptive Monte Carlo: double the instances until the 5th-percentile interval is
   narrower than 0.01.
4. TRICE Table I in miniature: KPP of both networks against sigma_d (0 to 0.4), with a
   plot (Fig. 5/6 style).

Usage: ``.venv/bin/python examples/30_kpp_study.py [--out DIR] [--epochs N]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from xbar import data
from xbar.cli.tables import format_table
from xbar.evaluation import monte_carlo, sigma_sweep
from xbar.training import train as xtrain


def train(noisy: bool, preset: str, epochs: int, seed: int = 0):
    """LeNet on mnist5k by plain SGD, or with ``noisy`` by Gaussian noise injection from ``preset``
    (TRICE Algorithm 1, ``xbar.training``), both with 4-bit weights and activations."""
    algo, hyper = ("noise", {"family": "gaussian"}) if noisy else ("sgd", {})
    model, _ = xtrain("lenet", "mnist5k", preset, algo, epochs=epochs, seed=seed, lr=0.02, batch_size=64,
                      checkpoint_every=0, progress=False, **hyper)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", help="directory for the plots (default: a new temporary directory)")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="xbar-example-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    split = data.load("mnist5k", seed=0)

    plain = train(False, "rram-uniform", args.epochs)
    noisy = train(True, "rram-uniform", args.epochs)
    print(f"trained two LeNets in {time.time() - t0:.0f} s")

    # 2. KPP of the noise-trained network (TRICE Algorithm 2) and its histogram (Fig. 2)
    r = monte_carlo(noisy, split, "rram-uniform", n=200, seed=0, percentile=1)
    lo, hi = r.interval()
    print(f"\nrram-uniform (sigma_d = 0.1), {r.n} instances on {r.num_images} test digits:")
    print(f"  accuracy: float weights {r.clean['accuracy']:.4f}, stored 4-bit {r.stored['accuracy']:.4f}, "
          f"programmed mean {r.mean:.4f} (std {r.std:.4f})")
    print(f"  1st-percentile accuracy (x_({r.to_dict()['order_statistic']}) of {r.n}) {r.kpp():.4f}, "
          f"95% CI [{'-inf' if lo is None else f'{lo:.4f}'}, {hi:.4f}]")
    for k in (5, 10):
        print(f"  {k}th percentile {r.kpp(k):.4f}")
    r.plot(out / "kpp_histogram.png", ks=(1, 5, 10), force=True)

    # 3. adaptive: stop when the 5th-percentile interval is narrower than 0.01
    a = monte_carlo(noisy, split, "rram-uniform", n=50, seed=0, percentile=5, tolerance=0.01, max_n=400, progress=False)
    steps = ", ".join(f"N={h['n']}: width {h['interval_width']:.4f}" for h in a.history)
    print(f"\nadaptive 5th percentile: {steps} -> KPP {a.kpp():.4f} with {a.n} instances")

    # 4. TRICE Table I in miniature
    sweep = sigma_sweep({"w/o noise": plain, "Gauss.": noisy}, split, "rram-uniform",
                        sigmas=(0.0, 0.1, 0.2, 0.3, 0.4), n=40, percentile=1, limit=500, progress=False)
    print("\n1st-percentile accuracy (%) against sigma_d (TRICE Table I layout, 40 instances, 500 digits):")
    print(format_table(sweep.table(), ["sigma_d", "w/o noise", "Gauss."]))
    sweep.plot(out / "kpp_vs_sigma.png", force=True)
    print(f"\nplots in {out}/ ; total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
