"""Correlated Gaussian device noise N(mu, Sigma) (DAT, Park et al., Sec. III-A).

Three representations of the covariance of the devices of a crossbar tile:

- :class:`DenseCovariance` - an explicit full ``d x d`` matrix (small tiles, tests);
- :class:`LowRankCovariance` - DAT Algorithm 1 lines 2-3: the top-k eigenpairs,
  A_k = V_k D_k^(1/2), samples eps = A_k z with z ~ N(0, I_k);
- :class:`KroneckerCovariance` - a spatial covariance
  sigma^2 (K_rows (x) K_cols) with exponential kernels K(i, j) = exp(-|i - j| / l).
  Its eigenpairs are products of the factors' eigenpairs and its samples are
  L_r Z L_c^T (Cholesky factors of the small kernels), so neither ever forms the
  dense ``(R C) x (R C)`` matrix: a 512 x 512 tile or a whole network is cheap.

Tiles are independent of each other; a layer's matrix (rows = inputs,
cols = outputs) is split into tiles of ``tile_rows x tile_cols`` devices.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are made: presets load without it
    import torch


def exponential_kernel(n: int, length: float, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """K(i, j) = exp(-|i - j| / length); the identity when length = 0. ``dtype`` None: float64."""
    import torch

    dtype = torch.float64 if dtype is None else dtype

    idx = torch.arange(n, dtype=dtype, device=device)
    if length <= 0:
        return torch.eye(n, dtype=dtype, device=device)
    return torch.exp(-(idx[:, None] - idx[None, :]).abs() / length)


@functools.lru_cache(maxsize=64)
def _kernel_factors(n: int, length: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Cholesky factor, eigenvalues descending, eigenvectors) of an exponential kernel, float64 CPU."""
    import torch

    k = exponential_kernel(n, length)
    chol = torch.linalg.cholesky(k + 1e-12 * torch.eye(n, dtype=k.dtype))
    vals, vecs = torch.linalg.eigh(k)
    order = torch.argsort(vals, descending=True)
    return chol, vals[order].clamp(min=0), vecs[:, order]


def _pad_tiles(rows: int, cols: int, tr: int, tc: int) -> tuple[int, int, int, int]:
    nr, nc = math.ceil(rows / tr), math.ceil(cols / tc)
    return nr, nc, min(tr, rows), min(tc, cols)


