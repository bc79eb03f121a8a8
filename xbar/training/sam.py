"""Sharpness-aware minimization (Foret et al., as summarized in WVAT Sec. 2 and DAT Sec. II-C).

With p = 2 the worst-case neighbour within radius rho is

    e(w) = rho * g / ||g||,     g = grad L(w),

and the update uses the gradient there: ``w <- w - lr * grad L(w + e(w))``.
Two forward/backward passes per step; the clean weights are restored exactly
before the wrapped optimizer's update.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from xbar.training.base import Closure, WrappedOptimizer
from xbar.training.config import SAMConfig
from xbar.training.params import NoisyParam, forward_weights, grads


def sam_perturbation(gradients: Sequence[torch.Tensor], rho: float, eps: float = 1e-12) -> list[torch.Tensor]:
    """e = rho g / ||g||_2 over all the given gradients together."""
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in gradients))
    scale = rho / (float(norm) + eps)
    return [g * scale for g in gradients]


class SAM(WrappedOptimizer):
    """SAM step around ``optimizer``.

    Args:
        optimizer: applies the update.
        params: every parameter SAM perturbs (``NoisyParam``s: the device-stored
            weights, whose forward is quantized, plus the others, e.g. biases).
        rho: neighbourhood radius (default 0.05, Foret et al.).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, params: Sequence[NoisyParam], rho: float = SAMConfig.rho) -> None:
        super().__init__(optimizer, None)
        if not rho >= 0:
            raise ValueError(f"rho = {rho}: expected >= 0")
        self.params = list(params)
        self.rho = float(rho)

    def step(self, closure: Closure) -> torch.Tensor:
        with forward_weights(self.params):
            loss = self._eval(closure)
        g = grads(self.params)
        e = sam_perturbation(g, self.rho)
        with forward_weights(self.params, e):
            self._eval(closure)
        self.optimizer.step()
        return loss
