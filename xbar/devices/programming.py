"""Independent Gaussian programming noise of one device population.

TRICE IV-A: each device lands at g + dg with dg ~ N(0, sigma_d) in level units
(uniform RRAM). TRICE Eq. 15: sigma depends on the programmed level, and Eq. 16-17
give the FeFET1 / FeFET2 profiles {sigma_d, k sigma_d, k sigma_d, sigma_d}.
For analog storage, aihwkit's PCM polynomial sigma(g) = sum_i c_i (g/g_max)^i (uS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from xbar.mapping import MappingConfig

if TYPE_CHECKING:  # torch is imported where tensors are made: presets load without it
    import torch


@dataclass(frozen=True)
class ProgrammingNoise:
    """Gaussian programming noise, level units (conductance uS for analog storage).

    Attributes:
        sigma_d: base sigma (TRICE sigma_d).
        level_multipliers: sigma of level h is sigma_d * level_multipliers[h] (Eq. 15);
            None means every level has sigma_d (uniform RRAM, TRICE IV-A).
        mean_levels: systematic offset of each level (fitted devices); None = 0.
        sigma_poly_uS: analog storage only; aihwkit PCMLikeNoiseModel's programming
            polynomial coefficients c_i (uS), evaluated at g/g_max and scaled by
            g_max / poly_reference_uS. Replaces sigma_d.
        poly_reference_uS: the g_max the polynomial was fitted at (aihwkit: 25 uS).
        scale: multiplies every sigma (aihwkit's prog_noise_scale).
    """

    sigma_d: float = 0.0
    level_multipliers: tuple[float, ...] | None = None
    mean_levels: tuple[float, ...] | None = None
    sigma_poly_uS: tuple[float, ...] | None = None
    poly_reference_uS: float = 25.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.sigma_d >= 0:
            raise ValueError(f"sigma_d = {self.sigma_d}: expected >= 0")
        if self.level_multipliers is not None and any(not m >= 0 for m in self.level_multipliers):
            raise ValueError(f"level_multipliers = {list(self.level_multipliers)}: expected all >= 0")
        if not self.scale >= 0:
            raise ValueError(f"scale = {self.scale}: expected >= 0")
        if not self.poly_reference_uS > 0:
            raise ValueError(f"poly_reference_uS = {self.poly_reference_uS}: expected > 0")

    def check(self, cfg: MappingConfig) -> None:
        """Check that the per-level tables match the number of levels of ``cfg``."""
        for field in ("level_multipliers", "mean_levels"):
            table = getattr(self, field)
            if table is None:
                continue
            if cfg.analog:
                raise ValueError(f"{field}: per-level tables need discrete levels, but weight_bits = 0 (analog)")
            if len(table) != cfg.levels:
                raise ValueError(
                    f"{field} = {list(table)} has {len(table)} entries: expected {cfg.levels} "
                    f"(2^bits_per_device, bits_per_device = {cfg.bits_per_device})"
                )
        if self.sigma_poly_uS is not None and not cfg.analog:
            raise ValueError("sigma_poly_uS applies to analog storage only (weight_bits = 0)")

    @property
    def is_zero(self) -> bool:
        if self.scale == 0:
            return True
        if self.sigma_poly_uS is not None:
            return all(c == 0 for c in self.sigma_poly_uS)
        mult = self.level_multipliers or (1.0,)
        return self.sigma_d == 0 or all(m == 0 for m in mult)

    @property
    def has_offsets(self) -> bool:
        """Whether some level has a systematic offset (``mean_levels``)."""
        return self.mean_levels is not None and any(self.mean_levels)

    def sigma(self, levels: torch.Tensor, cfg: MappingConfig) -> torch.Tensor:
        """Sigma of each device given its target level (same shape as ``levels``)."""
        import torch

        if self.sigma_poly_uS is not None:
            sig = polynomial(self.sigma_poly_uS, levels / cfg.conductance_max_uS)
            return sig * (cfg.conductance_max_uS / self.poly_reference_uS) * self.scale
        if self.level_multipliers is None:
            return torch.full_like(levels, self.sigma_d * self.scale)
        table = torch.tensor(self.level_multipliers, dtype=levels.dtype, device=levels.device)
        return lookup(table, levels) * (self.sigma_d * self.scale)

    def mean(self, levels: torch.Tensor) -> torch.Tensor | None:
        import torch

        if not self.has_offsets:
            return None
        table = torch.tensor(self.mean_levels, dtype=levels.dtype, device=levels.device)
        return lookup(table, levels)


def polynomial(coeffs: tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    """sum_i c_i x^i (aihwkit's noise polynomials in g/g_max)."""
    import torch

    out = torch.zeros_like(x) + coeffs[0]
    power = torch.ones_like(x)
    for c in coeffs[1:]:
        power = power * x
        out = out + c * power
    return out


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for an integer-valued (float or int) ``index``; index_select is the fast gather."""
    idx = index.long()
    return table.index_select(0, idx.reshape(-1)).reshape(*idx.shape, *table.shape[1:])


def fefet_profile(sigma_d: float, middle: float) -> ProgrammingNoise:
    """TRICE Eq. 16-17: {sigma_d, m sigma_d, m sigma_d, sigma_d} (m = 4: FeFET1, m = 2: FeFET2)."""
    return ProgrammingNoise(sigma_d=sigma_d, level_multipliers=(1.0, middle, middle, 1.0))