@dataclass(frozen=True)
class KroneckerCovariance:
    """sigma^2 K_rows(length_rows) (x) K_cols(length_cols) over each tile, plus a mean.

    Units are those of the caller (level units in a preset). Correlation lengths are in
    devices; 0 means uncorrelated along that axis. ``rank`` > 0 samples the rank-k
    approximation of each tile's covariance (DAT-Fast, Algorithm 1 lines 2-3) instead
    of the full one.
    """

    sigma: float
    length_rows: float = 0.0
    length_cols: float = 0.0
    mean: float = 0.0
    rank: int = 0

    def __post_init__(self) -> None:
        if not self.sigma >= 0:
            raise ValueError(f"sigma = {self.sigma}: expected >= 0")
        if self.rank < 0:
            raise ValueError(f"rank = {self.rank}: expected 0 (full covariance) or a positive rank")
        for name in ("length_rows", "length_cols"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} = {v}: expected a finite length >= 0 (devices)")

    @functools.lru_cache(maxsize=128)  # noqa: B019 - frozen, hashed by value; few distinct tiles
    def factors(self, tile_rows: int, tile_cols: int, device: torch.device, dtype: torch.dtype | None = None):
        """Cholesky factors (rows, cols) of one tile's kernels on ``device``, kept per shape, device
        and dtype (None: float32; a training step samples every layer); shared tensors, not to be modified."""
        import torch

        dtype = torch.float32 if dtype is None else dtype
        lr = _kernel_factors(tile_rows, float(self.length_rows))[0].to(device=device, dtype=dtype)
        lc = _kernel_factors(tile_cols, float(self.length_cols))[0].to(device=device, dtype=dtype)
        return lr, lc

    def sample(
        self,
        rows: int,
        cols: int,
        n: int,
        tile_rows: int,
        tile_cols: int,
        generator: torch.Generator | None = None,
        device=None,
        dtype: torch.dtype | None = None,
        z: torch.Tensor | None = None,
        centered: bool = False,
        transposed: bool = False,
        scale: float = 1.0,
    ) -> torch.Tensor:
        """``n`` fields of shape ``[rows, cols]``, each tile an independent draw.

        ``z`` optionally supplies the standard normals ``[n, nr, tr, nc, tc]``;
        ``centered`` leaves the mean out (the zero-mean fluctuation only);
        ``transposed`` returns the same fields laid out ``[n, cols, rows]`` (contiguous
        when no tile is partial), the layout of a weight tensor ``[out, in]``;
        ``scale`` multiplies the fluctuation (applied to the small factors, no extra pass);
        ``dtype`` None is float32.
        """
        import torch

        dtype = torch.float32 if dtype is None else dtype

        nr, nc, tr, tc = _pad_tiles(rows, cols, tile_rows, tile_cols)
        mean = 0.0 if centered else self.mean
        if self.rank:
            a, u, v = self._low_rank_factors(tr, tc, torch.device(device or "cpu"), dtype)
            zz = torch.randn((n, nr, nc, a.numel()), generator=generator, device=device, dtype=dtype)
            zz = zz.mul_(a * scale if scale != 1.0 else a)
            # tile (i, j) is U diag(z a) V^T. Transposed, block (j, i) is V diag(z a) U^T: with
            # W[n, j, k, (i, r)] = (z a)[n, i, j, k] u[r, k] (k rows, small), one batched matmul
            # V @ W gives [n, nc, tc, nr * tr], already in the weight's layout (no copy after).
            if transposed:
                w = zz.permute(0, 2, 3, 1).unsqueeze(-1) * u.t().unsqueeze(1)  # [n, nc, k, nr, tr]
                field = torch.matmul(v, w.reshape(n, nc, -1, nr * tr))  # [n, nc, tc, nr * tr]
            else:
                w = zz.permute(0, 1, 3, 2).unsqueeze(-1) * v.t().unsqueeze(1)  # [n, nr, k, nc, tc]
                field = torch.matmul(u, w.reshape(n, nr, -1, nc * tc))  # [n, nr, tr, nc * tc]
        else:
            lr, lc = self.factors(tr, tc, torch.device(device or "cpu"), dtype)
            if z is None:
                z = torch.randn((n, nr, tr, nc, tc), generator=generator, device=device, dtype=dtype)
            lr = lr * (self.sigma * scale)  # the scale on the small factor, not the field
            field = torch.einsum("ab,nibjc,dc->njdia" if transposed else "ab,nibjc,dc->niajd", lr, z, lc)
        shape = (cols, rows) if transposed else (rows, cols)
        blocks = (nc * tc, nr * tr) if transposed else (nr * tr, nc * tc)
        field = field.reshape(n, *blocks)[:, : shape[0], : shape[1]]
        return field + mean if mean else field

    @functools.lru_cache(maxsize=128)  # noqa: B019 - as factors
    def _low_rank_factors(self, tile_rows: int, tile_cols: int, device: torch.device, dtype: torch.dtype):
        """(sqrt eigenvalues [k], row vectors [R, k], column vectors [C, k]) of :meth:`low_rank`, converted once."""
        lr = self.low_rank(self.rank, tile_rows, tile_cols)
        return tuple(t.to(device=device, dtype=dtype) for t in (lr.sqrt_values, lr.row_vectors, lr.col_vectors))

    def eigenpairs(self, k: int, tile_rows: int, tile_cols: int):
        """Top-k eigenpairs of one tile's covariance without forming it.

        Returns (values [k], row_vectors [tile_rows, k], col_vectors [tile_cols, k]);
        eigenvector j is ``outer(row_vectors[:, j], col_vectors[:, j])`` flattened row-major.
        """
        import torch

        _, vr, er = _kernel_factors(tile_rows, float(self.length_rows))
        _, vc, ec = _kernel_factors(tile_cols, float(self.length_cols))
        k = min(k, tile_rows * tile_cols)
        # the k largest products lie within the first k of each factor
        kr, kc = min(k, tile_rows), min(k, tile_cols)
        prod = vr[:kr, None] * vc[None, :kc]
        top = torch.topk(prod.flatten(), k)
        i, j = top.indices // kc, top.indices % kc
        return top.values * self.sigma**2, er[:, i], ec[:, j]

    def low_rank(self, k: int, tile_rows: int, tile_cols: int) -> KroneckerLowRank:
        """Rank-k factor of one tile's covariance (sigma included)."""
        vals, vr, vc = self.eigenpairs(k, tile_rows, tile_cols)
        return KroneckerLowRank(vals.sqrt(), vr, vc, self.mean)

    def to_dense(self, tile_rows: int, tile_cols: int) -> torch.Tensor:
        """The dense covariance of one tile (row-major device order); for tests and small tiles."""
        import torch

        kr = exponential_kernel(tile_rows, self.length_rows)
        kc = exponential_kernel(tile_cols, self.length_cols)
        return torch.kron(kr, kc) * self.sigma**2


