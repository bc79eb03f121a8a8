"""Read noise per level from repeated reads of programmed devices.

Each device i is read r times; its reads scatter around the device's own programmed
value, so the per-device sample variance ``s_i^2`` (ddof = 1) estimates the read
variance free of programming noise. Per level the pooled estimate is
``sigma_read^2 = sum_i (r_i - 1) s_i^2 / sum_i (r_i - 1)`` with a chi-square interval
on ``sum_i (r_i - 1)`` degrees of freedom (Gaussian reads assumed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xbar.calibration.intervals import Interval, sigma_interval
from xbar.calibration.schema import Reads


@dataclass(frozen=True)
class ReadNoiseLevel:
    devices: int
    reads: int
    sigma: float
    sigma_ci: Interval

    def to_dict(self) -> dict:
        return {
            "devices": self.devices,
            "reads": self.reads,
            "sigma": self.sigma,
            "sigma_ci": self.sigma_ci.to_list(),
        }


@dataclass(frozen=True)
class ReadNoiseFit:
    levels: tuple[ReadNoiseLevel, ...]
    confidence: float

    @property
    def sigma_levels(self) -> np.ndarray:
        return np.array([lv.sigma for lv in self.levels])

    @property
    def n(self) -> int:
        return sum(lv.reads for lv in self.levels)

    def to_dict(self) -> dict:
        return {"confidence": self.confidence, "levels": [lv.to_dict() for lv in self.levels]}


@dataclass(frozen=True)
class ReadNoiseFitter:
    """Pooled within-device read sigma per level (level units)."""

    confidence: float = 0.95

    def fit(self, data: Reads) -> ReadNoiseFit:
        g = data.conductance_levels()
        r = g.shape[1]
        var = np.var(g, axis=1, ddof=1)
        out = []
        for h in range(data.levels):
            sel = data.target_level == h
            m = int(np.count_nonzero(sel))
            df = m * (r - 1)
            sd = float(np.sqrt(np.mean(var[sel]))) if m else 0.0
            out.append(ReadNoiseLevel(m, m * r, sd, sigma_interval(sd, df, self.confidence)))
        return ReadNoiseFit(tuple(out), self.confidence)
