"""Per-level programming noise: mean offset and sigma of each level (TRICE Eq. 15).

TRICE models the deviation of a device programmed to level h as
``Delta g ~ N(0, sigma_h)`` (Eq. 15), with FeFET1/FeFET2 (Eq. 16-17) as per-level
multiples of a base ``sigma_d``. The fitter estimates, for each level, the mean
offset ``mu_h`` and sigma ``sigma_h`` of ``programmed - target`` in level units, with
a chi-square interval for sigma, normality diagnostics (KS, Shapiro-Wilk,
Anderson-Darling) and an interval for the mean that depends on the data:

* independent devices: the Student t interval ``mean -/+ t_{n-1} s / sqrt(n)``;
* spatially correlated devices (``correlated=True``; :func:`xbar.calibration.fit` sets
  it when the file has ``/array_maps``): the cluster interval over independent arrays
  (:func:`xbar.calibration.intervals.cluster_mean_interval`; one cluster per
  ``(array, cycle)``), unbounded with fewer than 2 clusters;
* a level with values clipped at 0 uS: the left-censored normal (Tobit) fit of
  :mod:`xbar.calibration.censored` for both mean and sigma, Wald intervals.

A mean offset is *significant* when its interval excludes 0; only significant offsets
go into the preset's ``mean_levels`` (:attr:`ProgrammingFit.preset_mean_levels`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xbar.calibration.censored import CensoredLevel, censored_rows, fit_level
from xbar.calibration.intervals import (
    Interval,
    Normality,
    cluster_mean_interval,
    mean_interval,
    normality,
    sigma_interval,
)
from xbar.calibration.schema import Programming

NO_NORMALITY = Normality(None, None, None, None)


@dataclass(frozen=True)
class SampleStats:
    """Mean and sigma of one sample with their intervals and normality diagnostics.

    ``mean_method`` names the mean interval: "t", "cluster" (over ``clusters``
    independent arrays) or "censored" (Tobit fit of a level with ``censored`` values
    clipped at 0 uS; its sigma is the censored-normal MLE too).
    """

    n: int
    mean: float
    mean_ci: Interval
    sigma: float
    sigma_ci: Interval
    normality: Normality
    mean_method: str = "t"
    clusters: int = 1
    censored: int = 0

    @property
    def mean_significant(self) -> bool:
        """The mean's interval excludes 0."""
        return not self.mean_ci.contains(0.0)

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "mean": self.mean,
            "mean_ci": self.mean_ci.to_list(),
            "mean_method": self.mean_method,
            "mean_significant": self.mean_significant,
            "clusters": self.clusters,
            "censored": self.censored,
            "sigma": self.sigma,
            "sigma_ci": self.sigma_ci.to_list(),
            **self.normality.to_dict(),
        }


def sample_stats(
    x: np.ndarray,
    confidence: float = 0.95,
    clusters: np.ndarray | None = None,
    censored: np.ndarray | None = None,
    censor_at: float | None = None,
) -> SampleStats:
    """Statistics of ``x``: see the module docstring for the choice of the mean interval.

    Args:
        clusters: cluster id of every value (devices correlated within a cluster).
        censored: mask of values clipped at ``censor_at`` (a Tobit fit when any is set).
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if censored is not None and np.any(censored):
        k = int(np.count_nonzero(censored))
        t = fit_level(CensoredLevel(x[~censored], k, float(censor_at)), confidence)
        return SampleStats(n, t.mu, t.mu_ci, t.sigma, t.sigma_ci, NO_NORMALITY, "censored", 1, k)
    mean = float(np.mean(x))
    sd = float(np.std(x, ddof=1)) if n > 1 else 0.0
    if clusters is None:
        mean_ci, method, n_clusters = mean_interval(mean, sd, n, confidence), "t", 1
    else:
        mean_ci, method = cluster_mean_interval(x, clusters, confidence), "cluster"
        n_clusters = int(np.unique(clusters).size)
    return SampleStats(
        n=n,
        mean=mean,
        mean_ci=mean_ci,
        sigma=sd,
        sigma_ci=sigma_interval(sd, n - 1, confidence),
        normality=normality(x),
        mean_method=method,
        clusters=n_clusters,
    )


def cluster_ids(data: Programming) -> np.ndarray:
    """One id per ``(array, cycle)`` of every row (a missing coordinate counts as 0)."""
    n = data.target_level.size
    array = data.array if data.array is not None else np.zeros(n, np.int64)
    cycle = data.cycle if data.cycle is not None else np.zeros(n, np.int64)
    return array * (int(cycle.max()) + 1) + cycle


@dataclass(frozen=True)
class ProgrammingFit:
    """Result of :class:`LevelNoiseFitter`: one :class:`SampleStats` per level."""

    levels: tuple[SampleStats, ...]
    confidence: float

    @property
    def sigma_levels(self) -> np.ndarray:
        return np.array([s.sigma for s in self.levels])

    @property
    def mean_levels(self) -> np.ndarray:
        return np.array([s.mean for s in self.levels])

    @property
    def preset_mean_levels(self) -> np.ndarray:
        """Mean offsets whose interval excludes 0, the others as 0 (the preset's ``mean_levels``)."""
        return np.array([s.mean if s.mean_significant else 0.0 for s in self.levels])

    @property
    def censored(self) -> int:
        return sum(s.censored for s in self.levels)

    @property
    def n(self) -> int:
        return sum(s.n for s in self.levels)

    def to_dict(self) -> dict:
        return {"confidence": self.confidence, "levels": [s.to_dict() for s in self.levels]}


@dataclass(frozen=True)
class LevelNoiseFitter:
    """Fit per-level mean offset and sigma (level units) of programming deviations.

    Args:
        confidence: two-sided level of the reported intervals.
        correlated: devices of one array are spatially correlated; mean intervals are
            cluster intervals over ``(array, cycle)``.
    """

    confidence: float = 0.95
    correlated: bool = False

    def fit(self, data: Programming) -> ProgrammingFit:
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence = {self.confidence}; expected in (0, 1)")
        dev = data.deviation_levels()
        cens = censored_rows(data)
        zero = data.zero_level()
        clusters = cluster_ids(data) if self.correlated else None
        out = []
        for h in range(data.levels):
            sel = data.target_level == h
            out.append(
                sample_stats(
                    dev[sel],
                    self.confidence,
                    clusters=None if clusters is None else clusters[sel],
                    censored=cens[sel],
                    censor_at=None if zero is None else zero - h,
                )
            )
        return ProgrammingFit(tuple(out), self.confidence)
