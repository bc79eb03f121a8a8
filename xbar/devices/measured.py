"""A tile covariance Sigma measured on a device (DAT, Park et al., Sec. III-A).

DAT takes the noise profile N(mu, Sigma) of a crossbar from measurements of the
device. :class:`MeasuredCovariance` holds that Sigma over the ``rows x cols`` devices
of one tile (row-major device order: index ``r * cols + c``, rows = inputs), either

- ``kind = "dense"``: the full ``d x d`` matrix (``d = rows * cols``), sampled through
  its Cholesky factor (eigendecomposition when Sigma is positive semidefinite but
  singular), computed once per tile shape; or
- ``kind = "low-rank"``: k eigenpairs (lambda_j, v_j), Sigma = V_k diag(lambda) V_k^T,
  sampled as eps = A_k z with A_k = V_k diag(lambda)^(1/2), z ~ N(0, I_k)
  (DAT Algorithm 1, lines 2-3).

Every tile of a layer is an independent draw, as for
:class:`xbar.devices.correlated.KroneckerCovariance`, whose sampling interface this
class shares, so the one :class:`xbar.devices.DeviceModel` hands it to training
injection, Monte Carlo, DAT and the emulated chip alike. A tile smaller than the
measured one (a layer with fewer rows or columns) gets the marginal covariance of its
devices, the top-left block of Sigma. ``rank > 0`` samples the top-``rank`` eigenpairs
instead of the whole covariance (DAT-Fast).

Validation (one ``ValueError`` line each): the shape must be ``d x d`` (or ``d x k``
eigenvectors); Sigma symmetric within ``SYMMETRY_TOL * max|Sigma|``; its smallest
eigenvalue >= ``-PSD_TOL * (largest eigenvalue)`` (negative eigenvalues inside the
tolerance are rounding and are sampled as 0); low-rank eigenvalues >= 0 by the same
rule and eigenvectors orthonormal within ``ORTHONORMAL_TOL``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

SYMMETRY_TOL = 1e-6  # |Sigma - Sigma^T| <= SYMMETRY_TOL * max|Sigma|
PSD_TOL = 1e-6  # smallest eigenvalue >= -PSD_TOL * largest eigenvalue
ORTHONORMAL_TOL = 1e-4  # |V^T V - I| <= ORTHONORMAL_TOL (low-rank eigenvectors)
KINDS = ("dense", "low-rank")


@dataclass(frozen=True, eq=False)
class MeasuredCovariance:
    """A measured tile covariance (level units squared) plus a mean (level units).

    Args:
        kind: "dense" (``covariance`` [d, d]) or "low-rank" (``eigenvalues`` [k],
            ``eigenvectors`` [d, k]).
        rows, cols: devices of the tile the covariance describes (d = rows * cols).
        mean: mu of the device field, level units.
        rank: 0 samples the whole covariance; k > 0 its top-k eigenpairs (DAT-Fast).
        source: where the numbers came from (a sidecar file and its SHA-256, or
            "inline"), kept so that a preset writes them back the same way.
    """

    kind: str
    rows: int
    cols: int
    covariance: torch.Tensor | None = None
    eigenvalues: torch.Tensor | None = None
    eigenvectors: torch.Tensor | None = None
    mean: float = 0.0
    rank: int = 0
    source: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind = {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"rows x cols = {self.rows} x {self.cols}: expected positive")
        if self.rank < 0:
            raise ValueError(f"rank = {self.rank}: expected 0 (full covariance) or a positive rank")
        if not math.isfinite(self.mean):
            raise ValueError(f"mean = {self.mean}: expected a finite number")
        d = self.rows * self.cols
        if self.kind == "dense":
            self._check_dense(d)
        else:
            self._check_low_rank(d)

    def _check_dense(self, d: int) -> None:
        c = self.covariance
        if c is None:
            raise ValueError("covariance: missing; expected a d x d matrix for kind = 'dense'")
        c = _as_float64(c, "covariance")
        object.__setattr__(self, "covariance", c)
        if c.dim() != 2 or tuple(c.shape) != (d, d):
            raise ValueError(
                f"covariance has shape {list(c.shape)}: expected [{d}, {d}] "
                f"(the {self.rows} x {self.cols} devices of a tile)"
            )
        top = float(c.abs().max()) if c.numel() else 0.0
        asym = float((c - c.T).abs().max()) if c.numel() else 0.0
        if asym > SYMMETRY_TOL * top:
            raise ValueError(
                f"covariance is not symmetric: max |C - C^T| = {asym:.3g} > {SYMMETRY_TOL:g} x max |C| = {top:.3g}"
            )
        vals = torch.linalg.eigvalsh(c)
        lo, hi = float(vals[0]), float(vals[-1])
        if lo < -PSD_TOL * max(hi, 0.0) or (hi <= 0 and lo < 0):
            raise ValueError(
                f"covariance is not positive semidefinite: smallest eigenvalue {lo:.3g} < "
                f"-{PSD_TOL:g} x largest ({hi:.3g})"
            )

    def _check_low_rank(self, d: int) -> None:
        if self.eigenvalues is None or self.eigenvectors is None:
            raise ValueError("eigenvalues, eigenvectors: missing; expected k values and a d x k matrix for kind = 'low-rank'")
        lam = _as_float64(self.eigenvalues, "eigenvalues").reshape(-1)
        v = _as_float64(self.eigenvectors, "eigenvectors")
        if v.dim() != 2 or v.shape[0] != d or v.shape[1] != lam.numel() or lam.numel() == 0:
            raise ValueError(
                f"eigenvectors have shape {list(v.shape)} for {lam.numel()} eigenvalues: expected [{d}, k] with k = "
                f"{lam.numel()} >= 1 (the {self.rows} x {self.cols} devices of a tile)"
            )
        hi = float(lam.max())
        if float(lam.min()) < -PSD_TOL * max(hi, 0.0) or (hi <= 0 and float(lam.min()) < 0):
            raise ValueError(f"eigenvalues: smallest {float(lam.min()):.3g} is negative; expected >= 0 (a PSD covariance)")
        err = float((v.T @ v - torch.eye(v.shape[1], dtype=v.dtype)).abs().max())
        if err > ORTHONORMAL_TOL:
            raise ValueError(f"eigenvectors are not orthonormal: max |V^T V - I| = {err:.3g} > {ORTHONORMAL_TOL:g}")
        order = torch.argsort(lam, descending=True)
        object.__setattr__(self, "eigenvalues", lam[order].clamp(min=0))
        object.__setattr__(self, "eigenvectors", v[:, order])

    # ------------------------------------------------------------ statistics
    @property
    def dim(self) -> int:
        return self.rows * self.cols

    @property
    def variances(self) -> torch.Tensor:
        """Per-device variance, diag(Sigma), float64 [d]."""
        if self.kind == "dense":
            return self.covariance.diagonal()
        return (self.eigenvectors.square() * self.eigenvalues).sum(1)

    @property
    def sigma(self) -> float:
        """RMS standard deviation of a device, sqrt(trace(Sigma) / d) (level units); 0 means no fluctuation."""
        return math.sqrt(float(self.variances.mean()))

    def to_dense(self, tile_rows: int | None = None, tile_cols: int | None = None) -> torch.Tensor:
        """Sigma of a ``tile_rows x tile_cols`` tile (default the whole measured tile), float64."""
        a = self._block(tile_rows or self.rows, tile_cols or self.cols)
        return a if self.kind == "dense" else (a * self.eigenvalues) @ a.T

    def _block(self, tr: int, tc: int) -> torch.Tensor:
        """The covariance (dense) or eigenvector rows (low-rank) of the top-left ``tr x tc`` devices."""
        if tr > self.rows or tc > self.cols:
            raise ValueError(
                f"tile of {tr} x {tc} devices: the measured covariance covers {self.rows} x {self.cols}; "
                "expected a tile no larger"
            )
        idx = (torch.arange(tr)[:, None] * self.cols + torch.arange(tc)[None, :]).reshape(-1)
        if self.kind == "dense":
            c = self.covariance
            return c if tr * tc == self.dim else c[idx][:, idx]
        v = self.eigenvectors
        return v if tr * tc == self.dim else v[idx]

    def _host_factor(self, tr: int, tc: int) -> torch.Tensor:
        """A [tr * tc, m] float64 factor with A A^T = Sigma of a tr x tc tile (or its rank-k part)."""
        key = (tr, tc)
        if key in self._cache:
            return self._cache[key]
        block = self._block(tr, tc)
        k = self.rank
        if self.kind == "dense":
            if k:  # DAT Algorithm 1 lines 2-3: A_k = V_k D_k^(1/2) of the top-k eigenpairs
                vals, vecs = torch.linalg.eigh(block)
                top = torch.argsort(vals, descending=True)[: min(k, vals.numel())]
                a = vecs[:, top] * vals[top].clamp(min=0).sqrt()
            else:
                a, info = torch.linalg.cholesky_ex(block)
                if int(info) != 0:  # PSD but singular: the eigendecomposition factor
                    vals, vecs = torch.linalg.eigh(block)
                    a = vecs * vals.clamp(min=0).sqrt()
        else:
            a = block * self.eigenvalues.sqrt()
            if k and k < a.shape[1]:
                if block.shape[0] < self.dim:  # a sub-block's own top-k directions
                    u, s, _ = torch.linalg.svd(a, full_matrices=False)
                    a = u[:, :k] * s[:k]
                else:
                    a = a[:, :k]
        self._cache[key] = a.contiguous()
        return self._cache[key]

    def factor(self, tr: int, tc: int, device, dtype: torch.dtype) -> torch.Tensor:
        """:meth:`_host_factor` on ``device`` in ``dtype``, converted once and kept."""
        key = (tr, tc, str(device), dtype)
        if key not in self._cache:
            self._cache[key] = self._host_factor(tr, tc).to(device=device, dtype=dtype)
        return self._cache[key]

    # -------------------------------------------------------------- sampling
    def sample(
        self,
        rows: int,
        cols: int,
        n: int,
        tile_rows: int,
        tile_cols: int,
        generator: torch.Generator | None = None,
        device=None,
        dtype: torch.dtype = torch.float32,
        z: torch.Tensor | None = None,
        centered: bool = False,
        transposed: bool = False,
        scale: float = 1.0,
    ) -> torch.Tensor:
        """``n`` fields ``[n, rows, cols]`` (``[n, cols, rows]`` if ``transposed``), each tile independent.

        Same contract as :meth:`KroneckerCovariance.sample`: ``z`` optionally supplies the
        standard normals ``[n, n_tile_rows, n_tile_cols, m]`` (m the factor's columns),
        ``centered`` leaves the mean out and ``scale`` multiplies the fluctuation.
        One batched matmul per call: eps = z A^T for every tile at once.
        """
        tr, tc = min(tile_rows, rows), min(tile_cols, cols)
        nr, nc = math.ceil(rows / tr), math.ceil(cols / tc)
        dev = torch.device(device or "cpu")
        a = self.factor(tr, tc, dev, dtype)
        if z is None:
            z = torch.randn((n, nr, nc, a.shape[1]), generator=generator, device=dev, dtype=dtype)
        if scale != 1.0:
            a = a * scale
        field = torch.matmul(z, a.T).reshape(n, nr, nc, tr, tc)  # [n, tile row, tile col, r, c]
        if transposed:
            field = field.permute(0, 2, 4, 1, 3).reshape(n, nc * tc, nr * tr)[:, :cols, :rows]
        else:
            field = field.permute(0, 1, 3, 2, 4).reshape(n, nr * tr, nc * tc)[:, :rows, :cols]
        mean = 0.0 if centered else self.mean
        return field + mean if mean else field

    def low_rank(self, k: int) -> MeasuredCovariance:
        """The same covariance sampled through its top-k eigenpairs (DAT-Fast)."""
        return replace(self, rank=int(k))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MeasuredCovariance):
            return NotImplemented
        same = (self.kind, self.rows, self.cols, self.mean, self.rank) == (
            other.kind, other.rows, other.cols, other.mean, other.rank
        )
        return same and bool(torch.equal(self.to_dense(), other.to_dense()))

    __hash__ = None  # mutable-looking tensors inside: not hashable


def _as_float64(x, name: str) -> torch.Tensor:
    """A float64 CPU tensor of the numbers ``x`` (a tensor, numpy array or nested list)."""
    try:
        t = torch.as_tensor(x, dtype=torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name}: expected a numeric array") from None
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: expected finite numbers")
    return t
