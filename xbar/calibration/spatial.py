"""Spatially correlated programming noise from whole-array deviation maps (DAT Sec. III).

DAT models device noise as ``N(mu, Sigma)`` with a full covariance; for a crossbar we
fit the separable (Kronecker) form ``Sigma = sigma^2 K_rows (x) K_cols + tau^2 I`` with
exponential kernels ``K(d) = exp(-d / l)``: the covariance of deviations at lag
``(dr, dc)`` is ``C(dr, dc) = sigma^2 exp(-|dr| / l_rows - |dc| / l_cols)`` plus the
independent "nugget" ``tau^2`` at lag (0, 0) only.

The empirical autocovariance (about the grand mean, pooled over maps, computed by
zero-padded FFT) is fitted by weighted least squares over lags ``0 <= dr <= max_lag_rows``,
``0 <= |dc| <= max_lag_cols`` except (0, 0), each lag weighted by its pair count;
``tau^2 = C(0, 0) - sigma^2``. Intervals come from a bootstrap over maps (each map is
one independent realisation), so they need at least 2 maps: with n maps and the
bootstrap standard deviation ``sd*`` of ``log theta*`` (theta = sigma, l_rows, l_cols,
tau), the interval is ``theta exp(-/+ t_{n-1} sqrt(n / (n - 1)) sd*)`` (a studentized
interval on the log scale; on the linear scale, clipped at 0, for tau when a resample
gives tau = 0). With few maps it still under-covers (docs/calibration.md gives the
measured coverage); the plain percentile interval is far worse. Constant maps, or a
fit whose sigma ends at its lower bound, mean no spatial correlation was detected:
sigma is 0, the lengths NaN, and the spectrum empty. The eigen
spectrum of the fitted ``K_rows (x) K_cols`` (products of the factors' eigenvalues)
gives the low-rank picture DAT's Algorithm 1 exploits (rank for 90 % / 99 % of the
correlated variance); the empirical row and column covariances' spectra are reported
next to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from scipy.optimize import least_squares

from xbar.calibration.intervals import Interval
from xbar.calibration.schema import ArrayMaps

MAX_SPECTRUM_SIDE = 2048  # eigen-decompose row/col kernels only up to this size
TOP_EIGS = 32


def exp_kernel(n: int, length: float) -> np.ndarray:
    """``K_ij = exp(-|i - j| / length)`` of size n x n."""
    d = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    return np.exp(-d / length)


def lag_sums(maps: np.ndarray, max_lag_rows: int, max_lag_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-map sums of products at lags (dr, |dc|) and the number of pairs per lag.

    Returns ``sums [n_maps, max_lag_rows + 1, max_lag_cols + 1]`` and ``counts`` of the
    same trailing shape; ``sums[m] / counts`` is map m's autocovariance estimate.
    """
    n, R, C = maps.shape
    dr = np.arange(max_lag_rows + 1)
    dc = np.arange(max_lag_cols + 1)
    sums = np.empty((n, dr.size, dc.size))
    for m in range(n):
        F = np.fft.rfft2(maps[m], s=(2 * R, 2 * C))
        S = np.fft.irfft2(F * np.conj(F), s=(2 * R, 2 * C))
        pos = S[np.ix_(dr, dc)]
        neg = S[np.ix_(dr, (-dc) % (2 * C))]
        sums[m] = np.where(dc[None, :] > 0, pos + neg, pos)
    counts = np.outer(R - dr, (C - dc) * np.where(dc > 0, 2, 1)).astype(np.float64)
    return sums, counts


def _model(theta: np.ndarray, dr: np.ndarray, dc: np.ndarray) -> np.ndarray:
    s2, lr, lc = np.exp(theta)
    return s2 * np.exp(-dr / lr - dc / lc)


