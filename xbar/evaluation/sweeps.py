"""KPP against device variation for several models (TRICE Table I, Fig. 5 and 6).

Every (model, sigma_d) cell is a Monte Carlo study (``monte_carlo``) with the same seed,
so the cells share random numbers: with Gaussian programming noise an instance's noise
at sigma is exactly proportional to its noise at any other sigma, which makes the
curves smooth and differences between models paired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from xbar.evaluation.montecarlo import MonteCarloResult, _json_safe, monte_carlo

__all__ = ["TRICE_SIGMAS", "SweepResult", "sigma_sweep"]

#: The sigma_d column of TRICE Table I.
TRICE_SIGMAS = (0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40)


@dataclass
class SweepResult:
    """KPP (and its interval, mean, std) of accuracy per model and sigma: arrays [models, sigmas]."""

    models: list[str]
    sigmas: list[float]
    parameter: str
    percentile: float
    kpp: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: int
    seed: int
    preset: str | None
    results: dict[tuple[str, float], MonteCarloResult] = field(default_factory=dict, repr=False)

    def table(self) -> list[dict]:
        """TRICE Table I layout: one row per sigma, one KPP column (in %) per model."""
        rows = []
        for j, s in enumerate(self.sigmas):
            row: dict = {self.parameter: s}
            for i, m in enumerate(self.models):
                row[m] = 100.0 * float(self.kpp[i, j])
            rows.append(row)
        return rows

    def to_dict(self, per_instance: bool = False) -> dict:
        out = {
            "study": "sigma_sweep",
            "preset": self.preset,
            "parameter": self.parameter,
            "percentile": self.percentile,
            "n": self.n,
            "seed": self.seed,
            "models": list(self.models),
            "sigmas": list(self.sigmas),
            "kpp": self.kpp.tolist(),
            "kpp_lower": self.lower.tolist(),
            "kpp_upper": self.upper.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "table": self.table(),
        }
        if per_instance:
            out["per_instance"] = {
                f"{m}@{s:g}": r.per_instance["accuracy"].tolist() for (m, s), r in self.results.items()
            }
        return _json_safe(out)

    def plot(self, path, force: bool = False):
        from xbar.evaluation.plots import plot_sweep

        return plot_sweep(self, path, force=force)


def sigma_sweep(
    models: Mapping[str, nn.Module] | nn.Module,
    data,
    preset,
    sigmas: Sequence[float] = TRICE_SIGMAS,
    n: int = 1000,
    percentile: float = 1.0,
    parameter: str = "sigma_d",
    seed: int = 0,
    **mc_options,
) -> SweepResult:
    """KPP of every model at every ``sigmas`` value of preset field ``parameter`` (TRICE Table I).

    ``preset`` is a shipped name, TOML path or Preset; each sigma loads it with
    ``parameter`` overridden (``xbar.presets.load(preset, sigma_d=s)``). ``mc_options``
    go to ``monte_carlo`` (batch_instances, device, limit, ...).
    """
    from xbar import presets

    if isinstance(models, nn.Module):
        models = {"model": models}
    if not models:
        raise ValueError("sigma_sweep: no models")
    sig = [float(s) for s in sigmas]
    if not sig or any(s < 0 for s in sig):
        raise ValueError(f"sigmas = {sig}: expected values >= 0")
    base = presets.resolve(preset)
    names = list(models)
    shape = (len(names), len(sig))
    kpp, lo, hi, mean, std = (np.full(shape, np.nan) for _ in range(5))
    results: dict[tuple[str, float], MonteCarloResult] = {}
    for j, s in enumerate(sig):
        p = base.with_overrides(**{parameter: s})
        for i, name in enumerate(names):
            r = monte_carlo(models[name], data, p, n=n, seed=seed, percentile=percentile, **mc_options)
            results[(name, s)] = r
            kpp[i, j] = r.kpp()
            a, b = r.interval()
            lo[i, j] = np.nan if a is None else a
            hi[i, j] = np.nan if b is None else b
            mean[i, j], std[i, j] = r.mean, r.std
    return SweepResult(names, sig, parameter, percentile, kpp, lo, hi, mean, std, n, seed, base.name, results)