@dataclass
class KroneckerLowRank:
    """Rank-k factor of a Kronecker covariance: eps = sum_j sqrt(lambda_j) z_j (u_j v_j^T)."""

    sqrt_values: torch.Tensor  # [k]
    row_vectors: torch.Tensor  # [R, k]
    col_vectors: torch.Tensor  # [C, k]
    mean: float = 0.0

    @property
    def rank(self) -> int:
        return self.sqrt_values.numel()

    def sample(self, n: int, generator=None, device=None, dtype=None, z=None) -> torch.Tensor:
        """``n`` tile fields ``[n, R, C]`` (``dtype`` None: float32)."""
        import torch

        dtype = torch.float32 if dtype is None else dtype

        a = self.sqrt_values.to(device=device, dtype=dtype)
        u = self.row_vectors.to(device=device, dtype=dtype)
        v = self.col_vectors.to(device=device, dtype=dtype)
        if z is None:
            z = torch.randn((n, self.rank), generator=generator, device=device, dtype=dtype)
        return torch.einsum("nk,rk,ck->nrc", z * a, u, v) + self.mean


@dataclass
class DenseCovariance:
    """N(mean, cov) over ``d`` devices with an explicit covariance matrix."""

    cov: torch.Tensor
    mean: torch.Tensor | float = 0.0

    def __post_init__(self) -> None:
        import torch

        c = self.cov
        if c.dim() != 2 or c.shape[0] != c.shape[1]:
            raise ValueError(f"covariance shape {tuple(c.shape)}: expected a square matrix")
        if not torch.allclose(c, c.T, atol=1e-6 * float(c.abs().max().clamp(min=1e-30))):
            raise ValueError("covariance is not symmetric")
        lo = torch.linalg.eigvalsh(c.double()).min().item()
        if lo < -1e-8 * max(1.0, float(c.abs().max())):
            raise ValueError(f"covariance is not positive semidefinite (smallest eigenvalue {lo:.3g})")

    @property
    def dim(self) -> int:
        return self.cov.shape[0]

    @functools.cached_property
    def _factor(self) -> torch.Tensor:
        import torch

        vals, vecs = torch.linalg.eigh(self.cov.double())
        return (vecs * vals.clamp(min=0).sqrt()).to(self.cov.dtype)

    def sample(self, n: int, generator=None, device=None, dtype=None) -> torch.Tensor:
        """``n`` draws ``[n, d]`` (``dtype`` None: float32)."""
        import torch

        dtype = torch.float32 if dtype is None else dtype

        z = torch.randn((n, self.dim), generator=generator, device=device, dtype=dtype)
        return z @ self._factor.to(device=device, dtype=dtype).T + self.mean

    def low_rank(self, k: int) -> LowRankCovariance:
        """DAT Algorithm 1, lines 2-3: A_k = V_k D_k^(1/2) from the k largest eigenpairs."""
        import torch

        vals, vecs = torch.linalg.eigh(self.cov.double())
        order = torch.argsort(vals, descending=True)[:k]
        a = vecs[:, order] * vals[order].clamp(min=0).sqrt()
        return LowRankCovariance(a.to(self.cov.dtype), self.mean)


@dataclass
class LowRankCovariance:
    """N(mean, A A^T) with ``A = [d, k]``: eps = A z, z ~ N(0, I_k) (DAT-Fast)."""

    factor: torch.Tensor
    mean: torch.Tensor | float = 0.0

    @property
    def rank(self) -> int:
        return self.factor.shape[1]

    def sample(self, n: int, generator=None, device=None, dtype=None) -> torch.Tensor:
        """``n`` draws ``[n, d]`` (``dtype`` None: float32)."""
        import torch

        dtype = torch.float32 if dtype is None else dtype

        z = torch.randn((n, self.rank), generator=generator, device=device, dtype=dtype)
        return z @ self.factor.to(device=device, dtype=dtype).T + self.mean

    def to_dense(self) -> torch.Tensor:
        return self.factor @ self.factor.T
