"""Plots of the studies (matplotlib's object API with the Agg canvas; no display needed).

Each function writes one figure atomically (``xbar.fileio.atomic_write``) in the format
named by the path's suffix (png, pdf, svg) and refuses to overwrite without ``force``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from xbar.fileio import atomic_write

__all__ = [
    "ordinal",
    "plot_distribution",
    "plot_sweep",
    "plot_drift",
    "plot_bitflip",
    "plot_landscape_1d",
    "plot_landscape_2d",
]


def ordinal(k: float) -> str:
    """1st, 2nd, 3rd, 5th, 2.5th."""
    if float(k).is_integer():
        n = int(k)
        suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        return f"{n}{suffix}"
    return f"{k:g}th"


def _bins(x: np.ndarray):
    """Histogram bins: one per value when the metric is discrete (accuracy on N images)."""
    u = np.unique(x)
    if 1 < u.size <= 100:
        step = float(np.min(np.diff(u)))
        return np.arange(u[0] - step / 2, u[-1] + step, step)
    return min(60, max(10, x.size // 20))


def _figure(w: float = 6.4, h: float = 4.0, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * ncols, h), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig, path: str | os.PathLike, force: bool) -> Path:
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    if fmt not in ("png", "pdf", "svg"):
        from xbar.errors import InputError

        raise InputError(f"{path}: plot format {fmt!r}: expected a .png, .pdf or .svg file")
    return atomic_write(path, lambda t: fig.savefig(t, format=fmt, dpi=120), force=force)


def plot_distribution(result, path, ks: Sequence[float] = (1, 5, 10), force: bool = False, metric: str | None = None) -> Path:
    """Histogram and empirical CDF of a Monte Carlo study with the KPP of each k marked (TRICE Fig. 2)."""
    metric = metric or result.metric
    x = np.asarray(result.values(metric), dtype=float)
    x = x[np.isfinite(x)]
    fig, (ax1, ax2) = _figure(ncols=2)
    ax1.hist(x, bins=_bins(x), density=True, color="tab:red", alpha=0.6)
    colors = ["tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown"]
    for j, k in enumerate(ks):
        v = result.kpp(k, metric)
        c = colors[j % len(colors)]
        ax1.axvline(v, color=c, ls="--", label=f"{ordinal(k)} percentile: {v:.4f}")
        ax2.axhline(k / 100.0, color=c, ls=":", lw=0.8)
        ax2.axvline(v, color=c, ls="--")
    xs = np.sort(x)
    ax2.step(xs, np.arange(1, xs.size + 1) / xs.size, where="post", color="tab:red")
    ax1.set_xlabel(metric)
    ax1.set_ylabel("density")
    ax1.legend(fontsize=8)
    ax2.set_xlabel(metric)
    ax2.set_ylabel("empirical CDF")
    fig.suptitle(f"{result.n} instances, preset {result.preset}")
    return _save(fig, path, force)


def plot_sweep(sweep, path, force: bool = False) -> Path:
    """KPP against sigma per model with the order-statistic intervals (TRICE Fig. 5 and 6)."""
    fig, ax = _figure()
    s = np.asarray(sweep.sigmas)
    for i, m in enumerate(sweep.models):
        y = sweep.kpp[i]
        err = np.vstack([y - sweep.lower[i], sweep.upper[i] - y])
        ax.errorbar(s, y, yerr=np.nan_to_num(err), marker="o", capsize=3, label=m)
    ax.set_xlabel(sweep.parameter)
    ax.set_ylabel(f"{ordinal(sweep.percentile)} percentile accuracy")
    ax.legend()
    ax.set_title(f"preset {sweep.preset}, {sweep.n} instances per point")
    return _save(fig, path, force)


def plot_drift(result, path, force: bool = False) -> Path:
    """Mean and k-th percentile accuracy against time, with and without drift compensation."""
    fig, ax = _figure()
    t = np.asarray(result.times, dtype=float)
    tt = np.where(t > 0, t, np.min(t[t > 0]) / 10 if np.any(t > 0) else 1.0)
    for ci, comp in enumerate(result.compensation):
        lab = "compensated" if comp else "uncompensated"
        acc = result.accuracy[ci]
        (line,) = ax.plot(tt, acc.mean(axis=1), marker="o", label=f"mean, {lab}")
        ax.plot(tt, result.kpp(compensated=comp), marker="v", ls="--", color=line.get_color(), label=f"{ordinal(result.percentile)} percentile, {lab}")
    ax.set_xscale("log")
    ax.set_xlabel("time after programming (s)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    ax.set_title(f"preset {result.preset}, {result.n} instances")
    return _save(fig, path, force)


def plot_bitflip(results: Mapping[str, object], path, force: bool = False) -> Path:
    """Accuracy against bit-flip probability with the Eq. 2 fits and midpoints (Emonds Fig. 3-6)."""
    fig, ax = _figure()
    for label, r in results.items():
        m = r.accuracy.mean(axis=1)
        sd = r.accuracy.std(axis=1)
        (line,) = ax.plot(r.p, m, marker="o", ls="none", label=label)
        ax.fill_between(r.p, m - sd, m + sd, color=line.get_color(), alpha=0.15)
        if r.fit is not None and r.fit.converged:
            pp = np.logspace(np.log10(r.p.min()), np.log10(r.p.max()), 200)
            ax.plot(pp, r.fit.curve(pp), color=line.get_color())
            ax.axvline(r.fit.midpoint_p, color=line.get_color(), ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("bit-flip probability p")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    return _save(fig, path, force)


def plot_landscape_1d(results: Mapping[str, object], path, force: bool = False) -> Path:
    """g(alpha) per direction (thin) and averaged (thick), per model or preset (DAT Sec. III-C)."""
    fig, ax = _figure()
    for label, r in results.items():
        (line,) = ax.plot(r.alphas, r.mean_loss, lw=2, label=label)
        for row in r.loss:
            ax.plot(r.alphas, row, color=line.get_color(), lw=0.5, alpha=0.4)
    first = next(iter(results.values()))
    unit = {"model": "||d||_F = 1", "layer": "||d_l|| = ||w_l||", "none": "raw device draw"}[first.normalize]
    ax.set_xlabel(f"alpha ({unit})")
    ax.set_ylabel("loss g(alpha)")
    ax.legend()
    return _save(fig, path, force)


def plot_landscape_2d(result, path, force: bool = False) -> Path:
    """Contours of g(alpha, beta) with the three models marked (DAT Fig. 1)."""
    fig, ax = _figure(5.5, 4.5)
    A, B = np.meshgrid(result.alphas, result.betas, indexing="ij")
    z = np.log10(np.clip(np.nan_to_num(result.loss, nan=np.nanmax(result.loss[np.isfinite(result.loss)], initial=1.0)), 1e-6, None))
    cs = ax.contourf(A, B, z, levels=20, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log10 loss")
    for (a, b), lab in zip(((0, 0), (1, 0), (0.5, 0.5)), result.labels):
        ax.plot([a], [b], marker="*", color="white", ms=12, mec="black")
        ax.annotate(lab, (a, b), textcoords="offset points", xytext=(6, 6), color="white")
    ax.set_xlabel("alpha (u = w_A - w_SGD)")
    ax.set_ylabel("beta (v = 2 w_B - w_A - w_SGD)")
    return _save(fig, path, force)
