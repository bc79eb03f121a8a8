"""``fit(path)``: run every fitter that has data and assemble the preset (docs/presets.md).

The programming sigmas written to the preset are those of the chosen model
(:mod:`xbar.calibration.selection`) after a variance decomposition: a measured
deviation contains one read's noise and, if array maps are present, the spatially
correlated component, both of which the preset describes in their own sections; so
``sigma_h^2 = s_h^2 - sigma_read_h^2 - sigma_corr^2`` (floored at 0; ``decompose=False``
keeps the raw sigmas). The interval of a decomposed sigma is the generalized (pivot)
interval of that difference of variances, so the uncertainty of the subtracted read
noise and correlated variance is carried into it
(:func:`xbar.calibration.intervals.sigma_difference_interval`, draws seeded by ``seed``).

Mean offsets go into the preset's ``mean_levels`` only where their interval excludes 0
(cluster intervals over arrays when the maps show spatial correlation); the others are
written as 0 and a note says which.

With ``/array_maps`` the Kronecker fit competes with a low-rank and a dense covariance
(:mod:`xbar.calibration.covariance`, held-out log-likelihood over maps); when one of
those predicts held-out maps better it becomes the preset's ``[correlation]`` (kind
``low-rank`` / ``dense``, numbers in a sidecar file next to the preset:
:func:`xbar.calibration.preset_file.write_preset`).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
from scipy import stats

from xbar.calibration.covariance import CovarianceChoice, CovarianceSelector
from xbar.calibration.drift import DriftFitter
from xbar.calibration.intervals import (
    PIVOT_DRAWS,
    Interval,
    sigma_difference_interval,
    variance_pivot,
)
from xbar.calibration.programming import LevelNoiseFitter, ProgrammingFit
from xbar.calibration.read_noise import ReadNoiseFit, ReadNoiseFitter
from xbar.calibration.reader import read_measurements
from xbar.calibration.result import FitResult
from xbar.calibration.schema import Measurements
from xbar.calibration.selection import SelectionResult, SigmaModelSelector
from xbar.calibration.spatial import SpatialFit, SpatialFitter
from xbar.calibration.switching import BitFlipFitter
from xbar.errors import InputError
from xbar.presets.schema import KRONECKER_KIND, SCHEMA, SCHEMA_VERSION, Preset


def _r(x: float, digits: int = 6) -> float:
    """Round to ``digits`` significant digits (presets are read by humans)."""
    return float(f"{float(x):.{digits}g}")


def default_name(source: str | None) -> str:
    stem = Path(source).stem if source else "fitted"
    name = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    return name or "fitted"


def fit(
    source: str | os.PathLike | Measurements,
    *,
    name: str | None = None,
    weight_bits: int | None = None,
    confidence: float = 0.95,
    alpha: float = 0.05,
    decompose: bool = True,
    bootstrap: int = 200,
    seed: int = 0,
    bitflip_method: str = "closed",
    compare_covariance: bool = True,
) -> FitResult:
    """Fit every measurement group of ``source`` (a file path or :class:`Measurements`).

    Args:
        name: preset name (default: the file's stem).
        weight_bits: H of the preset's mapping (default 2 * bits_per_device).
        confidence: level of every reported interval.
        alpha: LRT significance level of the uniform vs per-level sigma choice.
        decompose: subtract read-noise and correlated variance from programming sigmas.
        bootstrap, seed: bootstrap resamples (and seed) of the spatial-correlation intervals.
        bitflip_method: "closed" or "brentq" solution of Emonds Eq. 1.
        compare_covariance: compare the Kronecker fit of /array_maps with low-rank and
            dense covariances and write the best (False: Kronecker only).
    """
    m = source if isinstance(source, Measurements) else read_measurements(source)
    where = m.source_file or "<measurements>"
    if not 0 < confidence < 1:
        raise InputError(f"confidence = {confidence}: expected in (0, 1)")
    levels = m.levels if m.levels is not None else 2
    bits = int(round(math.log2(levels)))
    if 2**bits != levels:
        raise InputError(
            f"{where}: levels = {levels}: not a power of two; a preset stores bits_per_device "
            "= log2(levels) bits per device"
        )
    wb = 2 * bits if weight_bits is None else int(weight_bits)
    if wb < bits or wb % bits or wb > 16:
        raise InputError(
            f"weight_bits = {wb}: expected a multiple of bits_per_device = {bits} between {bits} and 16"
        )
    notes: list[str] = []

    prog = sel = read = drift = spatial = switching = None
    covariance: CovarianceChoice | None = None
    if m.reads is not None:
        read = ReadNoiseFitter(confidence).fit(m.reads)
        left_out = sum(lv.censored_devices for lv in read.levels if not lv.censored_kept)
        kept = [h for h, lv in enumerate(read.levels) if lv.censored_kept]
        if left_out:
            notes.append(f"/reads: {left_out} device(s) with reads at 0 uS (clipped) are left out of the read-noise pool")
        if kept:
            notes.append(f"/reads: every device of level(s) {kept} has a read at 0 uS; their read sigma may be biased low")
    if m.array_maps is not None:
        spatial = SpatialFitter(bootstrap=bootstrap, seed=seed, confidence=confidence).fit(m.array_maps)
        if not spatial.detected:
            notes.append("no spatial correlation detected in /array_maps by the Kronecker fit (sigma 0)")
        elif spatial.sigma_ci is not None:
            notes.append(
                f"correlation intervals: studentized bootstrap over {spatial.n_maps} maps, approximate; with "
                "8 maps of 32 x 64 they covered the truth in 85-93% of simulations (nominal 95%)"
            )
        if compare_covariance:
            covariance = CovarianceSelector(seed=seed).fit(m.array_maps, spatial)
            if covariance is None:
                notes.append("/array_maps: too few maps (< 4) or too many devices per map to compare covariance models")
            else:
                held = ", ".join(
                    f"{k}{f' (k = {covariance.rank})' if k == 'low-rank' else ''} {v:.4g}"
                    for k, v in covariance.heldout_loglik.items()
                )
                notes.append(
                    f"/array_maps: {covariance.chosen} covariance chosen by held-out log-likelihood per map "
                    f"({covariance.folds}-fold over maps): {held}"
                )
                notes.extend(f"/array_maps: {n}" for n in covariance.notes)
    if m.drift is not None:
        drift = DriftFitter(confidence, seed).fit(m.drift)
    if m.switching is not None:
        try:
            switching = BitFlipFitter(confidence, bitflip_method).fit(m.switching)
        except ValueError as exc:
            raise InputError(f"{where}: /switching: {exc}") from None

    sigma_levels = sigma_ci = None
    measured = covariance is not None and covariance.measured
    corr_model = covariance if measured else spatial  # the correlated variance the preset holds
    if m.programming is not None:
        correlated = (spatial is not None and spatial.detected) or measured
        prog = LevelNoiseFitter(confidence, correlated).fit(m.programming)
        sel = SigmaModelSelector(alpha, confidence).fit(m.programming)
        if prog.censored:
            lv = [h for h, s in enumerate(prog.levels) if s.censored]
            notes.append(
                f"/programming: {prog.censored} value(s) of level(s) {lv} read 0 uS (clipped); those levels "
                "are fitted as normals left-censored at 0 uS (Tobit, Wald intervals)"
            )
        if correlated:
            notes.append(
                "mean offsets: cluster intervals over the (array, cycle) groups of /programming "
                "(devices are spatially correlated); the measured-sigma intervals assume independent "
                "devices and are too narrow under that correlation"
            )
        zeroed = [h for h, s in enumerate(prog.levels) if not s.mean_significant and s.mean != 0]
        if zeroed:
            notes.append(
                f"mean_levels: the offsets of level(s) {zeroed} are not significant (interval contains 0); written as 0"
            )
        sigma_levels, sigma_ci = decompose_sigmas(
            prog, sel, read if decompose else None, corr_model if decompose else None, levels, confidence, seed
        )
        if decompose and read is not None:
            notes.append("programming sigmas exclude the read noise of /reads")
        if decompose and correlated:
            notes.append("programming sigmas exclude the correlated variance of /array_maps")
        measured = [sel.sigma_uniform] * levels if sel.chosen == "uniform" else prog.sigma_levels
        if any(s == 0 < m for s, m in zip(sigma_levels, measured)):
            notes.append("a level's measured variance is below the subtracted variance; its sigma is 0")

    result_args = dict(
        source_file=m.source_file,
        source_sha256=m.source_sha256,
        device=m.device,
        levels=levels,
        groups=tuple(m.groups),
        programming=prog,
        selection=sel,
        sigma_levels=sigma_levels,
        sigma_levels_ci=sigma_ci,
        read_noise=read,
        drift=drift,
        spatial=spatial,
        covariance=covariance,
        switching=switching,
        options={
            "confidence": confidence,
            "alpha": alpha,
            "decompose": decompose,
            "bootstrap": bootstrap,
            "seed": seed,
            "bitflip_method": bitflip_method,
            "weight_bits": wb,
            "compare_covariance": compare_covariance,
        },
    )
    preset = build_preset(
        m, levels, bits, wb, name or default_name(m.source_file), result_args, notes
    )
    return FitResult(preset=preset, notes=tuple(notes), **result_args)


def _variance_draws(sigma: float, ci: Interval, df: int | None, rng: np.random.Generator) -> np.ndarray:
    """Pivot draws of a measured variance: chi-square on ``df``, or lognormal matching a Wald ``ci``."""
    if df is not None:
        return variance_pivot(sigma**2, df, rng)
    se = math.log(ci.high / ci.low) / (2 * stats.norm.ppf(0.5 + ci.confidence / 2))
    return np.exp(2 * (math.log(sigma) + se * rng.standard_normal(PIVOT_DRAWS)))


def decompose_sigmas(
    prog: ProgrammingFit,
    sel: SelectionResult,
    read: ReadNoiseFit | None,
    spatial: SpatialFit | CovarianceChoice | None,
    levels: int,
    confidence: float,
    seed: int,
) -> tuple[tuple[float, ...], tuple[Interval, ...]]:
    """Preset programming sigmas of the chosen model minus read-noise and correlated variance.

    Point estimates ``sqrt(max(0, s^2 - sigma_read^2 - sigma_corr^2))``; intervals from pivot
    draws of every term (see :func:`xbar.calibration.intervals.sigma_difference_interval`).
    ``read`` / ``spatial`` None subtract nothing (``decompose=False``); ``spatial`` is the
    Kronecker fit or the chosen low-rank / dense covariance (its correlated variance).
    """
    if read is None and (spatial is None or not spatial.detected):  # nothing subtracted
        if sel.chosen == "uniform":
            return (sel.sigma_uniform,) * levels, (sel.sigma_uniform_ci,) * levels
        return tuple(s.sigma for s in prog.levels), tuple(s.sigma_ci for s in prog.levels)
    rng = np.random.default_rng(seed)
    zero = np.zeros(PIVOT_DRAWS)
    read_var = np.zeros(levels) if read is None else read.sigma_levels**2
    read_draws = [zero] * levels if read is None else [variance_pivot(lv.sigma**2, lv.df, rng) for lv in read.levels]
    corr_var, corr_draws = 0.0, zero
    if spatial is not None and spatial.detected:
        corr_var, corr_draws = spatial.sigma**2, spatial.sigma2_draws(rng, PIVOT_DRAWS)

    def reduce(s: float, v: float) -> float:
        return math.sqrt(max(0.0, s * s - v)) if math.isfinite(s) else s

    if sel.chosen == "uniform":
        w = np.array([s.n for s in prog.levels], dtype=np.float64)
        w /= w.sum()
        s_u = reduce(sel.sigma_uniform, float(w @ read_var) + corr_var)
        minus = sum(wh * d for wh, d in zip(w, read_draws)) + corr_draws
        total = _variance_draws(sel.sigma_uniform, sel.sigma_uniform_ci, sel.sigma_uniform_df, rng)
        ci_u = sigma_difference_interval(total, minus, confidence)
        return tuple([s_u] * levels), tuple([ci_u] * levels)
    sig = tuple(reduce(s.sigma, v + corr_var) for s, v in zip(prog.levels, read_var))
    cis = tuple(
        sigma_difference_interval(
            _variance_draws(s.sigma, s.sigma_ci, None if s.mean_method == "censored" else s.n - 1, rng),
            d + corr_draws,
            confidence,
        )
        for s, d in zip(prog.levels, read_draws)
    )
    return sig, cis


def build_preset(
    m: Measurements, levels: int, bits: int, weight_bits: int, name: str, r: dict, notes: list[str]
) -> Preset:
    """The validated :class:`Preset` of fitted results ``r``.

    The sections are assembled in the TOML form of docs/presets.md and validated once,
    by :meth:`Preset.from_dict`; every field written here is kept as given (``Preset.explicit``),
    so the preset file spells out e.g. ``[drift].t0_s`` even when it equals the default.
    """
    src = Path(m.source_file).name if m.source_file else "<in memory>"
    d: dict = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "description": f"Fitted by xbar fit from {src} ({m.device})",
        "source": f"xbar fit of {src}: {', '.join('/' + g for g in m.groups)}",
        "mapping": {"weight_bits": weight_bits, "bits_per_device": bits, "sign": "magnitude"},
    }
    prov: dict = {"source_file": src}
    if m.source_sha256:
        prov["source_sha256"] = m.source_sha256
    prov["device"] = m.device
    prov["confidence"] = r["options"]["confidence"]
    samples: dict = {}
    gof: dict = {}

    sp = r["spatial"]
    if sp is not None:
        d["mapping"]["tile_rows"] = sp.rows
        d["mapping"]["tile_cols"] = sp.cols

    prog, sel = r["programming"], r["selection"]
    if prog is not None:
        sig = np.asarray(r["sigma_levels"])
        positive = sig[sig > 0]
        sigma_d = float(positive.min()) if positive.size else 0.0
        mult = [1.0] * levels if sel.chosen == "uniform" or sigma_d == 0 else [_r(s / sigma_d) for s in sig]
        d["programming"] = {
            "sigma_d": _r(sigma_d),
            "level_multipliers": mult,
            "mean_levels": [_r(x) for x in prog.preset_mean_levels],
        }
        samples["programming"] = prog.n
        norm = [s.normality for s in prog.levels]
        for key in ("ks_p", "shapiro_p", "anderson_p"):
            vals = [getattr(x, key) for x in norm if getattr(x, key) is not None]
            if vals:
                gof[f"programming_{key}_min"] = _r(min(vals), 4)
        prov["programming_model"] = sel.chosen
        gof["selection_lrt_p"] = _r(sel.lrt_p, 4)
        gof["selection_aic_uniform"] = _r(sel.aic_uniform, 8)
        gof["selection_aic_per_level"] = _r(sel.aic_per_level, 8)
    elif sp is not None:
        cv = r.get("covariance")
        nugget = cv.nugget_sigma if cv is not None and cv.measured else sp.nugget_sigma
        d["programming"] = {"sigma_d": _r(nugget), "level_multipliers": [1.0] * levels}
        notes.append("no /programming: sigma_d is the independent part of /array_maps")

    if sp is not None:
        samples["array_maps"] = int(sp.n_maps * sp.rows * sp.cols)
    cv = r.get("covariance")
    if cv is not None:
        gof["correlation_model"] = cv.chosen
        for k, v in cv.heldout_loglik.items():
            gof[f"correlation_heldout_loglik_{k.replace('-', '_')}"] = _r(v, 8)
        if cv.rank:
            gof["correlation_low_rank_k"] = cv.rank
    if cv is not None and cv.measured:
        mean = cv.mean if prog is None else 0.0
        d["correlation"] = {"kind": cv.chosen, "rows": cv.rows, "cols": cv.cols, "mean": _r(mean)}
        if cv.chosen == "dense":
            d["correlation"]["covariance"] = cv.covariance
        else:
            d["correlation"]["eigenvalues"] = cv.eigenvalues
            d["correlation"]["eigenvectors"] = cv.eigenvectors
    elif sp is not None and sp.detected:
        mean = sp.mean if prog is None else 0.0
        d["correlation"] = {
            "kind": KRONECKER_KIND,
            "sigma": _r(sp.sigma),
            "length_rows": _r(sp.length_rows),
            "length_cols": _r(sp.length_cols),
            "mean": _r(mean),
        }
        gof["correlation_rmse_rel"] = _r(sp.rmse_rel, 4)
        if sp.spectrum:
            gof["correlation_rank_90"] = sp.spectrum["rank_90"]
            gof["correlation_rank_99"] = sp.spectrum["rank_99"]

    rn = r["read_noise"]
    if rn is not None:
        d["read_noise"] = {"sigma_levels": [_r(s) for s in rn.sigma_levels]}
        samples["reads"] = rn.n

    dr = r["drift"]
    if dr is not None:
        nu_mean = dr.nu_mean_levels
        if np.any(nu_mean < 0):
            notes.append("a level's mean drift exponent is negative (conductance rises); written as 0")
        d["drift"] = {
            "t0_s": _r(dr.t0_s),
            "nu_mean_levels": [_r(max(0.0, x)) for x in nu_mean],
            "nu_std_levels": [_r(x) for x in dr.nu_std_levels],
        }
        samples["drift_devices"] = int(dr.nu.size)
        gof["drift_r2_median_min"] = _r(min(lv.r2_median for lv in dr.levels), 4)

    sw = r["switching"]
    if sw is not None:
        p = _r(sw.p_bf)
        d["bitflip"] = {"p_0to1": p, "p_1to0": p, "storage": "int8", "mask": "all"}
        samples["switching_lrs"] = sw.lrs.n
        samples["switching_hrs"] = sw.hrs.n
        gof["switching_threshold_ohm"] = _r(sw.threshold_ohm)
        for state in ("lrs", "hrs"):
            nm = getattr(sw, state).normality
            if nm.ks_p is not None:
                gof[f"switching_{state}_ks_p"] = _r(nm.ks_p, 4)

    prov["samples"] = samples
    prov["goodness_of_fit"] = {k: v for k, v in gof.items() if not (isinstance(v, float) and not math.isfinite(v))}
    d["provenance"] = prov
    return Preset.from_dict(d, origin=f"fit of {src}")


__all__ = ["fit", "build_preset", "default_name"]
