"""Which covariance describes ``/array_maps`` best: Kronecker, low-rank or dense (DAT Sec. III-A).

DAT takes the noise profile N(mu, Sigma) from device measurements. Each map is one
realisation of the ``d = rows x cols`` devices of a tile, so three models of Sigma
compete:

- ``kronecker-exponential``: sigma^2 K_rows (x) K_cols + tau^2 I (4 parameters,
  :class:`xbar.calibration.spatial.SpatialFitter`);
- ``low-rank``: probabilistic PCA, Sigma = V_k (Lambda_k - s^2 I) V_k^T + s^2 I, the
  maximum-likelihood rank-k model (Tipping & Bishop 1999): V_k, Lambda_k the top-k
  eigenpairs of the sample covariance and s^2 the mean of the other eigenvalues;
- ``dense``: the sample covariance (when every fold has more maps than devices) or
  the Ledoit-Wolf shrunk sample covariance (well conditioned for any number of maps),
  whichever predicts held-out maps better, only for ``d <= MAX_DENSE_DIM``.

Ranks are tried up to ``d / 2``: beyond that a low-rank model has as many numbers as
the dense one (d k versus d (d + 1) / 2).

They are compared by the Gaussian log-likelihood of held-out maps (``folds``-fold
cross-validation over maps, each fold's models fitted on the other maps; the rank k
is the one with the best held-out likelihood), which penalises the many parameters of
the low-rank and dense models by how badly they predict maps they have not seen. The
in-sample log-likelihood, AIC and the relative Frobenius distance to the sample
covariance of all maps are reported next to it. The Kronecker model is kept unless
another one predicts held-out maps better.

The preset takes the correlated part of the chosen model (as it does for the
Kronecker fit, whose independent tau^2 is left to ``[programming]``): for the low-rank
model the eigenpairs (Lambda_k - s^2, V_k) with s the independent sigma; the dense
model is the whole covariance (its independent part is inside it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from xbar.calibration.schema import ArrayMaps
from xbar.calibration.spatial import SpatialFit, SpatialFitter, exp_kernel

MAX_DIM = 4096  # devices per map beyond which only the Kronecker model is fitted
MAX_DENSE_DIM = 1024  # devices per map up to which the dense model competes
MAX_RANK = 64
LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class CovarianceChoice:
    """Outcome of :class:`CovarianceSelector` (log-likelihoods in nats per map)."""

    chosen: str
    rows: int
    cols: int
    n_maps: int
    folds: int
    rank: int  # k of the low-rank model
    heldout_loglik: dict[str, float]
    loglik: dict[str, float]
    aic: dict[str, float]
    params: dict[str, int]
    frobenius_rel: dict[str, float]
    mean: float
    covariance: np.ndarray | None = None  # dense: [d, d]
    eigenvalues: np.ndarray | None = None  # low-rank: [k] (correlated part)
    eigenvectors: np.ndarray | None = None  # low-rank: [d, k]
    nugget_sigma: float = 0.0
    dense_estimator: str = ""  # "sample" or "ledoit-wolf"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def measured(self) -> bool:
        """A dense or low-rank model was chosen over the Kronecker one."""
        return self.chosen in ("dense", "low-rank")

    @property
    def detected(self) -> bool:
        return self.measured and self.sigma > 0

    @property
    def sigma(self) -> float:
        """RMS sigma of the correlated part written to the preset, sqrt(trace / d)."""
        if self.chosen == "dense":
            return math.sqrt(float(np.trace(self.covariance)) / self.covariance.shape[0])
        if self.chosen == "low-rank":
            return math.sqrt(float(self.eigenvalues.sum()) / (self.rows * self.cols))
        return 0.0

    def sigma2_draws(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """The correlated variance as a constant (its sampling error is not carried into intervals)."""
        return np.full(size, self.sigma**2)

    def to_dict(self) -> dict:
        return {
            "chosen": self.chosen,
            "criterion": f"held-out Gaussian log-likelihood per map, {self.folds}-fold over maps",
            "heldout_loglik": self.heldout_loglik,
            "loglik": self.loglik,
            "aic": self.aic,
            "params": self.params,
            "frobenius_rel": self.frobenius_rel,
            "rank": self.rank,
            "dense_estimator": self.dense_estimator,
            "nugget_sigma": self.nugget_sigma,
            "correlated_sigma": self.sigma,
            "n_maps": self.n_maps,
            "devices": self.rows * self.cols,
            "notes": list(self.notes),
        }


def _kron_eig(fit: SpatialFit, rows: int, cols: int, total_var: float):
    """(eigenvalues [d], row eigvecs, col eigvecs) of sigma^2 K_r (x) K_c + tau^2 I (index r * cols + c)."""
    if not fit.detected:
        return np.full(rows * cols, max(total_var, 1e-300)), np.eye(rows), np.eye(cols)
    er, vr = np.linalg.eigh(exp_kernel(rows, fit.length_rows))
    ec, vc = np.linalg.eigh(exp_kernel(cols, fit.length_cols))
    lam = fit.sigma**2 * np.outer(er.clip(min=0), ec.clip(min=0)).ravel() + fit.nugget_sigma**2
    return lam.clip(min=1e-300), vr, vc


def _kron_loglik(x: np.ndarray, lam: np.ndarray, vr: np.ndarray, vc: np.ndarray) -> np.ndarray:
    """Log-likelihood of each centred map ``x [m, rows, cols]`` under the Kronecker model."""
    y = np.einsum("ri,mrc,cj->mij", vr, x, vc).reshape(len(x), -1)  # coordinates in the eigenbasis
    return -0.5 * (lam.size * LOG_2PI + np.log(lam).sum() + (y**2 / lam).sum(1))


def _ppca(xc: np.ndarray, max_rank: int):
    """(eigenvalues [r] descending, eigenvectors [d, r], total variance) of the sample covariance of rows of ``xc``."""
    n = xc.shape[0]
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    lam = s**2 / n
    total = float((xc**2).sum() / n)
    r = min(max_rank, lam.size)
    return lam[:r], vt[:r].T, total


def _ppca_noise(lam: np.ndarray, total: float, d: int) -> np.ndarray:
    """s^2(k) = (trace - sum_{i<=k} lambda_i) / (d - k) for k = 1..len(lam)."""
    k = np.arange(1, lam.size + 1)
    return (total - np.cumsum(lam)) / (d - k)


def _ppca_loglik(x: np.ndarray, lam: np.ndarray, vecs: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Log-likelihood of each row of ``x [m, d]`` under PPCA of every rank k: ``[m, K]``."""
    d = x.shape[1]
    c2 = (x @ vecs) ** 2  # [m, K]
    k = np.arange(1, lam.size + 1)
    lk = np.maximum(lam, s2)  # the ML eigenvalue of a kept direction is max(lambda, s^2)
    logdet = np.cumsum(np.log(lk)) + (d - k) * np.log(s2)
    # x^T Sigma^-1 x = sum_{i<=k} c_i^2 / lambda_i + (|x|^2 - sum_{i<=k} c_i^2) / s^2
    quad = np.cumsum(c2 / lk[None, :], axis=1) + ((x**2).sum(1)[:, None] - np.cumsum(c2, axis=1)) / s2[None, :]
    return -0.5 * (d * LOG_2PI + logdet[None, :] + quad)


