"""Fit report: diagnostic PNG plots and a summary table (``summary.md``, ``summary.json``).

Plots use matplotlib's object-oriented API on the Agg canvas (no pyplot, no global
backend switch) and every file is written atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from xbar.calibration.result import FitResult, format_table
from xbar.calibration.schema import Measurements
from xbar.errors import InputError
from xbar.fileio import atomic_write, atomic_write_text, check_writable

MAX_PANELS = 16


PLOTS = {
    "programming": "programming_levels.png",
    "drift": "drift_fits.png",
    "array_maps": "correlation.png",
    "switching": "switching_cdf.png",
}


def report_files(groups: FitResult | Sequence[str]) -> list[str]:
    """Names of the files :func:`write_report` writes for a result (or its measurement groups)."""
    present = groups.groups if isinstance(groups, FitResult) else groups
    return [PLOTS[g] for g in PLOTS if g in present] + ["summary.md", "summary.json"]


def check_report_dir(
    groups: FitResult | Sequence[str], directory: str | os.PathLike, force: bool = False
) -> list[Path]:
    """Paths the report would write; raises ``InputError`` (one line) if one cannot be written.

    Nothing is created: the directory must be a directory or creatable (its nearest
    existing parent a writable directory), and no report file may exist (unless
    ``force``) or be a directory.
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise InputError(f"{d}: exists and is not a directory; expected a report directory")
    paths = [d / n for n in report_files(groups)]
    for p in paths:
        check_writable(p, force, create=False)
    return paths


def _figure(n_panels: int, width: float = 3.2, height: float = 2.6):
    from matplotlib.figure import Figure

    cols = min(4, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def _save(fig, path: Path, force: bool) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90), force)


def plot_programming(result: FitResult, m: Measurements, path: Path, force: bool) -> Path:
    """Histogram of each level's deviations with the fitted normal density."""
    dev = m.programming.deviation_levels()
    L = min(m.programming.levels, MAX_PANELS)
    fig, axes = _figure(L)
    for h in range(L):
        ax = axes[h]
        x = dev[m.programming.target_level == h]
        s = result.programming.levels[h]
        ax.hist(x, bins=min(60, max(10, int(np.sqrt(x.size)))), density=True, color="0.75")
        grid = np.linspace(x.min(), x.max(), 200)
        if s.sigma > 0:
            ax.plot(grid, stats.norm.pdf(grid, s.mean, s.sigma), "C0", label="fitted normal")
        else:  # constant deviations: no density to draw
            ax.axvline(s.mean, color="C0", label="constant value")
        if s.censored:
            ax.axvline(float(x.min()), color="C3", ls=":", label=f"0 uS ({s.censored} clipped)")
        ax.set_title(f"level {h}: mu={s.mean:.3g}, sigma={s.sigma:.3g}", fontsize=8)
        ax.set_xlabel("programmed - target (levels)", fontsize=8)
        p = s.normality.anderson_p
        if p is not None:
            ax.text(0.02, 0.95, f"AD p={p:.2g}", transform=ax.transAxes, fontsize=7, va="top")
    for h in range(L):
        if h == 0 or result.programming.levels[h].censored:
            axes[h].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Programming deviations per level (model: {result.selection.chosen})", fontsize=9)
    return _save(fig, path, force)


def plot_drift(result: FitResult, m: Measurements, path: Path, force: bool, per_level: int = 8) -> Path:
    """log G(t)/G(t0) vs log t/t0 with the per-device fitted lines."""
    d, fitres = m.drift, result.drift
    L = min(d.levels, MAX_PANELS)
    fig, axes = _figure(L)
    x = d.time_s / d.t0_s
    for h in range(L):
        ax = axes[h]
        idx = np.flatnonzero(d.target_level == h)[:per_level]
        for j, i in enumerate(idx):
            ratio = d.conductance[i] / math.exp(fitres.log_g0[i])
            ax.loglog(x, ratio, "o", ms=2.5, color=f"C{j % 10}")
            ax.loglog(x, x ** (-fitres.nu[i]), "-", lw=0.8, color=f"C{j % 10}")
        lv = fitres.levels[h]
        ax.set_title(f"level {h}: nu={lv.nu_mean:.3g} +/- {lv.nu_std:.2g}", fontsize=8)
        ax.set_xlabel("t / t0", fontsize=8)
        ax.set_ylabel("G(t) / G(t0)", fontsize=8)
    fig.suptitle("Drift: per-device log-log fits G(t)/G(t0) = (t/t0)^-nu", fontsize=9)
    return _save(fig, path, force)


