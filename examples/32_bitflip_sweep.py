#!/usr/bin/env python
"""Bit-flip sweeps as in Emonds et al. (Fig. 3-6, Tables 2, 4, 5) on LeNet, in a few minutes on a CPU.

1. Train LeNet on the 4,000 training images of the 5,000 bundled MNIST digits (plain SGD through `xbar.training.train`).
2. Sweep the symmetric bit-flip probability p from 1e-8 to 1e-1 on the activations
   stored as float32 (the paper's setting), fit Eq. 2 and report the midpoint noise
   level mu and the 99%-of-peak noise level; print the observed flips against p x slots.
3. Storage formats: float16, bfloat16, float32, float64 and int8 (post-training
   quantized) -> the midpoint of each and its improvement over float32 (Tables 2 and 4).
4. Thermometer masks on float32 (Fig. 4 / Table 5): the n most significant bits protected.
Plots of every sweep with its fitted curve go to --out.

The default grid (7 sweeps of 15 p values x 2 instances x 200 digits) keeps it to a few
minutes; ``--repeats 5 --images 1000 --masks 1,2,4,9`` is the paper's fuller grid (about
fifteen times longer).

Usage: ``.venv/bin/python examples/32_bitflip_sweep.py [--out DIR] [--repeats R] [--images N] [--masks 2,9]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from xbar import data
from xbar.cli.tables import format_table
from xbar.devices.bitflip import BitFlipModel
from xbar.evaluation import bitflip_sweep, midpoint_table
from xbar.evaluation.plots import plot_bitflip
from xbar.training import train as xtrain


def train(epochs: int = 3, seed: int = 0):
    """LeNet on mnist5k by plain SGD (``xbar.training``; float weights and activations)."""
    model, _ = xtrain("lenet", "mnist5k", "hfox-bitflip", "sgd", epochs=epochs, seed=seed, lr=0.05, batch_size=64,
                      act_bits=0, quantize_weights=False, checkpoint_every=0, progress=False)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", help="directory for the plots (default: a new temporary directory)")
    ap.add_argument("--repeats", type=int, default=2, help="instances per p (the paper uses 5)")
    ap.add_argument("--images", type=int, default=200, help="test digits per instance")
    ap.add_argument("--masks", default="2,9", help="thermometer masks: most significant bits protected, "
                    "comma-separated (the paper's Fig. 4: 1,2,4,9)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="xbar-example-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    split = data.load("mnist5k", seed=0)
    model = train()
    print(f"trained LeNet in {time.time() - t0:.0f} s")
    kw = dict(p_min=1e-8, p_max=1e-1, points_per_decade=2, repeats=args.repeats, targets=["activations"],
              limit=args.images, num_classes=10, progress=False)

    # 2. float32 activations, the paper's default sweep (Fig. 3)
    f32 = bitflip_sweep(model, split, "float32", **kw)
    print(f"\nfloat32 activations, {args.repeats} repeats per p, {f32.num_images} digits "
          f"(baseline accuracy {f32.baseline['accuracy']:.4f}):")
    print(format_table(f32.table(), ["p", "accuracy_mean", "accuracy_std", "flips_activations", "expected_flips_activations"]))
    if f32.fit.converged:
        print(f"midpoint noise level mu = {f32.fit.midpoint_p:.3g} (95% CI {f32.fit.midpoint_p_interval[0]:.3g} .. "
              f"{f32.fit.midpoint_p_interval[1]:.3g}), 99%-of-peak noise {f32.fit.p_at_99_percent_of_peak:.3g}")

    # 3. storage formats (Tables 2 and 4)
    formats = {"float32": f32}
    for storage in ("float16", "bfloat16", "float64", "int8"):
        formats[storage] = bitflip_sweep(model, split, storage, **kw)
    print("\nmidpoint per storage format (improvement over float32, cf. Emonds Tables 2 and 4):")
    print(format_table(midpoint_table(formats, reference="float32"),
                       ["label", "baseline_accuracy", "midpoint_p", "p_99_percent_of_peak", "improvement"]))
    plot_bitflip(formats, out / "storage_formats.png", force=True)

    # 4. thermometer masks on float32 (Fig. 4, Table 5)
    masks = {"msb:0": f32}  # no bit protected: the float32 sweep above
    for n in (int(v) for v in args.masks.split(",") if v):
        mask = BitFlipModel.thermometer("float32", n).mask
        masks[f"msb:{n}"] = bitflip_sweep(model, split, "float32", mask=mask, **kw)
    print("\nmidpoint per mask, n most significant bits protected (cf. Emonds Fig. 4 and Table 5):")
    rows = midpoint_table(masks, reference="msb:0")
    print(format_table(rows, ["label", "midpoint_p", "p_99_percent_of_peak", "improvement", "converged"]))
    plot_bitflip(masks, out / "thermometer_masks.png", force=True)
    print(f"\nplots in {out}/ ; total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