def _ledoit_wolf(xc: np.ndarray) -> np.ndarray:
    from sklearn.covariance import ledoit_wolf

    return ledoit_wolf(xc, assume_centered=True)[0]


def _dense_loglik(x: np.ndarray, cov: np.ndarray) -> np.ndarray:
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, x.T)
    return -0.5 * (cov.shape[0] * LOG_2PI + 2 * np.log(np.diag(chol)).sum() + (z**2).sum(0))


@dataclass(frozen=True)
class CovarianceSelector:
    """Chooses among Kronecker, low-rank and dense covariances of array maps (see module docstring).

    Args:
        folds: cross-validation folds over maps (at most one per map).
        seed: order of the maps in the folds.
        max_rank: largest k tried for the low-rank model.
    """

    folds: int = 5
    seed: int = 0
    max_rank: int = MAX_RANK

    def fit(self, data: ArrayMaps, kronecker: SpatialFit | None = None) -> CovarianceChoice | None:
        """The comparison, or None when it cannot be made (fewer than 4 maps, or maps too large)."""
        maps = np.asarray(data.maps, dtype=np.float64)
        n, rows, cols = maps.shape
        d = rows * cols
        if n < 4 or d > MAX_DIM or d < 2 or not maps.std() > 0:
            return None
        folds = min(self.folds, n)
        order = np.random.default_rng(self.seed).permutation(n)
        parts = np.array_split(order, folds)
        n_train = n - len(max(parts, key=len))
        kmax = min(self.max_rank, d // 2, n_train - 1)
        use_dense = d <= MAX_DENSE_DIM
        use_sample = use_dense and n_train > d
        held = {"kronecker-exponential": 0.0, "ledoit-wolf": 0.0, "sample": 0.0}
        held_k = np.zeros(max(kmax, 0))
        for test in parts:
            train = np.setdiff1d(order, test)
            mu = maps[train].mean()
            tr, te = maps[train] - mu, maps[test] - mu
            kf = SpatialFitter(bootstrap=0).fit(ArrayMaps(maps[train]))
            lam, vr, vc = _kron_eig(kf, rows, cols, float((tr**2).mean()))
            held["kronecker-exponential"] += float(_kron_loglik(te, lam, vr, vc).sum())
            xtr, xte = tr.reshape(len(train), d), te.reshape(len(test), d)
            if kmax >= 1:
                plam, pvec, total = _ppca(xtr, kmax)
                s2 = np.maximum(_ppca_noise(plam, total, d), 1e-300)
                held_k += _ppca_loglik(xte, plam, pvec, s2).sum(0)[:kmax]
            if use_dense:
                held["ledoit-wolf"] += float(_dense_loglik(xte, _ledoit_wolf(xtr)).sum())
            if use_sample:
                held["sample"] += float(_dense_loglik(xte, xtr.T @ xtr / len(xtr)).sum())
        heldout = {"kronecker-exponential": held["kronecker-exponential"] / n}
        rank = 0
        if kmax >= 1:
            rank = int(np.argmax(held_k)) + 1
            heldout["low-rank"] = float(held_k[rank - 1]) / n
        estimator = ""
        if use_dense:
            estimator = "sample" if use_sample and held["sample"] > held["ledoit-wolf"] else "ledoit-wolf"
            heldout["dense"] = held[estimator] / n
        chosen = max(heldout, key=heldout.get)

        # the models refitted on every map: in-sample likelihood, AIC, Frobenius distance
        mu = float(maps.mean())
        xc = (maps - mu).reshape(n, d)
        sample = xc.T @ xc / n
        kf = kronecker if kronecker is not None else SpatialFitter(bootstrap=0).fit(ArrayMaps(maps))
        lam, vr, vc = _kron_eig(kf, rows, cols, float(np.diag(sample).mean()))
        loglik = {"kronecker-exponential": float(_kron_loglik(maps - mu, lam, vr, vc).sum())}
        params = {"kronecker-exponential": 4 if kf.detected else 1}
        kron_dense = np.eye(d) * (kf.nugget_sigma**2 if kf.detected else float(lam[0]))
        if kf.detected:
            kron_dense += kf.sigma**2 * np.kron(exp_kernel(rows, kf.length_rows), exp_kernel(cols, kf.length_cols))
        norm = float(np.linalg.norm(sample)) or 1.0
        frob = {"kronecker-exponential": float(np.linalg.norm(kron_dense - sample)) / norm}
        out: dict = {}
        if rank:
            plam, pvec, total = _ppca(xc, rank)
            s2 = float(max(_ppca_noise(plam, total, d)[rank - 1], 1e-300))
            loglik["low-rank"] = float(_ppca_loglik(xc, plam, pvec, np.full(rank, s2))[:, rank - 1].sum())
            params["low-rank"] = d * rank - rank * (rank - 1) // 2 + 1
            corr = np.maximum(plam - s2, 0.0)
            model = (pvec * corr) @ pvec.T + s2 * np.eye(d)
            frob["low-rank"] = float(np.linalg.norm(model - sample)) / norm
            if chosen == "low-rank":
                out = {"eigenvalues": corr, "eigenvectors": pvec, "nugget_sigma": math.sqrt(s2)}
        if use_dense:
            lw = sample if estimator == "sample" else _ledoit_wolf(xc)
            loglik["dense"] = float(_dense_loglik(xc, lw).sum())
            params["dense"] = d * (d + 1) // 2
            frob["dense"] = float(np.linalg.norm(lw - sample)) / norm
            if chosen == "dense":
                out = {"covariance": (lw + lw.T) / 2, "nugget_sigma": 0.0}
        aic = {k: 2 * params[k] - 2 * v for k, v in loglik.items()}
        notes = []
        if not use_dense:
            notes.append(f"dense covariance not tried: {d} devices per map > {MAX_DENSE_DIM}")
        return CovarianceChoice(
            chosen=chosen, rows=rows, cols=cols, n_maps=n, folds=folds, rank=rank,
            dense_estimator=estimator, heldout_loglik=heldout, loglik=loglik, aic=aic, params=params, frobenius_rel=frob,
            mean=mu, notes=tuple(notes), **out,
        )


__all__ = ["CovarianceChoice", "CovarianceSelector"]
