"""Conductance drift and read noise.

Drift is the power law G(t) = G0 ((t + t0) / t0)^-nu with a per-device exponent
nu ~ N(nu_mean(level), nu_std(level)), |nu| as in aihwkit (t counts from the end
of programming, so t = 0 is the programmed state). nu_mean and nu_std are either
per-level tables or aihwkit's PCM fit (Nandakumar et al. 2019, as in
``PCMLikeNoiseModel.generate_drift_coefficients``):
nu_mean = clip(a log(g/g_max) + b, lo, hi), likewise nu_std; or, for analog
storage, tables at given conductances interpolated linearly (aihwkit's
``CustomDriftPCMLikeNoiseModel``, after Li et al., AEM 2023).

Read noise is either Gaussian per level (level units, fresh at every read) or
aihwkit's accumulated 1/f PCM noise
sigma = min(c / max((|g_prog|/g_max)^e, 1e-3), s_max) sqrt(log((t + t_read) / (2 t_read))),
relative to |G(t)|, or the resampling model of ReRAM data (Wan et al., Nature 2022,
as in aihwkit's ``ReRamWan2022NoiseModel``): read t seconds after programming, a
device sits at g_target + sigma_t(g_target) z with a polynomial sigma_t given at
a few times t only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xbar.devices.programming import lookup, polynomial
from xbar.errors import InputError
from xbar.mapping import MappingConfig

if TYPE_CHECKING:  # torch is imported where tensors are made: presets load without it
    import torch


def _table(values: tuple[float, ...], levels: torch.Tensor) -> torch.Tensor:
    import torch

    return lookup(torch.tensor(values, dtype=levels.dtype, device=levels.device), levels)


def _interp(points: tuple[float, ...], values: tuple[float, ...], g: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear ``values`` over ascending ``points`` at ``g``, constant beyond the ends (numpy.interp)."""
    import torch

    x = torch.tensor(points, dtype=g.dtype, device=g.device)
    y = torch.tensor(values, dtype=g.dtype, device=g.device)
    g = g.clamp(min=points[0], max=points[-1])
    i = torch.searchsorted(x, g.contiguous(), right=True).clamp_(1, len(points) - 1)
    x0, y0 = x[i - 1], y[i - 1]
    return y0 + (g - x0) * (y[i] - y0) / (x[i] - x0)


def _log_clip(coeffs: tuple[float, float], clip: tuple[float, float], g_rel: torch.Tensor) -> torch.Tensor:
    import torch

    return (coeffs[0] * torch.log(g_rel) + coeffs[1]).clamp(min=clip[0], max=clip[1])


