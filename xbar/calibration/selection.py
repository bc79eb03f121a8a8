"""Model selection: one sigma for all levels (TRICE uniform RRAM) or one per level (Eq. 15).

Both models keep a free mean per level. With ``n_h`` deviations of level h, MLE
variances ``v_h`` and pooled ``v = sum n_h v_h / N``, the maximised log-likelihoods are
``l_uniform = -N/2 (log 2 pi v + 1)`` and ``l_level = -sum_h n_h/2 (log 2 pi v_h + 1)``.
The likelihood ratio ``2 (l_level - l_uniform)`` is asymptotically chi-square with
``L - 1`` degrees of freedom under the uniform model; AIC = 2 k - 2 l with k = L + 1
and 2 L parameters. The per-level model is chosen only when both agree: the LRT
rejects uniformity at ``alpha`` and its AIC is lower (parsimony wins ties).
Bartlett's (small-sample corrected LRT) and Levene's (robust to non-normality)
p-values are reported as diagnostics. When a level has values clipped at 0 uS, both
log-likelihoods are those of the left-censored normal (:mod:`xbar.calibration.censored`)
and the uniform sigma is its shared-sigma MLE with a Wald interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from xbar.calibration.censored import CensoredLevel, censored_rows, fit_level, fit_shared_sigma
from xbar.calibration.intervals import Interval, sigma_interval
from xbar.calibration.schema import Programming


@dataclass(frozen=True)
class SelectionResult:
    chosen: str  # "uniform" | "per-level"
    loglik_uniform: float
    loglik_per_level: float
    lrt_stat: float
    lrt_df: int
    lrt_p: float
    aic_uniform: float
    aic_per_level: float
    bartlett_p: float
    levene_p: float
    sigma_uniform: float  # pooled within-level sigma (ddof = number of levels)
    sigma_uniform_ci: Interval
    alpha: float
    sigma_uniform_df: int | None = None  # chi-square df of sigma_uniform; None: censored MLE (Wald)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "sigma_uniform_ci"}
        d["sigma_uniform_ci"] = self.sigma_uniform_ci.to_list()
        return d


@dataclass(frozen=True)
class SigmaModelSelector:
    """Choose uniform vs per-level sigma by likelihood ratio test and AIC.

    Args:
        alpha: significance level of the LRT.
        confidence: level of the interval on the pooled sigma.
    """

    alpha: float = 0.05
    confidence: float = 0.95

    def fit(self, data: Programming) -> SelectionResult:
        dev = data.deviation_levels()
        groups = [dev[data.target_level == h] for h in range(data.levels)]
        n = np.array([g.size for g in groups], dtype=np.float64)
        N = float(n.sum())
        L = data.levels
        ss = np.array([np.sum((g - g.mean()) ** 2) for g in groups])
        tiny = np.finfo(np.float64).tiny
        v_h = np.maximum(ss / n, tiny)
        v = max(ss.sum() / N, tiny)
        l_uni = -N / 2 * (math.log(2 * math.pi * v) + 1)
        l_lev = float(-np.sum(n / 2 * (np.log(2 * math.pi * v_h) + 1)))
        pooled = math.sqrt(ss.sum() / (N - L))
        pooled_ci = sigma_interval(pooled, int(N - L), self.confidence)
        pooled_df: int | None = int(N - L)
        cens = censored_rows(data)
        if np.any(cens):
            zero = data.zero_level()
            masks = [cens[data.target_level == h] for h in range(L)]
            lv = [CensoredLevel(g[~c], int(c.sum()), zero - h) for h, (g, c) in enumerate(zip(groups, masks))]
            pooled, pooled_ci, l_uni = fit_shared_sigma(lv, self.confidence)
            pooled_df = None
            l_lev = sum(fit_level(x, self.confidence).loglik if x.k else _normal_loglik(x.x) for x in lv)
        stat = max(0.0, 2 * (l_lev - l_uni))
        df = L - 1
        p = float(stats.chi2.sf(stat, df))
        aic_uni = 2 * (L + 1) - 2 * l_uni
        aic_lev = 2 * (2 * L) - 2 * l_lev
        chosen = "per-level" if (p < self.alpha and aic_lev < aic_uni) else "uniform"
        if np.all(ss > 0):
            bartlett_p = float(stats.bartlett(*groups).pvalue)
            levene_p = float(stats.levene(*groups).pvalue)
        else:
            bartlett_p = levene_p = float("nan")
        return SelectionResult(
            chosen=chosen,
            loglik_uniform=l_uni,
            loglik_per_level=l_lev,
            lrt_stat=stat,
            lrt_df=df,
            lrt_p=p,
            aic_uniform=aic_uni,
            aic_per_level=aic_lev,
            bartlett_p=bartlett_p,
            levene_p=levene_p,
            sigma_uniform=pooled,
            sigma_uniform_ci=pooled_ci,
            alpha=self.alpha,
            sigma_uniform_df=pooled_df,
        )


def _normal_loglik(x: np.ndarray) -> float:
    """Maximised Gaussian log-likelihood of one sample (MLE mean and variance)."""
    v = max(float(np.var(x)), np.finfo(np.float64).tiny)
    return -x.size / 2 * (math.log(2 * math.pi * v) + 1)
