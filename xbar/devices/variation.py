"""Weight variation relative to each layer's weight range (WVAT, Sec. 3, Eq. 1).

WVAT's hardware-simulated variation: per layer, with the range
A = [mu - 3 std, mu + 3 std] of its weights (width 6 std), every weight moves by
``dw ~ gamma * N(0, (sigma_v A)^2)``: sigma_v = 10% moves a weight by 10% of A.
As a device model (:class:`RangeVariation`, the ``[weight_variation]`` section of a
preset) the same definition drives ``xbar eval``'s Monte Carlo, so the accuracy under
WVAT Tables 1-2's sigma_v = 5% / 10% is measured by the device model instead of a
hand-written perturbation. :func:`layer_range` and :func:`hsv_sigma` are the one
definition; ``xbar.training.wvat`` trains with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are made: presets load without it
    import torch


def layer_range(w: torch.Tensor) -> float:
    """Width of A = [mu - 3 std, mu + 3 std] of a layer's weights: 6 std (population std)."""
    return 6.0 * float(w.detach().float().std(unbiased=False))


def hsv_sigma(w: torch.Tensor, sigma_v: float, gamma: float) -> float:
    """Std of the hardware-simulated variation of one layer: gamma * sigma_v * A (WVAT Eq. 1)."""
    return gamma * sigma_v * layer_range(w)


@dataclass(frozen=True)
class RangeVariation:
    """Independent Gaussian weight variation with std gamma * sigma_v * A per layer (weight units).

    Args:
        sigma_v: the variation as a fraction of the layer's weight range A (WVAT's sigma_v;
            0.05 is 5 %).
        gamma: WVAT's range coefficient (1 in the paper's experiments).
    """

    sigma_v: float
    gamma: float = 1.0

    def __post_init__(self) -> None:
        for name in ("sigma_v", "gamma"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} = {v}: expected a finite number >= 0")

    @property
    def is_zero(self) -> bool:
        return self.sigma_v * self.gamma == 0

    def std(self, weights: torch.Tensor) -> float:
        """Per-weight std of a layer whose (target) weights are ``weights``, weight units."""
        return hsv_sigma(weights, self.sigma_v, self.gamma)

    def check(self, mapping) -> None:
        """Nothing depends on the mapping (the variation is in weight units)."""
