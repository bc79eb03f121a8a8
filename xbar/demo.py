"""``xbar demo``: the main job end to end on bundled data, in a few minutes on a laptop CPU.

1. Train LeNet on the 4,000 bundled MNIST training digits (``mnist5k``) three ways against
   the ``fefet2`` preset (TRICE Eq. 15, 17) at a large device variation: plain SGD,
   Gaussian noise injection (TRICE Algorithm 1) and TRICE (Algorithm 3, right-censored
   noise with the adaptive search of sigma_t), all with 4-bit weights and activations.
2. Program each trained network ``mc`` times on emulated devices and report the clean
   accuracy and the mean and 1st-percentile accuracy (KPP, TRICE Algorithm 2) over the
   Monte Carlo instances of the 1,000 test digits.
3. Convert the SGD network with every shipped preset (``xbar.convert``: aihwkit analog
   tiles) and report the same statistics per preset, with its crossbar tile count.

Everything lands in one output directory: the three run directories (``xbar eval DIR/trice``
studies them further), ``demo.json`` with every number printed, and ``demo.png``.
The demo is shortened from the paper's schedules (10 epochs instead of 100, N_train = 30
instead of 300 for TRICE's ranking) so that it finishes in a few minutes on two CPU cores.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbar.errors import InputError

#: Marker file that says a directory was written by ``xbar demo`` (so a rerun may replace it).
MARKER = "demo.json"


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run (defaults: the ``xbar demo`` command's)."""

    out: Path = Path("runs/demo")
    preset: str = "fefet2"
    sigma_d: float = 0.5
    epochs: int = 10
    mc: int = 200
    seed: int = 0
    lr: float = 0.02
    batch_size: int = 64
    trice_n_train: int = 30
    trice_warm: int = 2
    trice_kpp_images: int = 500
    presets: bool = True
    progress: bool = True
    force: bool = False
    overrides: tuple[str, ...] = ()  # SECTION.FIELD=VALUE, applied after sigma_d (the CLI's --set)


#: The trained models: (run name, algorithm, hyper-parameters beyond the common ones).
def _runs(cfg: DemoConfig) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("sgd", "sgd", {}),
        ("noise", "noise", {"family": "gaussian"}),
        ("trice", "trice", {"n_train": cfg.trice_n_train, "warm": min(cfg.trice_warm, cfg.epochs - 1),
                            "kpp_images": cfg.trice_kpp_images}),
    ]