def plot_correlation(result: FitResult, m: Measurements, path: Path, force: bool) -> Path:
    """First map, empirical autocovariance, fitted vs empirical row/col lags, spectrum."""
    sp = result.spatial
    fig, axes = _figure(6, width=3.4, height=2.8)
    axes = list(axes)
    im = axes[0].imshow(m.array_maps.maps[0], cmap="RdBu_r", aspect="auto")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    axes[0].set_title("map 0: deviation (levels)", fontsize=8)
    im = axes[1].imshow(sp.acov, cmap="viridis", aspect="auto", origin="lower")
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    axes[1].set_title("empirical C(dr, |dc|)", fontsize=8)
    axes[1].set_xlabel("|dc|", fontsize=8)
    axes[1].set_ylabel("dr", fontsize=8)
    fitted = sp.fitted_acov()
    for ax, emp, fit_line, lab in (
        (axes[2], sp.acov[:, 0], fitted[:, 0], "row lag dr"),
        (axes[3], sp.acov[0, :], fitted[0, :], "column lag dc"),
    ):
        lag = np.arange(emp.size)
        ax.plot(lag, emp, "o", ms=3, label="empirical")
        ax.plot(lag[1:], fit_line[1:], "-", label="sigma^2 exp(-d/l)")
        ax.plot([0], [fit_line[0]], "x", color="C1", label="+ independent")
        ax.set_xlabel(lab, fontsize=8)
        ax.set_ylabel("covariance (levels^2)", fontsize=8)
        ax.legend(fontsize=6)
    axes[2].set_title(f"l_rows = {sp.length_rows:.3g}", fontsize=8)
    axes[3].set_title(f"l_cols = {sp.length_cols:.3g}", fontsize=8)
    spec = sp.spectrum
    if spec:
        k = np.arange(1, len(spec["kron_fraction_top"]) + 1)
        axes[4].semilogy(k, spec["kron_fraction_top"], "o-", ms=3, label="fitted K_r (x) K_c")
        axes[4].set_title(f"eigen spectrum: rank 90% = {spec['rank_90']}", fontsize=8)
        axes[4].set_xlabel("eigenvalue index", fontsize=8)
        axes[4].set_ylabel("fraction of variance", fontsize=8)
        axes[4].legend(fontsize=6)
        axes[5].semilogy(spec["rows_fraction_top"], "o-", ms=3, label="fitted rows")
        axes[5].semilogy(spec["empirical_rows_fraction_top"], "x--", ms=3, label="empirical rows")
        axes[5].semilogy(spec["cols_fraction_top"], "o-", ms=3, label="fitted cols")
        axes[5].semilogy(spec["empirical_cols_fraction_top"], "x--", ms=3, label="empirical cols")
        axes[5].set_title("row / column covariance spectra", fontsize=8)
        axes[5].legend(fontsize=6)
    else:
        axes[4].set_visible(False)
        axes[5].set_visible(False)
    fig.suptitle("Spatial correlation (Kronecker exponential fit)", fontsize=9)
    return _save(fig, path, force)


def plot_switching(result: FitResult, m: Measurements, path: Path, force: bool) -> Path:
    """Empirical LRS/HRS CDFs with fitted lognormal CDFs and the Eq. 1 threshold (CDF and probit)."""
    sw = result.switching
    fig, axes = _figure(2, width=4.6, height=3.6)
    lo = min(m.switching.lrs_resistance_ohm.min(), m.switching.hrs_resistance_ohm.min())
    hi = max(m.switching.lrs_resistance_ohm.max(), m.switching.hrs_resistance_ohm.max())
    grid = np.geomspace(lo, hi, 400)
    for data, fitted, name, color in (
        (m.switching.lrs_resistance_ohm, sw.lrs, "LRS", "C0"),
        (m.switching.hrs_resistance_ohm, sw.hrs, "HRS", "C3"),
    ):
        xs = np.sort(data)
        ecdf = (np.arange(1, xs.size + 1) - 0.5) / xs.size
        fcdf = fitted.cdf(grid)
        axes[0].step(xs, ecdf, where="mid", color=color, alpha=0.6, label=f"{name} empirical")
        axes[0].plot(grid, fcdf, "--", color=color, label=f"{name} lognormal fit")
        axes[1].plot(xs, stats.norm.ppf(ecdf), ".", ms=2, color=color, alpha=0.6)
        ok = (fcdf > 1e-12) & (fcdf < 1 - 1e-12)
        axes[1].plot(grid[ok], stats.norm.ppf(fcdf[ok]), "--", color=color)
    for ax, ylab in ((axes[0], "CDF"), (axes[1], "probit (standard normal quantile)")):
        ax.axvline(sw.threshold_ohm, color="k", lw=1, label="R_th (Eq. 1)")
        ax.set_xscale("log")
        ax.set_xlabel("resistance (ohm)", fontsize=8)
        ax.set_ylabel(ylab, fontsize=8)
    axes[1].set_ylim(-4.5, 4.5)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"Emonds Eq. 1: R_th = {sw.threshold_ohm:.4g} ohm, p_bf = {sw.p_bf:.3g}", fontsize=9
    )
    return _save(fig, path, force)


def summary_markdown(result: FitResult) -> str:
    conf = result.options.get("confidence", 0.95)
    rows = result.summary_rows()
    header = ("section", "quantity", "estimate", f"{conf * 100:g}% interval")
    lines = [
        f"# Fit of {Path(result.source_file).name if result.source_file else 'measurements'}",
        "",
        f"- device: {result.device}",
        f"- groups: {', '.join(result.groups)}",
        f"- levels: {result.levels}",
    ]
    if result.source_sha256:
        lines.append(f"- sha256: `{result.source_sha256}`")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if result.notes:
        lines += ["", "Notes:", *[f"- {n}" for n in result.notes]]
    return "\n".join(lines) + "\n"


def write_report(
    result: FitResult, measurements: Measurements, directory: str | os.PathLike, force: bool = False
) -> list[Path]:
    """Write the plots and ``summary.md`` / ``summary.json`` into ``directory``.

    Refuses (``InputError``) before writing anything if a target file exists and not ``force``.
    """
    paths = check_report_dir(result, directory, force)
    Path(directory).mkdir(parents=True, exist_ok=True)
    by_name = {p.name: p for p in paths}
    plotters = {"programming": plot_programming, "drift": plot_drift, "array_maps": plot_correlation,
                "switching": plot_switching}
    out = [plotters[g](result, measurements, by_name[PLOTS[g]], force) for g in PLOTS if PLOTS[g] in by_name]
    out.append(atomic_write_text(by_name["summary.md"], summary_markdown(result), force))
    out.append(
        atomic_write_text(by_name["summary.json"], json.dumps(result.to_dict(), indent=2) + "\n", force)
    )
    return out


__all__ = ["check_report_dir", "format_table", "report_files", "summary_markdown", "write_report"]
