"""Noise families for injection training (TRICE Eq. 10, Fig. 3).

Each family is a transform of a standard normal g ~ N(0, 1) with a threshold th
in units of sigma; multiply by sigma_t for the injected noise:

- gaussian:         g
- right-censored:   min(g, th)                 (RC-Gaussian, Eq. 10)
- left-censored:    max(g, -th)
- right-truncated:  g conditioned on g < th    (no mass above th)
- left-truncated:   g conditioned on g > -th
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are made: presets load without it
    import torch


FAMILIES = ("gaussian", "right-censored", "left-censored", "right-truncated", "left-truncated")


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _Phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@dataclass(frozen=True)
class NoiseFamily:
    """A unit-scale noise family with threshold ``threshold`` (th, in sigmas)."""

    kind: str = "gaussian"
    threshold: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in FAMILIES:
            raise ValueError(f"family = {self.kind!r}: expected one of {', '.join(FAMILIES)}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold = {self.threshold}: expected a finite number")
        if self.kind.endswith("truncated") and _Phi(self.threshold) < 1e-6:
            raise ValueError(f"threshold = {self.threshold}: a truncated family needs threshold > -4.7")

    @property
    def is_gaussian(self) -> bool:
        return self.kind == "gaussian"

    def sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Draw unit-scale samples of this family (``dtype`` None: float32)."""
        import torch

        dtype = torch.float32 if dtype is None else dtype

        th = self.threshold
        if self.kind.endswith("truncated"):
            # Inverse-CDF sampling of the truncated normal: u ~ U(lo, hi), g = Phi^-1(u).
            u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
            if self.kind == "right-truncated":
                u = u * _Phi(th)
            else:
                lo = _Phi(-th)
                u = lo + u * (1.0 - lo)
            u = u.clamp(1e-300, 1 - 1e-16)
            return torch.special.ndtri(u).to(dtype)
        return self.sample_(torch.empty(shape, device=device, dtype=dtype), generator)

    def mean(self) -> float:
        """E[x] in closed form (negative for right-censored: TRICE's requirement E[dw] != 0)."""
        th = self.threshold
        if self.kind == "gaussian":
            return 0.0
        if self.kind == "right-censored":
            return -_phi(th) + th * (1 - _Phi(th))
        if self.kind == "left-censored":
            return _phi(th) - th * (1 - _Phi(th))
        if self.kind == "right-truncated":
            return -_phi(th) / _Phi(th)
        return _phi(th) / _Phi(th)

    def second_moment(self) -> float:
        """E[x^2] in closed form."""
        th = self.threshold
        if self.kind == "gaussian":
            return 1.0
        if self.kind in ("right-censored", "left-censored"):
            # E[g^2; g < th] + th^2 P(g >= th), symmetric for the left-censored case.
            return (_Phi(th) - th * _phi(th)) + th * th * (1 - _Phi(th))
        # truncated: Var = 1 - th phi/Phi - (phi/Phi)^2 for the right side, mean^2 added back
        return 1.0 - th * _phi(th) / _Phi(th)

    def sample_(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fill ``out`` with unit-scale samples of this family in place (no temporaries for the
        Gaussian and censored families); returns ``out``."""
        if self.kind.endswith("truncated"):
            return out.copy_(self.sample(out.shape, generator, out.device, out.dtype))
        out.normal_(generator=generator)
        if self.kind == "right-censored":
            out.clamp_(max=self.threshold)
        elif self.kind == "left-censored":
            out.clamp_(min=-self.threshold)
        return out

    def cdf(self, x: float) -> float:
        """CDF of the unit-scale family (for tests and plots)."""
        th = self.threshold
        if self.kind == "gaussian":
            return _Phi(x)
        if self.kind == "right-censored":
            return 1.0 if x >= th else _Phi(x)
        if self.kind == "left-censored":
            return 0.0 if x < -th else _Phi(x)
        if self.kind == "right-truncated":
            return 1.0 if x >= th else _Phi(x) / _Phi(th)
        if x <= -th:
            return 0.0
        return (_Phi(x) - _Phi(-th)) / (1 - _Phi(-th))