def prepare_output(out: Path, force: bool) -> None:
    """Make ``out`` ready: empty or new, or an earlier demo's directory (replaced); else refuse."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file() and not force:
            raise InputError(f"{out}: exists and was not written by xbar demo; pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _stats(result) -> dict[str, Any]:
    lo, hi = result.interval(1.0)
    return {
        "clean": result.clean["accuracy"],
        "stored": result.stored["accuracy"],
        "mean": result.mean,
        "std": result.std,
        "kpp1": result.kpp(1.0),
        "kpp1_interval": [lo, hi],
        "n": result.n,
    }


def _pct(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:5.1f}%"


def table(rows: list[tuple[str, dict[str, Any]]], first: str) -> str:
    """A fixed-width table of float / stored / mean / std / 1st-percentile accuracy."""
    width = max(len(first), *(len(r[0]) for r in rows))
    head = f"{first:<{width}}  float   stored    mean     std    1st pct  (95% interval)"
    lines = [head, "-" * len(head)]
    for name, s in rows:
        lo, hi = s["kpp1_interval"]
        lines.append(
            f"{name:<{width}}  {_pct(s['clean'])}  {_pct(s['stored'])}  {_pct(s['mean'])}  {100 * s['std']:5.1f}   {_pct(s['kpp1'])}"
            f"   [{_pct(lo).strip()}, {_pct(hi).strip()}]"
        )
    return "\n".join(lines)


def _print(msg: str) -> None:
    print(msg, flush=True)


def run(cfg: DemoConfig, say: Callable[[str], None] = _print) -> dict[str, Any]:
    """Run the demo, reporting with ``say``; returns everything as JSON-ready data (also ``demo.json``)."""
    import xbar
    from xbar import data, presets
    from xbar.evaluation import monte_carlo
    from xbar.fileio import atomic_write_json
    from xbar.tiles import tile_map, tile_map_totals
    from xbar.training import train

    if cfg.epochs < 2:
        raise InputError(f"--epochs {cfg.epochs}: expected >= 2 (TRICE needs a warm-up epoch)")
    if cfg.mc < 1:
        raise InputError(f"--mc {cfg.mc}: expected >= 1")
    if not 0 <= cfg.sigma_d < math.inf:
        raise InputError(f"--sigma-d {cfg.sigma_d}: expected a finite value >= 0")
    if not 0 < cfg.lr < math.inf:
        raise InputError(f"--lr {cfg.lr}: expected a finite value > 0")
    base = presets.resolve(cfg.preset)
    if base.programming is None or base.programming.sigma_poly_uS is not None:
        fits = [n for n in presets.names() if (p := presets.resolve(n).programming) is not None and p.sigma_poly_uS is None]
        raise InputError(
            f"--preset {cfg.preset}: {'has no programming noise' if base.programming is None else 'its programming noise is a conductance polynomial'}"
            f", so --sigma-d does not apply; expected a preset with sigma_d in level units: {', '.join(fits)}"
        )
    device_preset = presets.apply_overrides(base.with_overrides(sigma_d=cfg.sigma_d), cfg.overrides)
    prepare_output(cfg.out, cfg.force)
    t_start = time.perf_counter()
    split = data.load("mnist5k", seed=cfg.seed)
    out: dict[str, Any] = {
        "demo": "xbar",
        "data": "mnist5k",
        "model": "lenet",
        "preset": cfg.preset,
        "sigma_d": cfg.sigma_d,
        "overrides": list(cfg.overrides),
        "epochs": cfg.epochs,
        "mc": cfg.mc,
        "seed": cfg.seed,
        "training": {},
        "presets": {},
    }
    say(f"xbar demo: LeNet on {len(split.train)} bundled MNIST digits, tested on {len(split.test)}; "
         f"device {cfg.preset} at sigma_d = {cfg.sigma_d}, {cfg.mc} Monte Carlo instances per model")
    say("")
    say(f"[1/2] training ({cfg.epochs} epochs each) and programming {cfg.mc} instances of each model")
    results = {}
    models = {}
    for name, algo, hyper in _runs(cfg):
        t0 = time.perf_counter()
        model, history = train(
            "lenet", "mnist5k", device_preset, algo, epochs=cfg.epochs, seed=cfg.seed, out=cfg.out / name,
            force=True, lr=cfg.lr, batch_size=cfg.batch_size, checkpoint_every=0,
            progress=None if cfg.progress else False,
            **hyper,
        )
        t1 = time.perf_counter()
        res = monte_carlo(model, split.test, device_preset, n=cfg.mc, seed=cfg.seed + 1, progress=cfg.progress)
        models[name] = model
        results[name] = res
        stats = _stats(res)
        stats.update(train_seconds=t1 - t0, mc_seconds=time.perf_counter() - t1, algo=algo, hyper=hyper)
        out["training"][name] = stats
        say(f"  {name:<6} trained in {t1 - t0:5.1f} s, {cfg.mc} instances in {stats['mc_seconds']:4.1f} s: "
             f"1st percentile {_pct(stats['kpp1']).strip()}")
    say("")
    say(table([(n, out["training"][n]) for n in results], f"{cfg.preset} s={cfg.sigma_d}"))
    say("")

    if cfg.presets:
        say(f"[2/2] the SGD model converted to aihwkit tiles of every shipped preset, {cfg.mc} instances each")
        rows = []
        sgd = models["sgd"]
        for pname in presets.names():
            preset = presets.resolve(pname)
            analog = xbar.convert(sgd, preset)
            tiles = tile_map_totals(tile_map(analog))
            res = monte_carlo(analog, split.test, n=cfg.mc, seed=cfg.seed + 1, progress=cfg.progress)
            stats = _stats(res)
            stats.update(tiles=tiles["tiles"], devices=tiles["devices"], description=preset.description)
            out["presets"][pname] = stats
            rows.append((pname, stats))
        say(table(rows, "preset"))
        say("(each preset at its own shipped noise level; float: the trained weights, stored: as the devices "
            "store them, before noise)")
        say("")

    out["seconds"] = time.perf_counter() - t_start
    plot_path = cfg.out / "demo.png"
    _plot(results, plot_path, f"LeNet / mnist5k under {cfg.preset} (sigma_d = {cfg.sigma_d})")
    atomic_write_json(cfg.out / MARKER, out, force=True)
    say(f"done in {out['seconds']:.0f} s. Wrote {cfg.out}/{{sgd,noise,trice}} (runs), {cfg.out / MARKER}, {plot_path}")
    say("next: xbar eval " + str(cfg.out / "trice") + " --mc 1000 --plot kpp.png"
         + "   |   xbar drift " + str(cfg.out / "sgd") + " --preset pcm"
         + "   |   xbar bitflip " + str(cfg.out / "sgd"))
    return out


def _plot(results: dict, path: Path, title: str) -> None:
    """Empirical CDFs of the per-instance accuracy of each trained model (TRICE Fig. 2 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from xbar.fileio import atomic_write

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, res in results.items():
        acc = np.sort(res.values("accuracy"))
        ax.step(100 * acc, np.arange(1, acc.size + 1) / acc.size, where="post",
                label=f"{name}: 1st pct {100 * res.kpp(1.0):.1f}%")
    ax.axhline(0.01, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("test accuracy of a programmed instance (%)")
    ax.set_ylabel("fraction of instances")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    atomic_write(path, lambda t: fig.savefig(t, format="png", dpi=120), force=True)
    plt.close(fig)