@dataclass(frozen=True)
class DriftModel:
    """Power-law drift with per-level (or PCM-fit) exponents; see the module docstring."""

    t0_s: float = 20.0
    nu_mean_levels: tuple[float, ...] | None = None
    nu_std_levels: tuple[float, ...] | None = None
    nu_mean_log: tuple[float, float] | None = None
    nu_mean_clip: tuple[float, float] = (0.0, 1.0)
    nu_std_log: tuple[float, float] | None = None
    nu_std_clip: tuple[float, float] = (0.0, 1.0)
    compensation: str = "global"
    scale: float = 1.0
    nu_points_uS: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.t0_s > 0:
            raise ValueError(f"t0_s = {self.t0_s}: expected > 0 seconds")
        pts = self.nu_points_uS
        if pts is not None:
            if len(pts) < 2 or any(not 0 <= a < b for a, b in zip(pts, pts[1:])) or pts[0] < 0:
                raise ValueError(f"nu_points_uS = {list(pts)}: expected at least 2 ascending conductances >= 0")
            for name in ("nu_mean_levels", "nu_std_levels"):
                v = getattr(self, name)
                if v is not None and len(v) != len(pts):
                    raise ValueError(f"{name} = {list(v)} has {len(v)} entries: expected {len(pts)} (one per nu_points_uS)")
        if self.compensation not in ("global", "none"):
            raise ValueError(f"compensation = {self.compensation!r}: expected 'global' or 'none'")
        if (self.nu_mean_levels is None) == (self.nu_mean_log is None):
            raise ValueError("drift needs exactly one of nu_mean_levels or nu_mean_log")
        for name in ("nu_std_levels", "nu_mean_levels"):
            v = getattr(self, name)
            if v is not None and name == "nu_std_levels" and any(not s >= 0 for s in v):
                raise ValueError(f"{name} = {list(v)}: expected all >= 0")
        for name in ("nu_mean_log", "nu_std_log", "nu_mean_clip", "nu_std_clip"):
            v = getattr(self, name)
            if v is not None and len(v) != 2:
                raise ValueError(f"{name} = {list(v)}: expected 2 numbers ({'lo, hi' if 'clip' in name else 'a, b'})")
        if self.nu_std_levels is not None and self.nu_mean_levels is None:
            raise ValueError("nu_std_levels: per-level stds need per-level means (nu_mean_levels), not nu_mean_log")
        if self.nu_std_log is not None and self.nu_mean_log is None:
            raise ValueError("nu_std_log: the log fit of the std needs the log fit of the mean (nu_mean_log)")
        for name in ("nu_mean_clip", "nu_std_clip"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name} = [{lo}, {hi}]: expected lo <= hi")

    def check(self, cfg: MappingConfig) -> None:
        if self.nu_points_uS is not None:
            if not cfg.analog:
                raise ValueError("nu_points_uS: conductance points need analog storage (weight_bits = 0)")
            return
        for name in ("nu_mean_levels", "nu_std_levels"):
            v = getattr(self, name)
            if v is None:
                continue
            if cfg.analog:
                raise ValueError(f"{name}: per-level tables need discrete levels, but weight_bits = 0 (analog)")
            if len(v) != cfg.levels:
                raise ValueError(f"{name} = {list(v)} has {len(v)} entries: expected {cfg.levels} (2^bits_per_device)")

    def nu_params(self, levels: torch.Tensor, cfg: MappingConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """(nu_mean, nu_std) of each device given its target level."""
        import torch

        if self.nu_points_uS is not None:
            mean = _interp(self.nu_points_uS, self.nu_mean_levels, levels)
            std = _interp(self.nu_points_uS, self.nu_std_levels, levels) if self.nu_std_levels else torch.zeros_like(levels)
            return mean, std
        if self.nu_mean_levels is not None:
            mean = _table(self.nu_mean_levels, levels)
            std = _table(self.nu_std_levels, levels) if self.nu_std_levels else torch.zeros_like(levels)
            return mean, std
        g_rel = (levels / cfg.level_max).abs().clamp(min=1e-6)
        mean = _log_clip(self.nu_mean_log, self.nu_mean_clip, g_rel)
        std = _log_clip(self.nu_std_log, self.nu_std_clip, g_rel) if self.nu_std_log else torch.zeros_like(levels)
        return mean, std

    def sample_nu(self, levels: torch.Tensor, cfg: MappingConfig, z: torch.Tensor) -> torch.Tensor:
        """nu = |mean + std z| (aihwkit convention), scaled by ``scale``; ``z`` standard normals."""
        mean, std = self.nu_params(levels, cfg)
        return (mean + std * z).abs() * self.scale

    def factor(self, nu: torch.Tensor, t: float) -> torch.Tensor:
        """((t + t0) / t0)^-nu: the multiplicative drift after ``t`` seconds."""
        import torch

        if t <= 0:
            return torch.ones_like(nu)
        return torch.pow(torch.as_tensor((t + self.t0_s) / self.t0_s, dtype=nu.dtype), -nu)


@dataclass(frozen=True)
class ReadNoise:
    """Read noise: ``kind = "gaussian"`` (per-level sigma), ``"pcm-1f"`` (aihwkit's PCM model)
    or ``"resampled-poly"`` (aihwkit's ReRAM model: ``sigma_poly_uS`` holds one polynomial in
    g/g_max per entry of ``times_s``, concatenated, in uS at ``poly_reference_uS``)."""

    kind: str = "gaussian"
    sigma_levels: tuple[float, ...] | None = None
    coeff: float = 0.0088
    exponent: float = 0.65
    max: float = 0.2
    t_read_s: float = 250e-9
    t0_s: float = 20.0
    scale: float = 1.0
    times_s: tuple[float, ...] | None = None
    sigma_poly_uS: tuple[float, ...] | None = None
    poly_reference_uS: float = 25.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind = {self.kind!r}: expected one of {', '.join(KINDS)}")
        if (self.kind == "resampled-poly") != (self.times_s is not None and self.sigma_poly_uS is not None):
            raise ValueError("times_s and sigma_poly_uS: expected both with kind = 'resampled-poly' and neither otherwise")
        if self.times_s is not None:
            if not self.times_s or any(not 0 < a < b for a, b in zip(self.times_s, self.times_s[1:])) or self.times_s[0] <= 0:
                raise ValueError(f"times_s = {list(self.times_s)}: expected ascending times > 0 seconds")
            if len(self.sigma_poly_uS) % len(self.times_s):
                raise ValueError(
                    f"sigma_poly_uS has {len(self.sigma_poly_uS)} entries: expected the same number of "
                    f"coefficients for each of the {len(self.times_s)} times_s"
                )
        if not self.poly_reference_uS > 0:
            raise ValueError(f"poly_reference_uS = {self.poly_reference_uS}: expected > 0")
        if self.kind == "gaussian" and self.sigma_levels is None:
            raise ValueError("gaussian read noise needs sigma_levels")
        if self.sigma_levels is not None and any(not s >= 0 for s in self.sigma_levels):
            raise ValueError(f"sigma_levels = {list(self.sigma_levels)}: expected all >= 0")
        if not self.t_read_s > 0:
            raise ValueError(f"t_read_s = {self.t_read_s}: expected > 0 seconds")

    def check(self, cfg: MappingConfig) -> None:
        if self.kind == "resampled-poly" and not cfg.analog:
            raise ValueError("kind = 'resampled-poly' needs analog storage (weight_bits = 0)")
        if self.sigma_levels is None:
            return
        n = 1 if cfg.analog else cfg.levels
        if len(self.sigma_levels) != n:
            raise ValueError(
                f"sigma_levels = {list(self.sigma_levels)} has {len(self.sigma_levels)} entries: expected {n}"
                + (" (one sigma for analog storage)" if cfg.analog else " (2^bits_per_device)")
            )

    def sigma(
        self, target: torch.Tensor, programmed: torch.Tensor, drifted: torch.Tensor, t: float, cfg: MappingConfig
    ) -> torch.Tensor:
        """Absolute read-noise sigma (level units) of each device read at time ``t``.

        For ``resampled-poly`` the sigma around the *target* at time ``t`` (see :meth:`resample`)."""
        import torch

        if self.kind == "resampled-poly":
            coeffs = self.polynomial_at(t)
            sig = polynomial(coeffs, target / cfg.level_max)
            return sig * (cfg.level_max / self.poly_reference_uS) * self.scale
        if self.kind == "gaussian":
            if cfg.analog:
                return torch.full_like(target, self.sigma_levels[0] * self.scale)
            return _table(self.sigma_levels, target) * self.scale
        tt = t + self.t0_s
        q = (self.coeff / ((programmed.abs() / cfg.level_max) ** self.exponent).clamp(min=1e-3)).clamp(max=self.max)
        return q * math.sqrt(math.log((tt + self.t_read_s) / (2 * self.t_read_s))) * self.scale * drifted.abs()

    @property
    def resamples(self) -> bool:
        """Whether a read replaces the programmed state by a fresh draw around the target (Wan et al. 2022)."""
        return self.kind == "resampled-poly"

    def polynomials(self) -> list[tuple[float, ...]]:
        """The ``resampled-poly`` coefficients, one tuple per entry of ``times_s``."""
        k = len(self.sigma_poly_uS) // len(self.times_s)
        return [tuple(self.sigma_poly_uS[i * k : (i + 1) * k]) for i in range(len(self.times_s))]

    def polynomial_at(self, t: float) -> tuple[float, ...]:
        """The polynomial of read time ``t``, which must be one of ``times_s`` (the data have no other times)."""
        for ti, coeffs in zip(self.times_s, self.polynomials()):
            if math.isclose(t, ti, rel_tol=1e-9):
                return coeffs
        raise InputError(
            f"[read_noise] kind = 'resampled-poly': read at t = {t:g} s, but the polynomials are given at "
            f"t = {', '.join(f'{x:g}' for x in self.times_s)} s only"
        )


KINDS = ("gaussian", "pcm-1f", "resampled-poly")
