"""Read noise per level from repeated reads of programmed devices.

Each device i is read r times; its reads scatter around the device's own programmed
value, so the per-device sample variance ``s_i^2`` (ddof = 1) estimates the read
variance free of programming noise. Per level the pooled estimate is
``sigma_read^2 = sum_i (r_i - 1) s_i^2 / sum_i (r_i - 1)`` with a chi-square interval
on ``sum_i (r_i - 1)`` degrees of freedom (Gaussian reads assumed). A device with a
read at exactly 0 uS (clipped, so its reads are censored) is left out of its level's
pool, unless every device of the level has one (then the estimate is biased low and
``censored_devices`` equals ``devices``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xbar.calibration.intervals import Interval, sigma_interval
from xbar.calibration.schema import Reads


@dataclass(frozen=True)
class ReadNoiseLevel:
    devices: int  # devices pooled
    reads: int  # reads of those devices
    sigma: float
    sigma_ci: Interval
    censored_devices: int = 0  # devices with a read clipped at 0 uS (left out when possible)

    @property
    def censored_kept(self) -> bool:
        """Every device of the level had a read at 0 uS, so they were pooled anyway (biased low)."""
        return self.censored_devices > 0 and self.censored_devices == self.devices

    @property
    def df(self) -> int:
        """Degrees of freedom of the pooled variance."""
        return self.reads - self.devices

    def to_dict(self) -> dict:
        return {
            "devices": self.devices,
            "reads": self.reads,
            "censored_devices": self.censored_devices,
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
        clipped = data.censored().any(axis=1)
        out = []
        for h in range(data.levels):
            level = data.target_level == h
            sel = level & ~clipped if np.any(level & ~clipped) else level
            m = int(np.count_nonzero(sel))
            sd = float(np.sqrt(np.mean(var[sel]))) if m else 0.0
            out.append(
                ReadNoiseLevel(
                    m, m * r, sd, sigma_interval(sd, m * (r - 1), self.confidence),
                    int(np.count_nonzero(level & clipped)),
                )
            )
        return ReadNoiseFit(tuple(out), self.confidence)
