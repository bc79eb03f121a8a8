"""Confidence intervals and normality diagnostics shared by the fitters."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

SHAPIRO_MAX = 5000  # Shapiro-Wilk p-values are only accurate up to this sample size


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval ``[low, high]`` at level ``confidence``."""

    low: float
    high: float
    confidence: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_list(self) -> list[float]:
        return [float(self.low), float(self.high)]

    def map(self, fn) -> Interval:
        """Interval of a monotone increasing function of the quantity."""
        return Interval(float(fn(self.low)), float(fn(self.high)), self.confidence)


def mean_interval(mean: float, sd: float, n: int, confidence: float) -> Interval:
    """Student t interval ``mean -/+ t_{1-a/2, n-1} sd / sqrt(n)`` (exact for normal data)."""
    if n < 2:
        return Interval(-math.inf, math.inf, confidence)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean - half, mean + half, confidence)


def cluster_mean_interval(x: np.ndarray, clusters: np.ndarray, confidence: float) -> Interval:
    """t interval of a mean over independent clusters (arrays, or programmings of one).

    Devices of one array share a spatially correlated field, so their deviations are not
    independent and ``s / sqrt(n)`` understates the error of their mean; arrays are. With
    A clusters of sizes ``n_g`` and means ``m_g`` the overall mean is ``sum n_g m_g / n`` and
    its variance is estimated by ``A / (A - 1) sum_g (n_g / n)^2 (m_g - mean)^2`` with a
    ``t_{A-1}`` quantile (for equal cluster sizes: the t interval of the A cluster means,
    exact for Gaussian deviations whatever the covariance within an array). Fewer than
    2 clusters give an unbounded interval: one array cannot separate a systematic offset
    from its own realisation of the correlated field.
    """
    x = np.asarray(x, dtype=np.float64)
    ids, inv = np.unique(np.asarray(clusters), return_inverse=True)
    a = ids.size
    if a < 2:
        return Interval(-math.inf, math.inf, confidence)
    n_g = np.bincount(inv).astype(np.float64)
    m_g = np.bincount(inv, weights=x) / n_g
    mean = float(x.mean())
    var = a / (a - 1) * float(np.sum((n_g / x.size) ** 2 * (m_g - mean) ** 2))
    half = stats.t.ppf(0.5 + confidence / 2, a - 1) * math.sqrt(var)
    return Interval(mean - half, mean + half, confidence)


PIVOT_DRAWS = 20_000  # Monte Carlo draws of the generalized pivots below


def variance_pivot(var: float, df: float, rng: np.random.Generator, size: int = PIVOT_DRAWS) -> np.ndarray:
    """Draws of the generalized pivot ``df s^2 / chi2_df`` of a normal variance estimated as ``var``.

    Its quantiles are the chi-square interval of the variance; ``df = inf`` treats ``var``
    as known (all draws equal).
    """
    if not math.isfinite(df):
        return np.full(size, float(var))
    return float(var) * df / rng.chisquare(df, size)


def sigma_difference_interval(total: np.ndarray, minus: np.ndarray, confidence: float) -> Interval:
    """Interval of ``sigma = sqrt(max(0, V_total - V_minus))`` from generalized pivot draws.

    ``total`` and ``minus`` are draws of independent pivots (:func:`variance_pivot`, or
    bootstrap-based draws) of the measured variance and of the variance subtracted from
    it (read noise, fit error, correlated part). The percentiles of their difference give
    a generalized confidence interval (Weerahandi) that carries the uncertainty of both
    estimates, unlike subtracting the point estimate from both ends of the measured
    variance's interval; ends below 0 are reported as 0.
    """
    a = 1.0 - confidence
    lo, hi = np.quantile(np.asarray(total) - np.asarray(minus), [a / 2, 1 - a / 2])
    return Interval(math.sqrt(max(0.0, float(lo))), math.sqrt(max(0.0, float(hi))), confidence)


def sigma_interval(sd: float, df: int, confidence: float) -> Interval:
    """Chi-square interval for a normal standard deviation with ``df`` degrees of freedom.

    ``sqrt(df s^2 / chi2_{1-a/2, df}) <= sigma <= sqrt(df s^2 / chi2_{a/2, df})``.
    """
    if df < 1:
        return Interval(0.0, math.inf, confidence)
    a = 1.0 - confidence
    lo = math.sqrt(df * sd**2 / stats.chi2.ppf(1 - a / 2, df))
    hi = math.sqrt(df * sd**2 / stats.chi2.ppf(a / 2, df))
    return Interval(lo, hi, confidence)


@dataclass(frozen=True)
class Normality:
    """Normality diagnostics of one sample against a normal with fitted mean and sigma.

    ks_p: Kolmogorov-Smirnov p-value with estimated parameters (conservative: the
    Lilliefors correction is not applied, so true p-values are smaller).
    shapiro_p: Shapiro-Wilk p-value (on an evenly spaced subsample of the sorted data
    above 5,000 values); None below 3 values.
    anderson_stat / anderson_p: Anderson-Darling A^2 with estimated parameters and
    its p-value interpolated from Stephens' table (clipped to [0.01, 0.15]).
    """

    ks_p: float | None
    shapiro_p: float | None
    anderson_stat: float | None
    anderson_p: float | None

    def to_dict(self) -> dict:
        return {k: (None if v is None else float(v)) for k, v in self.__dict__.items()}


def normality(x: np.ndarray) -> Normality:
    """KS, Shapiro-Wilk and Anderson-Darling diagnostics of ``x`` (see :class:`Normality`)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n < 3 or not np.std(x) > 0:
        return Normality(None, None, None, None)
    mu, sd = float(np.mean(x)), float(np.std(x, ddof=1))
    ks_p = float(stats.kstest(x, "norm", args=(mu, sd)).pvalue)
    xs = np.sort(x)
    if n > SHAPIRO_MAX:
        xs = xs[np.linspace(0, n - 1, SHAPIRO_MAX).round().astype(int)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sh_p = float(stats.shapiro(xs).pvalue)
        ad = stats.anderson(x, dist="norm", method="interpolate")
    return Normality(ks_p, sh_p, float(ad.statistic), float(ad.pvalue))
