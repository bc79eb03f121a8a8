"""k-th percentile performance (TRICE Sec. III-A, Eq. 1 and Algorithm 2) and its confidence interval.

KPP_k is the value z_k with cdf(z_k) = k/100 (Eq. 1). From N Monte Carlo instances
x_(1) <= ... <= x_(N) it is estimated by the order statistic

    KPP_k = x_(r),  r = max(1, ceil(k N / 100)),

the smallest sample value whose empirical CDF reaches k/100 (the inverse of the
empirical CDF, Hyndman-Fan type 1). Algorithm 2 line 10 reads ``perf_l[q * len]``
with 0-based indexing, i.e. x_(floor(qN) + 1); the two agree unless qN is an integer,
where Algorithm 2 takes the next value up. ``rule="trice"`` reproduces Algorithm 2.

Confidence interval (distribution-free, from order statistics): the number B of
samples below the true percentile xi_q is Binomial(N, q). With

    l = the smallest j with P(B <= j) >= a/2,  u = 1 + the smallest j with P(B <= j) >= 1 - a/2,

[x_(l), x_(u)] covers xi_q with probability >= 1 - a for every distribution,
continuous or discrete (ties only make it more conservative): x_(l) > xi_q needs
B <= l - 1, which has probability < a/2; x_(u) < xi_q needs B >= u, which has
probability <= a/2. When l = 0 or u = N + 1 that side is unbounded (None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["order_statistic", "kpp", "kpp_interval", "interval_ranks"]


def _check(values: Sequence[float] | np.ndarray, k: float) -> np.ndarray:
    x = np.asarray(values, dtype=float).reshape(-1)
    if x.size == 0:
        raise ValueError("kpp: no values")
    if not 0.0 < float(k) < 100.0:
        raise ValueError(f"kpp: percentile k = {k}: expected 0 < k < 100")
    return x


def order_statistic(n: int, k: float, rule: str = "inverse-cdf") -> int:
    """1-based rank r of the order statistic that estimates the k-th percentile of n values."""
    q = float(k) / 100.0
    if rule == "inverse-cdf":
        r = math.ceil(q * n - 1e-9)
    elif rule == "trice":
        r = math.floor(q * n + 1e-9) + 1
    else:
        raise ValueError(f"kpp rule {rule!r}: expected 'inverse-cdf' or 'trice'")
    return min(max(r, 1), n)


def kpp(values: Sequence[float] | np.ndarray, k: float = 1.0, rule: str = "inverse-cdf") -> float:
    """The k-th percentile performance: x_(r) of the sorted values (see the module docstring).

    NaN values (a diverged instance) sort last, as numpy does.
    """
    x = np.sort(_check(values, k))
    return float(x[order_statistic(x.size, k, rule) - 1])


def interval_ranks(n: int, k: float, confidence: float = 0.95) -> tuple[int, int]:
    """1-based ranks (l, u) of the order-statistic interval; l = 0 or u = n + 1 mean unbounded."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence = {confidence}: expected 0 < confidence < 1")
    q, a = float(k) / 100.0, 1.0 - confidence
    lo = int(stats.binom.ppf(a / 2, n, q))
    hi = int(stats.binom.ppf(1 - a / 2, n, q)) + 1
    # ppf returns the smallest j with cdf(j) >= level; guard float round-off at the edge
    while lo > 0 and stats.binom.cdf(lo - 1, n, q) >= a / 2:
        lo -= 1
    return lo, min(hi, n + 1)


def kpp_interval(
    values: Sequence[float] | np.ndarray, k: float = 1.0, confidence: float = 0.95
) -> tuple[float | None, float | None]:
    """Distribution-free ``confidence`` interval [x_(l), x_(u)] for the k-th percentile."""
    x = np.sort(_check(values, k))
    lo, hi = interval_ranks(x.size, k, confidence)
    return (float(x[lo - 1]) if lo >= 1 else None, float(x[hi - 1]) if hi <= x.size else None)


def interval_width(values: Sequence[float] | np.ndarray, k: float, confidence: float = 0.95) -> float:
    """Width x_(u) - x_(l) of the interval (inf when a side is unbounded)."""
    lo, hi = kpp_interval(values, k, confidence)
    return math.inf if lo is None or hi is None else hi - lo
