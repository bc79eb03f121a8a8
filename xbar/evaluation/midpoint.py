"""Midpoint noise level: a logistic fit of accuracy over bit-flip probability (Emonds Eq. 2).

The fitted form, with x = log10(p) (the paper sweeps p over decades, 1e-8 to 1e-1,
and reports mu as a probability, e.g. 2.20e-6), is Eq. 2

    F(x; mu, sigma, delta_a, a_min) = 2 delta_a / (1 + exp((x - mu) / sigma)) + a_min,

with delta_a = (a_max - a_min) / 2, so F falls from a_max (p -> 0) to a_min
(p -> 1) for sigma > 0, and F(mu) = (a_max + a_min) / 2. mu is the midpoint noise
level (reported as ``midpoint_p = 10**mu``), sigma the slope in decades, a_min the
asymptotic minimum (1/K for K classes) and a_max the peak accuracy. The fit is
parameterized by (mu, sigma, a_min, a_max), which is Eq. 2 with 2 delta_a = a_max - a_min.

The "99%-noise" of the paper's summary, the p where F = 0.99 a_max, has the closed
form log10 p99 = mu + sigma * ln(0.01 a_max / (0.99 a_max - a_min)).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from scipy import optimize, special, stats

__all__ = ["MidpointFit", "logistic", "fit_midpoint"]


def logistic(
    log10_p: np.ndarray | float, mu: float, sigma: float, a_min: float, a_max: float
) -> np.ndarray:
    """Eq. 2 at x = log10 p: a_min + (a_max - a_min) / (1 + exp((x - mu) / sigma))."""
    x = np.asarray(log10_p, dtype=float)
    return a_min + (a_max - a_min) * special.expit(-(x - mu) / sigma)


@dataclass(frozen=True)
class MidpointFit:
    """Result of :func:`fit_midpoint` (Eq. 2 over x = log10 p).

    ``mu``/``sigma`` are in decades of p; ``midpoint_p = 10**mu`` and its
    ``confidence`` interval ``10**(mu +- t * mu_stderr)`` (Student t with the fit's
    degrees of freedom). When the fit did not converge (``converged`` False, with
    ``reason``), mu, sigma and their errors are NaN and the midpoint fields are None:
    for example a curve that never drops within the probed p, as for the paper's
    mantissa-only masks.
    """

    mu: float
    mu_stderr: float
    sigma: float
    sigma_stderr: float
    a_min: float
    a_max: float
    midpoint_p: float | None
    midpoint_p_interval: tuple[float, float] | None
    p_at_99_percent_of_peak: float | None
    converged: bool
    reason: str = ""
    a_min_fixed: bool = False
    a_max_fixed: bool = False
    confidence: float = 0.95
    n_points: int = 0
    n_observations: int = 0
    residual_std: float = float("nan")
    p_range: tuple[float, float] = field(default=(float("nan"), float("nan")))

    def curve(self, p: np.ndarray | float) -> np.ndarray:
        """Fitted accuracy at noise levels ``p`` (NaN everywhere when not converged)."""
        x = np.log10(np.asarray(p, dtype=float))
        if not self.converged:
            return np.full(np.shape(x), np.nan)
        return logistic(x, self.mu, self.sigma, self.a_min, self.a_max)

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN -> None, tuples -> lists)."""

        def clean(v: object) -> object:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, tuple):
                return [clean(u) for u in v]
            return v

        return {k: clean(v) for k, v in asdict(self).items()}


def _initial_mu(x: np.ndarray, m: np.ndarray, half: float) -> float:
    """First crossing of the half level by the mean curve (linear in x), else an end."""
    above = m >= half
    for i in range(len(x) - 1):
        if above[i] and not above[i + 1]:
            t = (m[i] - half) / (m[i] - m[i + 1]) if m[i] != m[i + 1] else 0.5
            return float(x[i] + t * (x[i + 1] - x[i]))
    return float(x[-1] if above.all() else x[0])


def _failed(reason: str, a_min: float, a_max: float, **kw) -> MidpointFit:
    nan = float("nan")
    return MidpointFit(
        mu=nan,
        mu_stderr=nan,
        sigma=nan,
        sigma_stderr=nan,
        a_min=float(a_min),
        a_max=float(a_max),
        midpoint_p=None,
        midpoint_p_interval=None,
        p_at_99_percent_of_peak=None,
        converged=False,
        reason=reason,
        **kw,
    )


