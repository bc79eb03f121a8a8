"""Conductance drift: ``G(t) = G(t0) (t / t0)^-nu`` per device, nu per level.

For each device a least-squares line ``log G = log G0 - nu log(t / t0)`` gives ``nu_i``
and its standard error ``se_i`` (from the residuals; read noise makes the series
scatter). Per level, ``nu_mean`` is the mean of the ``nu_i`` with a Student t interval.
The spread of the ``nu_i`` is the device-to-device spread plus the fit error, so
``nu_std^2 = max(0, s_nu^2 - mean(se_i^2))``. Its interval is the generalized
(pivot) interval of that difference (:func:`xbar.calibration.intervals.sigma_difference_interval`):
``s_nu^2`` has ``k - 1`` degrees of freedom, ``mean(se_i^2)`` (one residual variance per
device, all at the same times) ``k (T - 2)``, so the uncertainty of the subtracted fit
error is carried too (draws seeded by ``seed``). The preset draws
``nu ~ N(nu_mean, nu_std)`` clipped at 0 per device (aihwkit's PCM drift form).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xbar.calibration.intervals import (
    Interval,
    Normality,
    mean_interval,
    normality,
    sigma_difference_interval,
    variance_pivot,
)
from xbar.calibration.schema import Drift


@dataclass(frozen=True)
class DriftLevel:
    devices: int
    nu_mean: float
    nu_mean_ci: Interval
    nu_std: float  # corrected for the per-device fit error
    nu_std_ci: Interval
    nu_std_raw: float  # sample std of the per-device nu estimates
    fit_se_rms: float  # root-mean-square standard error of the per-device slopes
    r2_median: float
    normality: Normality

    def to_dict(self) -> dict:
        return {
            "devices": self.devices,
            "nu_mean": self.nu_mean,
            "nu_mean_ci": self.nu_mean_ci.to_list(),
            "nu_std": self.nu_std,
            "nu_std_ci": self.nu_std_ci.to_list(),
            "nu_std_raw": self.nu_std_raw,
            "fit_se_rms": self.fit_se_rms,
            "r2_median": self.r2_median,
            **{f"nu_{k}": v for k, v in self.normality.to_dict().items()},
        }


@dataclass(frozen=True)
class DriftFit:
    t0_s: float
    levels: tuple[DriftLevel, ...]
    nu: np.ndarray  # per-device nu estimates [k]
    log_g0: np.ndarray  # per-device fitted log G(t0) [k]
    confidence: float

    @property
    def nu_mean_levels(self) -> np.ndarray:
        return np.array([lv.nu_mean for lv in self.levels])

    @property
    def nu_std_levels(self) -> np.ndarray:
        return np.array([lv.nu_std for lv in self.levels])

    def to_dict(self) -> dict:
        return {
            "t0_s": self.t0_s,
            "confidence": self.confidence,
            "levels": [lv.to_dict() for lv in self.levels],
        }


def loglog_slopes(time_s: np.ndarray, conductance: np.ndarray, t0_s: float):
    """Per-row OLS of ``log G`` on ``log(t / t0)``: returns (nu, se, log_g0, r2)."""
    x = np.log(np.asarray(time_s, dtype=np.float64) / t0_s)
    y = np.log(np.asarray(conductance, dtype=np.float64))
    T = x.size
    xc = x - x.mean()
    sxx = float(np.sum(xc**2))
    slope = (y - y.mean(axis=1, keepdims=True)) @ xc / sxx
    intercept = y.mean(axis=1) - slope * x.mean()
    resid = y - intercept[:, None] - slope[:, None] * x[None, :]
    rss = np.sum(resid**2, axis=1)
    se = np.sqrt(rss / (T - 2) / sxx)
    tss = np.sum((y - y.mean(axis=1, keepdims=True)) ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(tss > 0, 1 - rss / tss, 1.0)
    return -slope, se, intercept, r2


@dataclass(frozen=True)
class DriftFitter:
    """Per-level drift exponent mean and spread from per-device log-log fits.

    Args:
        confidence: level of the intervals.
        seed: seed of the pivot draws of the ``nu_std`` interval.
    """

    confidence: float = 0.95
    seed: int = 0

    def fit(self, data: Drift) -> DriftFit:
        nu, se, log_g0, r2 = loglog_slopes(data.time_s, data.conductance, data.t0_s)
        rng = np.random.default_rng(self.seed)
        fit_df = data.time_s.size - 2
        out = []
        for h in range(data.levels):
            sel = data.target_level == h
            k = int(np.count_nonzero(sel))
            v = nu[sel]
            mean = float(v.mean())
            sd = float(v.std(ddof=1))
            err2 = float(np.mean(se[sel] ** 2))
            std_ci = sigma_difference_interval(
                variance_pivot(sd**2, k - 1, rng),
                variance_pivot(err2, k * fit_df if fit_df > 0 else math.inf, rng),
                self.confidence,
            )
            out.append(
                DriftLevel(
                    devices=k,
                    nu_mean=mean,
                    nu_mean_ci=mean_interval(mean, sd, k, self.confidence),
                    nu_std=math.sqrt(max(0.0, sd**2 - err2)),
                    nu_std_ci=std_ci,
                    nu_std_raw=sd,
                    fit_se_rms=math.sqrt(err2),
                    r2_median=float(np.median(r2[sel])),
                    normality=normality(v),
                )
            )
        return DriftFit(data.t0_s, tuple(out), nu, log_g0, self.confidence)
