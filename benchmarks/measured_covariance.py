"""Cost of a Monte Carlo draw with a measured covariance against the other device models.

``xbar.sample_weights`` of ``n`` instances of one 512 x 512 layer (two 256 x 256 tiles
per side) under: independent Gaussian noise (rram-uniform), the Kronecker kernel
(reram-correlated-a, 128 x 128 tiles), a measured low-rank covariance (k = 16 per
128 x 128 tile), a measured dense covariance (32 x 32 tiles, d = 1,024) and WVAT's
range-relative variation (wvat-10); each against ``torch.randn`` of the same shape in
the same round (``ratio``: median over rounds). A dense draw costs d multiply-adds per
device, low-rank k, Kronecker tile_rows + tile_cols.

    python -m benchmarks.measured_covariance [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics

import torch

import xbar
from benchmarks._timing import emit, environment, quartiles, round_robin
from xbar import presets
from xbar.devices import KroneckerCovariance
from xbar.devices.measured import MeasuredCovariance


def measured(kind: str, tile: int, k: int = 16):
    """A preset with a measured covariance over ``tile x tile`` devices (a Kronecker kernel
    plus a random rank-4 part, so that it is not separable)."""
    g = torch.Generator().manual_seed(0)
    d = tile * tile
    if kind == "dense":
        u = torch.randn(d, 4, generator=g, dtype=torch.float64) / d**0.5
        cov = KroneckerCovariance(0.1, 2.0, 4.0).to_dense(tile, tile) + u @ u.T
        corr = MeasuredCovariance("dense", tile, tile, covariance=cov)
    else:
        v = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))[0]
        corr = MeasuredCovariance("low-rank", tile, tile, eigenvalues=torch.logspace(-1, -3, k), eigenvectors=v)
    base = presets.load("rram-uniform", tile_rows=tile, tile_cols=tile)
    from dataclasses import replace

    return replace(base, name=f"measured-{kind}", correlation=corr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="fewer rounds and instances")
    args = ap.parse_args()
    device = torch.device(args.device)
    n = 4 if args.quick else 16
    repeats = 5 if args.quick else 15
    w = torch.randn(512, 512, device=device)
    models = {
        "independent": presets.load("rram-uniform"),
        "kronecker": presets.load("reram-correlated-a"),
        "low-rank-16": measured("low-rank", 128),
        "dense-1024": measured("dense", 32),
        "wvat-10": presets.load("wvat-10"),
    }
    gen = torch.Generator(device=device).manual_seed(0)
    steps = {"randn": lambda: torch.randn((n, *w.shape), generator=gen, device=device)}
    for name, p in models.items():
        dm = p.device_model()  # built once: the timing is the draw, not the preset's set-up
        steps[name] = lambda dm=dm: xbar.sample_weights(w, dm, n, generator=gen)
    samples = round_robin(steps, device, repeats)
    out = {}
    for name in models:
        ratios = [a / b for a, b in zip(samples[name], samples["randn"])]
        out[name] = {
            "ms": statistics.median(samples[name]),
            "ratio": statistics.median(ratios),
            "ratio_quartiles": quartiles(ratios),
        }
    emit({
        "benchmark": "measured_covariance",
        "instances": n,
        "weights": list(w.shape),
        "randn_ms": statistics.median(samples["randn"]),
        "results": out,
        "environment": environment(device),
    })


if __name__ == "__main__":
    main()