def fit_midpoint(
    p: np.ndarray,
    accuracy: np.ndarray,
    num_classes: int | None = None,
    a_max: float | None = None,
    confidence: float = 0.95,
    weighting: Literal["binomial", "none"] = "binomial",
) -> MidpointFit:
    """Fit Eq. 2 to an accuracy sweep and report the midpoint noise level.

    ``p``: bit-flip probabilities, shape [n_points], all > 0. ``accuracy``: in
    [0, 1], shape [n_points] or [n_points, n_repeats] (each repeat is one
    observation). ``num_classes`` fixes a_min = 1/K (as in the paper), ``a_max``
    fixes the peak; unfixed ones are fitted within [0, 1].

    Least squares with ``scipy.optimize.curve_fit``. With ``weighting="binomial"``
    a second pass weights each observation by 1 / (F (1 - F)) of the first fit
    (accuracy is a proportion; its variance is largest mid-curve); the overall
    variance scale is estimated from the residuals (``absolute_sigma=False``), so
    extra run-to-run noise is absorbed. Standard errors come from the covariance.

    Not converged (no midpoint reported) when the optimizer fails, the covariance
    is not finite, there are fewer observations than parameters + 1, the fitted
    curve does not drop, the drop is not significant (< 3 standard errors),
    mu lies outside the probed range of p (the accuracy never falls past the
    midpoint within the sweep), or mu is not identified (its confidence interval is
    wider than the sweep: the accuracy steps between two probed points, so no
    observation constrains where between them the midpoint lies).
    """
    p_arr = np.asarray(p, dtype=float)
    acc = np.asarray(accuracy, dtype=float)
    if p_arr.ndim != 1 or p_arr.size < 2:
        raise ValueError(f"fit_midpoint p: got shape {p_arr.shape}, expected [n_points >= 2]")
    if not np.all(np.isfinite(p_arr)) or np.any(p_arr <= 0):
        raise ValueError("fit_midpoint p: got a value <= 0 or not finite, expected p > 0")
    if acc.ndim == 1:
        acc = acc[:, None]
    if acc.ndim != 2 or acc.shape[0] != p_arr.size:
        raise ValueError(
            f"fit_midpoint accuracy: got shape {np.shape(accuracy)}, expected "
            f"[{p_arr.size}] or [{p_arr.size}, n_repeats]"
        )
    if not np.all(np.isfinite(acc)) or np.any(acc < 0) or np.any(acc > 1):
        raise ValueError("fit_midpoint accuracy: got values outside [0, 1], expected fractions")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
    ):
        raise ValueError(f"fit_midpoint num_classes: got {num_classes!r}, expected an int >= 2")
    if a_max is not None and not (0.0 <= a_max <= 1.0):
        raise ValueError(f"fit_midpoint a_max: got {a_max!r}, expected a value in [0, 1]")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"fit_midpoint confidence: got {confidence!r}, expected (0, 1)")
    if weighting not in ("binomial", "none"):
        raise ValueError(f"fit_midpoint weighting: got {weighting!r}, expected binomial or none")

    order = np.argsort(p_arr)
    x = np.log10(p_arr[order])
    acc = acc[order]
    m = acc.mean(axis=1)
    n_rep = acc.shape[1]
    xs = np.repeat(x, n_rep)
    ys = acc.reshape(-1)
    span = float(x[-1] - x[0])
    if span <= 0:
        raise ValueError("fit_midpoint p: got a single distinct value, expected a sweep")

    a_min_fixed = num_classes is not None
    a_max_fixed = a_max is not None
    a_lo = 1.0 / num_classes if a_min_fixed else float(m.min())
    a_hi = float(a_max) if a_max_fixed else float(m.max())
    info = {
        "a_min_fixed": a_min_fixed,
        "a_max_fixed": a_max_fixed,
        "confidence": confidence,
        "n_points": int(x.size),
        "n_observations": int(ys.size),
        "p_range": (float(p_arr.min()), float(p_arr.max())),
    }

    names = (
        ["mu", "sigma"] + ([] if a_min_fixed else ["a_min"]) + ([] if a_max_fixed else ["a_max"])
    )

    def unpack(theta: np.ndarray) -> tuple[float, float, float, float]:
        vals = dict(zip(names, theta))
        return (
            vals["mu"],
            vals["sigma"],
            vals.get("a_min", a_lo),
            vals.get("a_max", a_hi),
        )

    def model(xx: np.ndarray, *theta: float) -> np.ndarray:
        return logistic(xx, *unpack(np.asarray(theta)))

    sig_lo, sig_hi = 1e-3 * span, 10.0 * span
    lower = [x[0] - span, sig_lo] + [0.0] * (len(names) - 2)
    upper = [x[-1] + span, sig_hi] + [1.0] * (len(names) - 2)
    p0 = [_initial_mu(x, m, 0.5 * (a_lo + a_hi)), max(span / 10.0, 2 * sig_lo)]
    p0 += ([] if a_min_fixed else [a_lo]) + ([] if a_max_fixed else [a_hi])
    eps = 1e-9
    p0 = list(np.clip(p0, np.array(lower) + eps, np.array(upper) - eps))

    if ys.size < len(names) + 1:
        return _failed(f"{ys.size} observations for {len(names)} parameters", a_lo, a_hi, **info)

    def run_fit(weights_sd: np.ndarray | None, start: list[float]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            return optimize.curve_fit(
                model,
                xs,
                ys,
                p0=start,
                sigma=weights_sd,
                absolute_sigma=False,
                bounds=(lower, upper),
                maxfev=20000,
            )

    try:
        theta, cov = run_fit(None, p0)
        if weighting == "binomial":
            f = model(xs, *theta)
            sd = np.sqrt(np.clip(f * (1.0 - f), 0.0099, None))
            theta, cov = run_fit(sd, list(theta))
    except (RuntimeError, ValueError) as exc:
        return _failed(f"the optimizer failed: {exc}", a_lo, a_hi, **info)

    mu, sigma, a_min_fit, a_max_fit = unpack(theta)
    resid = ys - model(xs, *theta)
    dof = ys.size - len(names)
    info["residual_std"] = float(np.sqrt(np.sum(resid**2) / dof)) if dof > 0 else float("nan")
    se = np.sqrt(np.diag(cov)) if cov is not None else np.full(len(names), np.inf)
    if not np.all(np.isfinite(se)):
        return _failed("the parameter covariance is not finite", a_min_fit, a_max_fit, **info)
    drop = a_max_fit - a_min_fit
    if drop <= 0:
        return _failed("the fitted curve does not drop", a_min_fit, a_max_fit, **info)
    if not (a_min_fixed and a_max_fixed):
        i_lo = names.index("a_min") if not a_min_fixed else None
        i_hi = names.index("a_max") if not a_max_fixed else None
        var = (cov[i_lo, i_lo] if i_lo is not None else 0.0) + (
            cov[i_hi, i_hi] if i_hi is not None else 0.0
        )
        if i_lo is not None and i_hi is not None:
            var -= 2.0 * cov[i_lo, i_hi]
        if drop < 3.0 * math.sqrt(max(var, 0.0)):
            return _failed(
                f"the drop a_max - a_min = {drop:.3g} is within 3 standard errors of 0",
                a_min_fit,
                a_max_fit,
                **info,
            )
    if not (x[0] <= mu <= x[-1]):
        return _failed(
            f"the accuracy does not fall past the midpoint within the probed p "
            f"[{10 ** x[0]:.3g}, {10 ** x[-1]:.3g}] (fitted log10 mu = {mu:.3g})",
            a_min_fit,
            a_max_fit,
            **info,
        )

    t = float(stats.t.ppf(0.5 * (1.0 + confidence), dof))
    mu_se, sigma_se = float(se[0]), float(se[1])
    if t * mu_se > span:
        # A step between two probed points: every mu in the gap fits alike (sigma -> 0).
        i = min(int(np.searchsorted(x, mu, side="right")), x.size - 1)
        lo, hi = 10 ** x[max(i - 1, 0)], 10 ** x[i]
        return _failed(
            f"the midpoint is not identified: the accuracy falls between p = {lo:.3g} and "
            f"{hi:.3g} with no probed point on the slope; probe more points per decade there",
            a_min_fit,
            a_max_fit,
            **info,
        )
    p99 = None
    if 0.99 * a_max_fit > a_min_fit:
        z = math.log(0.01 * a_max_fit / (0.99 * a_max_fit - a_min_fit))
        p99 = float(10 ** (mu + sigma * z))
    return MidpointFit(
        mu=float(mu),
        mu_stderr=mu_se,
        sigma=float(sigma),
        sigma_stderr=sigma_se,
        a_min=float(a_min_fit),
        a_max=float(a_max_fit),
        midpoint_p=float(10**mu),
        midpoint_p_interval=(float(10 ** (mu - t * mu_se)), float(10 ** (mu + t * mu_se))),
        p_at_99_percent_of_peak=p99,
        converged=True,
        **info,
    )
