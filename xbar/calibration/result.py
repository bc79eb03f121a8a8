"""The outcome of :func:`xbar.calibration.fit`: every fitter's result plus the preset."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from xbar.calibration.covariance import CovarianceChoice
from xbar.calibration.drift import DriftFit
from xbar.calibration.intervals import Interval
from xbar.calibration.programming import ProgrammingFit
from xbar.calibration.read_noise import ReadNoiseFit
from xbar.calibration.selection import SelectionResult
from xbar.calibration.spatial import SpatialFit
from xbar.calibration.switching import SwitchingFit
from xbar.devices.measured import MeasuredCovariance
from xbar.presets.schema import Preset


def _clean(x: Any) -> Any:
    """JSON-able copy: numpy scalars to Python numbers, NaN/Inf to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if hasattr(x, "tolist"):
        return _clean(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


@dataclass(frozen=True)
class FitResult:
    """Fitted statistics of one measurement file and the preset they define.

    ``preset`` is the validated :class:`xbar.presets.Preset` (provenance included);
    ``sigma_levels`` / ``sigma_levels_ci`` are the programming sigmas written to it
    (after the model choice and the variance decomposition), while ``programming``
    keeps the raw per-level statistics of the measured deviations.
    """

    source_file: str | None
    source_sha256: str | None
    device: str
    levels: int
    groups: tuple[str, ...]
    preset: Preset
    programming: ProgrammingFit | None = None
    selection: SelectionResult | None = None
    sigma_levels: tuple[float, ...] | None = None
    sigma_levels_ci: tuple[Interval, ...] | None = None
    read_noise: ReadNoiseFit | None = None
    drift: DriftFit | None = None
    spatial: SpatialFit | None = None
    switching: SwitchingFit | None = None
    covariance: CovarianceChoice | None = None
    notes: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)

    @property
    def preset_dict(self) -> dict:
        """The fitted preset as its TOML document (``Preset.to_dict``; a measured covariance inline)."""
        return self.preset.to_dict()

    def to_dict(self) -> dict:
        """Everything, JSON-able, with every interval."""
        d: dict[str, Any] = {
            "source_file": self.source_file,
            "source_sha256": self.source_sha256,
            "device": self.device,
            "levels": self.levels,
            "groups": list(self.groups),
            "options": self.options,
            "notes": list(self.notes),
        }
        if self.programming is not None:
            d["programming"] = self.programming.to_dict()
            d["programming"]["sigma_levels"] = list(self.sigma_levels)
            d["programming"]["sigma_levels_ci"] = [c.to_list() for c in self.sigma_levels_ci]
        for name in ("selection", "read_noise", "drift", "spatial", "covariance", "switching"):
            part = getattr(self, name)
            if part is not None:
                d[name] = part.to_dict()
        d["preset"] = without_arrays(self.preset)
        return _clean(d)

    def summary_rows(self) -> list[tuple[str, str, str, str]]:
        """Rows ``(section, quantity, estimate, 95% interval)`` for a table."""

        def f(x: float) -> str:
            return f"{x:.4g}"

        def ci(c: Interval | None) -> str:
            return "" if c is None else f"[{c.low:.4g}, {c.high:.4g}]"

        rows: list[tuple[str, str, str, str]] = []
        if self.programming is not None:
            for h, s in enumerate(self.programming.levels):
                how = {"t": "", "cluster": f", {s.clusters} arrays", "censored": f", {s.censored} clipped"}[s.mean_method]
                mark = "" if s.mean_significant else ", n.s. -> 0"
                rows.append(("programming", f"mean offset level {h} ({s.mean_method}{how}{mark})", f(s.mean), ci(s.mean_ci)))
                rows.append(("programming", f"sigma level {h} (measured)", f(s.sigma), ci(s.sigma_ci)))
            for h, (s, c) in enumerate(zip(self.sigma_levels, self.sigma_levels_ci)):
                rows.append(("programming", f"sigma level {h} (preset)", f(s), ci(c)))
        if self.selection is not None:
            sel = self.selection
            rows.append(("selection", "model", sel.chosen, ""))
            rows.append(("selection", f"LRT p (df={sel.lrt_df})", f(sel.lrt_p), ""))
            rows.append(("selection", "AIC uniform / per-level", f"{sel.aic_uniform:.1f} / {sel.aic_per_level:.1f}", ""))
        if self.read_noise is not None:
            for h, lv in enumerate(self.read_noise.levels):
                rows.append(("read_noise", f"sigma level {h}", f(lv.sigma), ci(lv.sigma_ci)))
        if self.drift is not None:
            for h, lv in enumerate(self.drift.levels):
                rows.append(("drift", f"nu mean level {h}", f(lv.nu_mean), ci(lv.nu_mean_ci)))
                rows.append(("drift", f"nu std level {h}", f(lv.nu_std), ci(lv.nu_std_ci)))
        if self.spatial is not None and not self.spatial.detected:
            rows.append(("correlation", "sigma (no spatial correlation detected)", f(0.0), ""))
        elif self.spatial is not None:
            sp = self.spatial
            rows.append(("correlation", "sigma", f(sp.sigma), ci(sp.sigma_ci)))
            rows.append(("correlation", "length_rows (devices)", f(sp.length_rows), ci(sp.length_rows_ci)))
            rows.append(("correlation", "length_cols (devices)", f(sp.length_cols), ci(sp.length_cols_ci)))
            rows.append(("correlation", "independent sigma", f(sp.nugget_sigma), ci(sp.nugget_sigma_ci)))
            if sp.spectrum:
                rows.append(("correlation", "rank for 90% / 99%", f"{sp.spectrum['rank_90']} / {sp.spectrum['rank_99']}", ""))
        if self.covariance is not None:
            cv = self.covariance
            for k, v in cv.heldout_loglik.items():
                name = f"low-rank (k = {cv.rank})" if k == "low-rank" else k
                mark = " <- chosen" if k == cv.chosen else ""
                rows.append(("correlation", f"held-out log-lik / map, {name}{mark}", f"{v:.6g}", ""))
            for k, v in cv.aic.items():
                rows.append(("correlation", f"AIC {k} ({cv.params[k]} parameters)", f"{v:.6g}", ""))
            for k, v in cv.frobenius_rel.items():
                rows.append(("correlation", f"|Sigma - S|_F / |S|_F, {k}", f(v), ""))
        if self.switching is not None:
            sw = self.switching
            rows.append(("bitflip", "LRS median (ohm)", f(sw.lrs.median_ohm), ci(sw.lrs.mu_ln_ci.map(math.exp))))
            rows.append(("bitflip", "LRS sigma ln", f(sw.lrs.sigma_ln), ci(sw.lrs.sigma_ln_ci)))
            rows.append(("bitflip", "HRS median (ohm)", f(sw.hrs.median_ohm), ci(sw.hrs.mu_ln_ci.map(math.exp))))
            rows.append(("bitflip", "HRS sigma ln", f(sw.hrs.sigma_ln), ci(sw.hrs.sigma_ln_ci)))
            rows.append(("bitflip", "threshold R_th (ohm)", f(sw.threshold_ohm), ""))
            rows.append(("bitflip", "p_bf (Emonds Eq. 1)", f(sw.p_bf), ci(sw.p_bf_ci)))
        return rows


def without_arrays(preset: Preset) -> dict:
    """The preset's TOML document with an inline measured covariance's arrays replaced by their shapes (for JSON)."""
    doc = preset.to_dict()
    cov = preset.correlation
    if not isinstance(cov, MeasuredCovariance):
        return doc
    doc["correlation"] = {
        k: (f"array {list(getattr(cov, k).shape)} (in the sidecar file)" if hasattr(getattr(cov, k, None), "shape") else v)
        for k, v in doc["correlation"].items()
    }
    return doc


def format_table(rows: list[tuple[str, ...]], header: tuple[str, ...] = ("section", "quantity", "estimate", "95% interval")) -> str:
    """Plain-text table with aligned columns."""
    all_rows = [header, *rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in all_rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
