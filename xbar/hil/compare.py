"""The chip as measured against the preset a network was trained for: the signal to retrain.

After a session on a chip is recorded (:class:`~xbar.hil.RecordingBackend`), fitting the
recording (:func:`xbar.calibration.fit`) gives the chip's statistics as programmed:
per level the programming sigma and mean offset (TRICE Eq. 15), and the read sigma
when tiles were read twice. :func:`compare_with_preset` puts them next to the values
of the preset the network was trained for, level by level. A trained-for value
outside the measured confidence interval means the training assumed another device
than the chip: retrain against the fitted preset (``xbar train --preset FITTED.toml``),
or fine-tune on the chip (:func:`xbar.hil.finetune`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from xbar.presets import device_model_of


@dataclass(frozen=True)
class ChipComparison:
    """Per-level rows ``quantity, level, trained, measured, low, high, outside`` and the verdict.

    ``outside``: the trained-for value lies outside the measured interval; ``retrain``
    is True when any row is outside; ``fit`` is the :class:`~xbar.calibration.FitResult`.
    """

    rows: list[dict]
    confidence: float
    fit: object

    @property
    def retrain(self) -> bool:
        return any(r["outside"] for r in self.rows)

    def to_dict(self) -> dict:
        return {"confidence": self.confidence, "retrain": self.retrain, "levels": self.rows,
                "fitted_preset": self.fit.preset_dict}

    @property
    def verdict(self) -> str:
        """One sentence: whether the chip agrees with the trained-for preset, and what to do if not."""
        if self.retrain:
            return ("the chip differs from the trained-for preset (marked *): retrain against the fitted "
                    "preset or fine-tune on the chip")
        return "the chip agrees with the trained-for preset within the intervals"


def compare_with_preset(recording_or_fit, preset) -> ChipComparison:
    """Fit ``recording_or_fit`` (a recording path, or a FitResult) and compare it with ``preset`` per level."""
    from xbar.calibration import FitResult, fit

    result = recording_or_fit if isinstance(recording_or_fit, FitResult) else fit(os.fspath(recording_or_fit))
    dm = device_model_of(preset)
    rows: list[dict] = []
    if result.programming is not None:
        n = len(result.programming.levels)
        lv = torch.arange(float(n))
        sigma = dm.programming.sigma(lv, dm.mapping).tolist() if dm.programming is not None else [0.0] * n
        mean = dm.programming.mean(lv) if dm.programming is not None else None
        mean = mean.tolist() if mean is not None else [0.0] * n
        for h, s in enumerate(result.programming.levels):  # sigma as written to the fitted preset (read noise taken out)
            rows.append(_row("programming sigma", h, sigma[h], result.sigma_levels[h], result.sigma_levels_ci[h]))
            rows.append(_row("programming mean offset", h, mean[h], s.mean, s.mean_ci))
    if result.read_noise is not None:
        rn = dm.read_noise
        trained = list(rn.sigma_levels) if rn is not None and rn.sigma_levels is not None else [0.0] * len(result.read_noise.levels)
        for h, s in enumerate(result.read_noise.levels):
            rows.append(_row("read sigma", h, trained[h], s.sigma, s.sigma_ci))
    confidence = result.programming.confidence if result.programming is not None else 0.95
    return ChipComparison(rows, confidence, result)


def _row(quantity: str, level: int, trained: float, measured: float, ci) -> dict:
    low, high = (float("-inf"), float("inf")) if ci is None else (float(ci.low), float(ci.high))
    return {
        "quantity": quantity,
        "level": level,
        "trained": float(trained),
        "measured": float(measured),
        "low": low,
        "high": high,
        "outside": not (low <= trained <= high),
    }
