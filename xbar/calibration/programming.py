"""Per-level programming noise: mean offset and sigma of each level (TRICE Eq. 15).

TRICE models the deviation of a device programmed to level h as
``Delta g ~ N(0, sigma_h)`` (Eq. 15), with FeFET1/FeFET2 (Eq. 16-17) as per-level
multiples of a base ``sigma_d``. The fitter estimates, for each level, the mean
offset ``mu_h`` and sigma ``sigma_h`` of ``programmed - target`` in level units, with
a Student t interval for the mean, a chi-square interval for sigma and normality
diagnostics (KS, Shapiro-Wilk, Anderson-Darling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xbar.calibration.intervals import (
    Interval,
    Normality,
    mean_interval,
    normality,
    sigma_interval,
)
from xbar.calibration.schema import Programming


@dataclass(frozen=True)
class SampleStats:
    """Mean and sigma of one sample with their intervals and normality diagnostics."""

    n: int
    mean: float
    mean_ci: Interval
    sigma: float
    sigma_ci: Interval
    normality: Normality

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "mean": self.mean,
            "mean_ci": self.mean_ci.to_list(),
            "sigma": self.sigma,
            "sigma_ci": self.sigma_ci.to_list(),
            **self.normality.to_dict(),
        }


def sample_stats(x: np.ndarray, confidence: float = 0.95) -> SampleStats:
    """Mean (t interval), sigma (ddof=1, chi-square interval) and normality of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    mean = float(np.mean(x))
    sd = float(np.std(x, ddof=1)) if n > 1 else 0.0
    return SampleStats(
        n=n,
        mean=mean,
        mean_ci=mean_interval(mean, sd, n, confidence),
        sigma=sd,
        sigma_ci=sigma_interval(sd, n - 1, confidence),
        normality=normality(x),
    )


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
    def n(self) -> int:
        return sum(s.n for s in self.levels)

    def to_dict(self) -> dict:
        return {"confidence": self.confidence, "levels": [s.to_dict() for s in self.levels]}


@dataclass(frozen=True)
class LevelNoiseFitter:
    """Fit per-level mean offset and sigma (level units) of programming deviations.

    Args:
        confidence: two-sided level of the reported intervals.
    """

    confidence: float = 0.95

    def fit(self, data: Programming) -> ProgrammingFit:
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence = {self.confidence}; expected in (0, 1)")
        dev = data.deviation_levels()
        return ProgrammingFit(
            tuple(
                sample_stats(dev[data.target_level == h], self.confidence)
                for h in range(data.levels)
            ),
            self.confidence,
        )
