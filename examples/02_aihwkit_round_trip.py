#!/usr/bin/env python
"""Round trip between an aihwkit PCM configuration and an xbar preset, in about half a minute on a CPU.

1. Build an aihwkit ``InferenceRPUConfig`` with a ``PCMLikeNoiseModel`` (g_max = 40 uS,
   1.5x programming noise) and global drift compensation, as an aihwkit user would.
2. ``xbar.presets.from_aihwkit`` turns it into an xbar preset (printed as TOML, saved).
3. Train a small MLP on scikit-learn's 8x8 digits, then study it with the preset:
   ``xbar.evaluation.drift_study`` (Monte Carlo, 1 s to 1 year); convert it with the
   aihwkit config directly (``xbar.convert(model, rpu_config)``) and cross-check one
   read time against aihwkit's own tiles built from ``preset.to_aihwkit()``.
4. Go back: ``preset.to_aihwkit()`` is a plain aihwkit config again; a bit-sliced
   preset is refused with every inexpressible part named; ``xbar.to_digital`` gives
   back a plain PyTorch model.

Usage: ``.venv/bin/python examples/02_aihwkit_round_trip.py [--out DIR] [--mc N]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from aihwkit.inference.compensation.drift import GlobalDriftCompensation
from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
from aihwkit.nn.conversion import convert_to_analog
from aihwkit.simulator.configs import InferenceRPUConfig, TorchInferenceRPUConfig
from torch import nn

import xbar
from xbar import data, presets
from xbar.errors import InputError
from xbar.evaluation import drift_study

HOUR, DAY, YEAR = 3600.0, 86400.0, 365 * 86400.0


def train_mlp(split, seed: int = 0, epochs: int = 30) -> nn.Module:
    """A 64-32-10 MLP on the 8x8 digits by plain full-batch Adam (a couple of seconds)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = split.train.tensors
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(epochs * 4):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def accuracy(model: nn.Module, split) -> float:
    x, y = split.test.tensors
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def aihwkit_accuracy(model: nn.Module, split, rpu_config, t: float, n: int) -> np.ndarray:
    """Accuracy of ``n`` instances programmed and drifted to ``t`` by aihwkit's own tiles."""
    analog = convert_to_analog(model, rpu_config).eval()
    torch.manual_seed(1)
    accs = []
    for _ in range(n):
        analog.program_analog_weights()
        analog.drift_analog_weights(t)
        accs.append(accuracy(analog, split))
    return np.array(accs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", help="directory for the preset and plot (default: a new temporary directory)")
    ap.add_argument("--mc", type=int, default=40, help="Monte Carlo instances (default 40)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="xbar-example-"))
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    # 1. an aihwkit user's configuration
    rpu_config = InferenceRPUConfig(
        noise_model=PCMLikeNoiseModel(g_max=40.0, prog_noise_scale=1.5),
        drift_compensation=GlobalDriftCompensation(),
    )

    # 2. the same devices as an xbar preset
    preset = presets.from_aihwkit(rpu_config, name="my-pcm", description="aihwkit PCM at 40 uS, 1.5x programming noise")
    print(presets.dumps(preset))
    path = presets.save(preset, out / "my-pcm.toml", force=True)
    print(f"saved {path}\n")

    # 3. study a model with it
    split = data.load("digits", seed=0)
    model = train_mlp(split)
    print(f"MLP on {len(split.train)} 8x8 digits, clean test accuracy {accuracy(model, split):.4f}")
    r = drift_study(model, split, preset, times=[1.0, HOUR, DAY, YEAR], n=args.mc, seed=0,
                    compensation=(True,), progress=False)
    print(f"\n{r.n} instances of the preset, global drift compensation")
    print(f"{'time':>9} {'mean':>7} {'std':>7} {'1st pct':>8}")
    for row in r.table():
        print(f"{row['time']:>9} {row['mean']:7.4f} {row['std']:7.4f} {row['kpp']:8.4f}")
    r.plot(out / "accuracy_vs_time.png", force=True)

    analog = xbar.convert(model, rpu_config).eval()  # the aihwkit config itself, read through from_aihwkit
    analog.program_analog_weights()
    analog.drift_analog_weights(DAY)
    print(f"\nxbar.convert(model, rpu_config), one instance after a day: accuracy {accuracy(analog, split):.4f}")

    n_check = min(args.mc, 20)
    back = preset.to_aihwkit(TorchInferenceRPUConfig)
    aihw = aihwkit_accuracy(model, split, back, DAY, n_check)
    ours = next(row for row in r.table() if row["time_s"] == DAY)
    se = float(np.sqrt(aihw.var(ddof=1) / aihw.size + ours["std"] ** 2 / r.n))
    print(f"aihwkit's own tiles from preset.to_aihwkit(), {n_check} instances after a day: mean {aihw.mean():.4f}, "
          f"xbar {ours['mean']:.4f}: difference {aihw.mean() - ours['mean']:+.4f} (standard error {se:.4f})")
    print("  (aihwkit maps a layer's *programmed* weights to conductances again before drifting, by their own max|W|;"
          " xbar keeps the programmed conductances)")

    # 4. back to aihwkit, and what it cannot express
    config = preset.to_aihwkit()
    nm = config.noise_model
    print(f"\npreset.to_aihwkit(): {type(config).__name__} with {type(nm).__name__}"
          f"(g_max={nm.g_max}, prog_noise_scale={nm.prog_noise_scale}), "
          f"drift compensation {type(config.drift_compensation).__name__}")
    again = presets.from_aihwkit(config)
    same = all(getattr(again, s) == getattr(preset, s) for s in ("mapping", "programming", "read_noise", "drift"))
    print(f"from_aihwkit(preset.to_aihwkit()) has the same device sections: {same}")
    try:
        presets.load("reram-correlated-a").to_aihwkit()
    except InputError as err:
        print(f"reram-correlated-a: {err}")
    digital = xbar.to_digital(analog)
    print(f"\nxbar.to_digital: {type(digital).__name__} of {[type(m).__name__ for m in digital]}")
    print(f"\nfiles in {out}; {time.time() - t_start:.0f} s in all")


if __name__ == "__main__":
    main()
