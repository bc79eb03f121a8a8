"""Left-censored normal (Tobit) fits for levels whose conductance is clipped at 0 uS.

A conductance cannot be negative: a device programmed near 0 uS that would land
below it reads exactly 0 (a chip's sense amplifier, or ``EmulatedBackend``, clips).
For such a level the deviations are a normal ``N(mu, sigma)`` left-censored at the
known point ``c`` (0 uS in level units): ``k`` values sit at ``c`` and the others are
observed. Mean and sample sigma of those values are biased (towards ``c`` and towards
0), so a level with censored values is fitted by maximum likelihood,

    l(mu, sigma) = sum_observed [log phi((x - mu) / sigma) - log sigma] + k log Phi((c - mu) / sigma)

with Wald intervals from the observed information (``mu``, and ``log sigma`` mapped
back). The uniform-sigma model of :mod:`xbar.calibration.selection` maximises the same
likelihood with one shared sigma (means of uncensored levels profiled out in closed
form). Both are asymptotic: with few uncensored values, or most of a level censored,
the intervals are approximate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from xbar.calibration.intervals import Interval

_LOG_2PI = math.log(2 * math.pi)


MIN_OBSERVED = 3  # values above the censoring point a level needs for a censored fit


def censored_rows(data) -> np.ndarray:
    """Mask of the ``Programming`` rows fitted as censored (at 0 uS).

    A level with fewer than :data:`MIN_OBSERVED` values above 0 uS is not: it sits at
    0 uS (e.g. a noise-free level programmed to 0 uS), which the plain statistics
    describe (a constant level has sigma 0).
    """
    mask = data.censored().copy()
    for h in range(data.levels):
        sel = data.target_level == h
        if np.count_nonzero(sel & ~mask) < MIN_OBSERVED:
            mask[sel] = False
    return mask


@dataclass(frozen=True)
class CensoredLevel:
    """One level's deviations: observed values ``x`` and ``k`` values censored at ``c``."""

    x: np.ndarray
    k: int
    c: float

    @property
    def n(self) -> int:
        return int(self.x.size) + self.k


def _level_nll(mu: float, log_s: float, lv: CensoredLevel) -> tuple[float, float, float]:
    """Negative log-likelihood of one level and its gradient in (mu, log sigma)."""
    s = math.exp(log_s)
    z = (lv.x - mu) / s
    m = lv.x.size
    nll = 0.5 * float(z @ z) + m * (log_s + 0.5 * _LOG_2PI)
    g_mu = -float(z.sum()) / s
    g_ls = m - float(z @ z)
    if lv.k:
        a = (lv.c - mu) / s
        log_cdf = float(special.log_ndtr(a))
        lam = math.exp(-0.5 * a * a - 0.5 * _LOG_2PI - log_cdf)  # phi(a) / Phi(a)
        nll -= lv.k * log_cdf
        g_mu += lv.k * lam / s
        g_ls += lv.k * lam * a
    return nll, g_mu, g_ls


def _uncensored_nll(log_s: float, n: int, ss: float) -> tuple[float, float]:
    """Profiled nll of an uncensored level (mean at its sample mean) and d/d log sigma."""
    return n * (log_s + 0.5 * _LOG_2PI) + 0.5 * ss * math.exp(-2 * log_s), n - ss * math.exp(-2 * log_s)


def _hessian(grad, theta: np.ndarray) -> np.ndarray:
    """Central finite-difference Hessian of an analytic gradient."""
    p = theta.size
    h = np.empty((p, p))
    for i in range(p):
        step = 1e-5 * max(1.0, abs(theta[i]))
        e = np.zeros(p)
        e[i] = step
        h[:, i] = (grad(theta + e) - grad(theta - e)) / (2 * step)
    return 0.5 * (h + h.T)


def _minimize(fun, x0: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    r = optimize.minimize(fun, x0, jac=True, method="BFGS", options={"gtol": 1e-9, "maxiter": 500})
    cov = np.linalg.pinv(_hessian(lambda t: fun(t)[1], r.x))
    return r.x, float(r.fun), cov


def _start(lv: CensoredLevel) -> tuple[float, float]:
    allx = np.concatenate([lv.x, np.full(lv.k, lv.c)])
    sd = float(np.std(allx)) if allx.size > 1 else 0.0
    return float(np.mean(allx)), math.log(sd if sd > 0 else 1e-3)


@dataclass(frozen=True)
class TobitFit:
    mu: float
    mu_ci: Interval
    sigma: float
    sigma_ci: Interval
    loglik: float


def fit_level(lv: CensoredLevel, confidence: float) -> TobitFit:
    """Maximum-likelihood mean and sigma of one left-censored normal level."""

    def fun(t):
        nll, gm, gs = _level_nll(t[0], t[1], lv)
        return nll, np.array([gm, gs])

    theta, nll, cov = _minimize(fun, np.array(_start(lv)))
    z = stats.norm.ppf(0.5 + confidence / 2)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    mu, ls = float(theta[0]), float(theta[1])
    return TobitFit(
        mu=mu,
        mu_ci=Interval(mu - z * se[0], mu + z * se[0], confidence),
        sigma=math.exp(ls),
        sigma_ci=Interval(math.exp(ls - z * se[1]), math.exp(ls + z * se[1]), confidence),
        loglik=-nll,
    )


def fit_shared_sigma(levels: Sequence[CensoredLevel], confidence: float) -> tuple[float, Interval, float]:
    """One sigma for all levels (free means): MLE sigma, its Wald interval and the max log-likelihood."""
    cens = [lv for lv in levels if lv.k]
    plain = [(lv.x.size, float(np.sum((lv.x - lv.x.mean()) ** 2))) for lv in levels if not lv.k]
    s0 = math.log(np.mean([math.exp(_start(lv)[1]) for lv in levels]))

    def fun(t):
        ls = t[0]
        nll, g = 0.0, np.zeros_like(t)
        for n, ss in plain:
            a, b = _uncensored_nll(ls, n, ss)
            nll += a
            g[0] += b
        for j, lv in enumerate(cens, start=1):
            a, gm, gs = _level_nll(t[j], ls, lv)
            nll += a
            g[j] += gm
            g[0] += gs
        return nll, g

    theta, nll, cov = _minimize(fun, np.array([s0, *(_start(lv)[0] for lv in cens)]))
    z = stats.norm.ppf(0.5 + confidence / 2)
    se = math.sqrt(max(0.0, cov[0, 0]))
    ls = float(theta[0])
    return math.exp(ls), Interval(math.exp(ls - z * se), math.exp(ls + z * se), confidence), -nll


__all__ = ["MIN_OBSERVED", "censored_rows", "CensoredLevel", "TobitFit", "fit_level", "fit_shared_sigma"]