@dataclass(frozen=True)
class SpatialFit:
    sigma: float
    length_rows: float
    length_cols: float
    nugget_sigma: float  # sigma of the independent part (tau)
    mean: float  # grand mean of the maps (DAT's mu), level units
    n_maps: int
    rows: int
    cols: int
    rmse_rel: float  # RMS misfit of the autocovariance / C(0, 0)
    acov: np.ndarray  # empirical C(dr, |dc|)
    counts: np.ndarray
    sigma_ci: Interval | None
    length_rows_ci: Interval | None
    length_cols_ci: Interval | None
    nugget_sigma_ci: Interval | None
    spectrum: dict = field(default_factory=dict)
    sigma_log_se: float | None = None  # bootstrap sd of log sigma, inflated by sqrt(n / (n - 1))

    @property
    def detected(self) -> bool:
        """A correlated component was found (False: constant maps or sigma at its bound)."""
        return self.sigma > 0

    def fitted_acov(self) -> np.ndarray:
        dr, dc = np.indices(self.acov.shape)
        c = np.zeros(self.acov.shape)
        if self.detected:
            c = self.sigma**2 * np.exp(-dr / self.length_rows - dc / self.length_cols)
        c[0, 0] += self.nugget_sigma**2
        return c

    def sigma2_draws(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draws of sigma^2 matching its interval (pivot draws for a variance decomposition)."""
        if self.sigma_log_se is None:
            return np.full(size, self.sigma**2)
        t = rng.standard_t(self.n_maps - 1, size)
        return np.exp(2 * (math.log(self.sigma) + self.sigma_log_se * t))

    def to_dict(self) -> dict:
        def ci(x: Interval | None):
            return None if x is None else x.to_list()

        return {
            "sigma": self.sigma,
            "sigma_ci": ci(self.sigma_ci),
            "length_rows": self.length_rows,
            "length_rows_ci": ci(self.length_rows_ci),
            "length_cols": self.length_cols,
            "length_cols_ci": ci(self.length_cols_ci),
            "nugget_sigma": self.nugget_sigma,
            "nugget_sigma_ci": ci(self.nugget_sigma_ci),
            "mean": self.mean,
            "n_maps": self.n_maps,
            "rows": self.rows,
            "cols": self.cols,
            "rmse_rel": self.rmse_rel,
            "detected": self.detected,
            "acov_rows": self.acov[:, 0].tolist(),
            "acov_cols": self.acov[0, :].tolist(),
            "spectrum": self.spectrum,
        }


@dataclass(frozen=True)
class SpatialFitter:
    """Kronecker-exponential covariance fit of array deviation maps.

    Args:
        max_lag_rows, max_lag_cols: largest lags fitted (default: half the map side).
        bootstrap: bootstrap resamples over maps for the intervals (0 = none).
        seed: seed of the bootstrap resampling.
        confidence: level of the intervals.
    """

    max_lag_rows: int | None = None
    max_lag_cols: int | None = None
    bootstrap: int = 200
    seed: int = 0
    confidence: float = 0.95

    def fit(self, data: ArrayMaps) -> SpatialFit:
        maps = np.asarray(data.maps, dtype=np.float64)
        n, R, C = maps.shape
        mr = min(R - 1, self.max_lag_rows or max(1, R // 2))
        mc = min(C - 1, self.max_lag_cols or max(1, C // 2))
        mean = float(maps.mean())
        sums, counts = lag_sums(maps - mean, mr, mc)
        dr, dc = (a.astype(np.float64) for a in np.indices(counts.shape))
        mask = np.ones(counts.shape, bool)
        mask[0, 0] = False
        w = np.sqrt(counts[mask] / counts[mask].max())
        bounds = (
            np.log([1e-12, 0.05, 0.05]),
            np.log([10.0, 100.0 * max(R, C), 100.0 * max(R, C)]),
        )

        def solve(acov: np.ndarray, starts: list[np.ndarray]) -> tuple[np.ndarray, float]:
            scale = acov[0, 0] if acov[0, 0] > 0 else 1.0
            target = acov[mask] / scale
            best = None
            for x0 in starts:
                x0 = x0.copy()
                x0[0] -= math.log(scale)
                x0 = np.clip(x0, bounds[0] + 1e-9, bounds[1] - 1e-9)
                r = least_squares(
                    lambda th: w * (_model(th, dr[mask], dc[mask]) - target),
                    x0,
                    bounds=bounds,
                    method="trf",
                    x_scale="jac",
                )
                if best is None or r.cost < best.cost:
                    best = r
            theta = best.x.copy()
            theta[0] += math.log(scale)
            rmse = math.sqrt(np.mean((_model(best.x, dr[mask], dc[mask]) - target) ** 2))
            return theta, rmse

        acov = sums.sum(axis=0) / (n * counts)
        if not acov[0, 0] > (1e-10 * np.abs(maps).max()) ** 2:  # constant maps (up to rounding)
            return SpatialFit(0.0, math.nan, math.nan, 0.0, mean, n, R, C, 0.0, acov, counts, None, None, None, None)
        c00 = acov[0, 0]
        c1 = max(acov[min(1, mr), 0], acov[0, min(1, mc)], 1e-3 * c00)
        starts = [
            np.log([s2, lr, lc])
            for s2 in (c00, c1)
            for lr in (1.0, max(1.0, R / 4))
            for lc in (1.0, max(1.0, C / 4))
        ]
        theta, rmse = solve(acov, starts)
        s2, lr, lc = np.exp(theta)
        tau2 = max(0.0, acov[0, 0] - s2)
        if s2 <= c00 * math.exp(bounds[0][0]) * (1 + 1e-6):  # at the lower bound: none found
            return SpatialFit(
                0.0, math.nan, math.nan, math.sqrt(acov[0, 0]), mean, n, R, C, rmse, acov, counts,
                None, None, None, None,
            )

        cis: list[Interval | None] = [None] * 4
        sigma_log_se = None
        if n >= 2 and self.bootstrap > 0:
            rng = np.random.default_rng(self.seed)
            boot = np.empty((self.bootstrap, 4))
            for b in range(self.bootstrap):
                idx = rng.integers(0, n, size=n)
                ab = sums[idx].sum(axis=0) / (n * counts)
                th, _ = solve(ab, [theta])
                bs2, blr, blc = np.exp(th)
                boot[b] = [math.sqrt(bs2), blr, blc, math.sqrt(max(0.0, ab[0, 0] - bs2))]
            est = np.array([math.sqrt(s2), lr, lc, math.sqrt(tau2)])
            cis = [studentized_interval(est[i], boot[:, i], n, self.confidence) for i in range(4)]
            sigma_log_se = float(np.std(np.log(boot[:, 0]), ddof=1) * math.sqrt(n / (n - 1)))

        return SpatialFit(
            sigma=math.sqrt(s2),
            length_rows=float(lr),
            length_cols=float(lc),
            nugget_sigma=math.sqrt(tau2),
            mean=mean,
            n_maps=n,
            rows=R,
            cols=C,
            rmse_rel=rmse,
            acov=acov,
            counts=counts,
            sigma_ci=cis[0],
            length_rows_ci=cis[1],
            length_cols_ci=cis[2],
            nugget_sigma_ci=cis[3],
            spectrum=spectrum(maps - mean, float(lr), float(lc)),
            sigma_log_se=sigma_log_se,
        )


def studentized_interval(estimate: float, boot: np.ndarray, n: int, confidence: float) -> Interval:
    """``estimate exp(-/+ t_{n-1} sqrt(n / (n-1)) sd(log boot))`` (linear scale if a draw is <= 0).

    The bootstrap over n independent maps underestimates the spread by about
    ``(n - 1) / n`` and the t quantile allows for that spread being estimated from n maps.
    """
    q = stats.t.ppf(0.5 + confidence / 2, n - 1) * math.sqrt(n / (n - 1))
    if estimate > 0 and np.all(boot > 0):
        half = q * float(np.std(np.log(boot), ddof=1))
        return Interval(estimate * math.exp(-half), estimate * math.exp(half), confidence)
    half = q * float(np.std(boot, ddof=1))
    return Interval(max(0.0, estimate - half), estimate + half, confidence)


def _rank(eigs: np.ndarray, frac: float) -> int:
    c = np.cumsum(eigs) / eigs.sum()
    return int(np.searchsorted(c, frac) + 1)


def spectrum(maps: np.ndarray, length_rows: float, length_cols: float) -> dict:
    """Eigen spectra of the fitted Kronecker kernel and of the empirical row/col covariances.

    Eigenvalues are normalised to sum to 1 (fractions of variance); ``rank_90`` /
    ``rank_99`` are the numbers of leading eigenvectors of ``K_rows (x) K_cols`` that
    carry 90 % / 99 % of the correlated variance (the k of DAT's low-rank noise).
    """
    n, R, C = maps.shape
    if max(R, C) > MAX_SPECTRUM_SIDE:
        return {}
    er = np.linalg.eigvalsh(exp_kernel(R, length_rows))[::-1].clip(min=0)
    ec = np.linalg.eigvalsh(exp_kernel(C, length_cols))[::-1].clip(min=0)
    kron = np.sort(np.outer(er, ec).ravel())[::-1]
    emp_r = np.linalg.eigvalsh(np.einsum("mij,mkj->ik", maps, maps) / (n * C))[::-1].clip(min=0)
    emp_c = np.linalg.eigvalsh(np.einsum("mji,mjk->ik", maps, maps) / (n * R))[::-1].clip(min=0)

    def top(e: np.ndarray) -> list[float]:
        return (e[:TOP_EIGS] / e.sum()).tolist() if e.sum() > 0 else []

    return {
        "kron_fraction_top": top(kron),
        "rank_90": _rank(kron, 0.90),
        "rank_99": _rank(kron, 0.99),
        "rows_fraction_top": top(er),
        "cols_fraction_top": top(ec),
        "empirical_rows_fraction_top": top(emp_r),
        "empirical_cols_fraction_top": top(emp_c),
    }
