"""Bit-flip probability from LRS/HRS cycle-to-cycle distributions (Emonds Eq. 1).

Cycle-to-cycle resistances are close to lognormal (Emonds Sec. 3), so each state is
fitted as ``ln R ~ N(mu, s)`` (MLE mean, ddof=1 sigma, with t / chi-square intervals).
The read threshold makes both error directions equally likely (Eq. 1):
``1 - CDF_LRS(R_th) = CDF_HRS(R_th) =: p_bf``. With ``x = ln R_th`` this is
``Phi(-(x - mu_L) / s_L) = Phi((x - mu_H) / s_H)``, i.e. ``-(x - mu_L)/s_L = (x - mu_H)/s_H``:

    x    = (mu_L s_H + mu_H s_L) / (s_L + s_H)
    p_bf = Phi(-(mu_H - mu_L) / (s_L + s_H))

(for equal shapes ``s``, ``R_th`` is the geometric mean of the medians and
``p_bf = Phi(-ln(med_H / med_L) / 2 s)``). ``method="brentq"`` solves Eq. 1 numerically
instead, as a check. The interval of ``p_bf`` is the delta-method interval of
``q = (mu_H - mu_L) / (s_L + s_H)`` (``var mu = s^2 / n``, ``var s ~ s^2 / 2(n - 1)``)
mapped through ``Phi(-q)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from xbar.calibration.intervals import Interval, Normality, mean_interval, normality, sigma_interval
from xbar.calibration.schema import Switching


@dataclass(frozen=True)
class LognormalFit:
    n: int
    mu_ln: float  # mean of ln R (ln ohm); median = exp(mu_ln)
    mu_ln_ci: Interval
    sigma_ln: float
    sigma_ln_ci: Interval
    normality: Normality  # of ln R

    @property
    def median_ohm(self) -> float:
        return math.exp(self.mu_ln)

    def cdf(self, r_ohm: np.ndarray) -> np.ndarray:
        return stats.norm.cdf((np.log(r_ohm) - self.mu_ln) / self.sigma_ln)

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "mu_ln": self.mu_ln,
            "mu_ln_ci": self.mu_ln_ci.to_list(),
            "median_ohm": self.median_ohm,
            "sigma_ln": self.sigma_ln,
            "sigma_ln_ci": self.sigma_ln_ci.to_list(),
            **{f"ln_{k}": v for k, v in self.normality.to_dict().items()},
        }


def fit_lognormal(r_ohm: np.ndarray, confidence: float = 0.95) -> LognormalFit:
    y = np.log(np.asarray(r_ohm, dtype=np.float64))
    n = y.size
    mu, s = float(y.mean()), float(y.std(ddof=1))
    return LognormalFit(
        n, mu, mean_interval(mu, s, n, confidence), s, sigma_interval(s, n - 1, confidence), normality(y)
    )


def bitflip_threshold(
    mu_lrs: float, s_lrs: float, mu_hrs: float, s_hrs: float, method: str = "closed"
) -> tuple[float, float]:
    """Solve Emonds Eq. 1 for two lognormals: returns ``(R_th in ohm, p_bf)``.

    ``mu``/``s`` are the mean and sigma of ln R. ``method`` is "closed" (the closed form in
    log space) or "brentq" (root of ``sf_LRS(x) - cdf_HRS(x)`` between the two log-medians).
    """
    if not (s_lrs > 0 and s_hrs > 0):
        raise ValueError(f"lognormal shapes must be > 0, got {s_lrs}, {s_hrs}")
    if not mu_hrs > mu_lrs:
        raise ValueError(f"HRS log-median {mu_hrs} must exceed the LRS one {mu_lrs}")
    if method == "closed":
        x = (mu_lrs * s_hrs + mu_hrs * s_lrs) / (s_lrs + s_hrs)
        p = float(stats.norm.cdf(-(mu_hrs - mu_lrs) / (s_lrs + s_hrs)))
    elif method == "brentq":
        # compare on the log scale so that tiny probabilities keep their precision
        def f(x: float) -> float:
            return stats.norm.logsf(x, mu_lrs, s_lrs) - stats.norm.logcdf(x, mu_hrs, s_hrs)

        x = optimize.brentq(f, mu_lrs, mu_hrs, xtol=1e-14, rtol=1e-15, maxiter=500)
        p = float(stats.norm.sf(x, mu_lrs, s_lrs))
    else:
        raise ValueError(f"method = {method!r}; expected 'closed' or 'brentq'")
    return math.exp(x), p


@dataclass(frozen=True)
class SwitchingFit:
    lrs: LognormalFit
    hrs: LognormalFit
    threshold_ohm: float
    p_bf: float
    p_bf_ci: Interval
    empirical_p_lrs_above: float  # fraction of LRS samples above R_th
    empirical_p_hrs_below: float  # fraction of HRS samples below R_th

    def to_dict(self) -> dict:
        return {
            "lrs": self.lrs.to_dict(),
            "hrs": self.hrs.to_dict(),
            "threshold_ohm": self.threshold_ohm,
            "p_bf": self.p_bf,
            "p_bf_ci": self.p_bf_ci.to_list(),
            "empirical_p_lrs_above": self.empirical_p_lrs_above,
            "empirical_p_hrs_below": self.empirical_p_hrs_below,
        }


@dataclass(frozen=True)
class BitFlipFitter:
    """Lognormal LRS/HRS fits and the equal-error threshold of Emonds Eq. 1."""

    confidence: float = 0.95
    method: str = "closed"

    def fit(self, data: Switching) -> SwitchingFit:
        lrs = fit_lognormal(data.lrs_resistance_ohm, self.confidence)
        hrs = fit_lognormal(data.hrs_resistance_ohm, self.confidence)
        for name, fit in (("lrs", lrs), ("hrs", hrs)):
            if not fit.sigma_ln > 0:
                raise ValueError(
                    f"{name}_resistance_ohm: every cycle reads the same resistance; expected a "
                    "cycle-to-cycle spread (repeated measurements, not one value copied)"
                )
        r_th, p = bitflip_threshold(lrs.mu_ln, lrs.sigma_ln, hrs.mu_ln, hrs.sigma_ln, self.method)
        s_sum = lrs.sigma_ln + hrs.sigma_ln
        q = (hrs.mu_ln - lrs.mu_ln) / s_sum
        var_q = (
            lrs.sigma_ln**2 / lrs.n + hrs.sigma_ln**2 / hrs.n
        ) / s_sum**2 + q**2 * (
            lrs.sigma_ln**2 / (2 * (lrs.n - 1)) + hrs.sigma_ln**2 / (2 * (hrs.n - 1))
        ) / s_sum**2
        z = stats.norm.ppf(0.5 + self.confidence / 2)
        half = z * math.sqrt(var_q)
        ci = Interval(
            float(stats.norm.cdf(-(q + half))), float(stats.norm.cdf(-(q - half))), self.confidence
        )
        return SwitchingFit(
            lrs=lrs,
            hrs=hrs,
            threshold_ohm=r_th,
            p_bf=p,
            p_bf_ci=ci,
            empirical_p_lrs_above=float(np.mean(data.lrs_resistance_ohm > r_th)),
            empirical_p_hrs_below=float(np.mean(data.hrs_resistance_ohm < r_th)),
        )
