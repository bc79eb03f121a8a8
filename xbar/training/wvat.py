"""Weight Variation-Aware Training (WVAT, Sec. 3): HSV, GAV, per-batch mix, weight reverse.

- Hardware-simulated variation (HSV): per layer, with the layer range
  A = [mu - 3 std, mu + 3 std] of its weights (width 6 std),
  ``dw = gamma * N(0, (sigma_v A)^2)``: sigma_v = 10% moves a weight by 10% of A.
- Gradient-ascent variation (GAV): ``v(w) = grad L(w) / ||grad L(w)|| * ||dw||``
  with ||dw|| the magnitude of HSV (its RMS norm, sqrt(sum_l n_l (gamma sigma_v A_l)^2)),
  taken with the step length alpha: ``w_v = alpha v(w)``.
- Per batch, x ~ U(0, 1): HSV if x < w_th, GAV if x >= w_th (Sec. 3; the
  paper's experiments section states the opposite reading, which w_th = 0.5,
  the default, does not distinguish). A batch is perturbed at all with
  probability ``p`` (default 1); otherwise the step is plain SGD.
- Update: w <- w + w_v; w <- w - eta grad L(w + w_v); w <- w - w_v (reverse).
  The reverse restores the saved clean weights exactly and comes before the
  wrapped optimizer's update, which then applies eta grad L(w + w_v) to them:
  identical for SGD, and the tiles' clipping sees the clean weights.
- SWA on top (``xbar.training.swa``) is the trainer's job (``swa=True``).

The range A and the HSV std are defined once, in :mod:`xbar.devices.variation`, which
also makes them a device model (the ``[weight_variation]`` preset section).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from xbar.devices.variation import hsv_sigma, layer_range
from xbar.training.base import Closure, WrappedOptimizer
from xbar.training.config import WVATConfig
from xbar.training.params import NoisyParam, forward_weights, grads


class WVAT(WrappedOptimizer):
    """WVAT step around ``optimizer``.

    Args:
        optimizer: applies the update.
        targets: the device-stored weights perturbed by HSV/GAV.
        sigma_v: variation relative to the layer range A (default 0.1, the paper's training value).
        gamma: range coefficient (default 1).
        w_th: threshold of the per-batch choice (default 0.5).
        alpha: GAV step length (default 0.1).
        p: probability that a batch is perturbed at all (default 1).
        others: parameters that are not perturbed (their forward is still quantized if stored).
        generator: draws x, the HSV noise and the perturb/no-perturb coin.
        choice_generator: draws x and the coin instead, if given (on several processes it is
            shared by all ranks, so they all take the same branch; ``generator`` keeps the
            per-rank HSV noise, see ``xbar.training.distributed``).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        targets: Sequence[NoisyParam],
        sigma_v: float = WVATConfig.sigma_v,
        gamma: float = WVATConfig.gamma,
        w_th: float = WVATConfig.w_th,
        alpha: float = WVATConfig.alpha,
        p: float = WVATConfig.p,
        others: Sequence[NoisyParam] = (),
        generator: torch.Generator | None = None,
        choice_generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(optimizer, generator)
        self.choice_generator = choice_generator
        for name, v in (("w_th", w_th), ("p", p)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} = {v}: expected a probability in [0, 1]")
        if not sigma_v >= 0 or not alpha >= 0:
            raise ValueError("sigma_v and alpha must be >= 0")
        self.targets = list(targets)
        self.others = [o for o in others if all(o.param is not t.param for t in self.targets)]
        self.sigma_v = float(sigma_v)
        self.gamma = float(gamma)
        self.w_th = float(w_th)
        self.alpha = float(alpha)
        self.p = float(p)
        self.last_kind = "none"
        self.last_variation: list[torch.Tensor] = []

    def _uniform(self) -> float:
        g = self.choice_generator if self.choice_generator is not None else self.generator
        dev = g.device if g is not None else torch.device("cpu")
        return float(torch.rand((), generator=g, device=dev))

    def hsv(self) -> list[torch.Tensor]:
        """One draw of the hardware-simulated variation per target."""
        out = []
        for t in self.targets:
            w = t.param.detach()
            s = hsv_sigma(w, self.sigma_v, self.gamma)
            out.append(s * torch.randn(w.shape, generator=self.generator, device=w.device, dtype=w.dtype))
        return out

    def hsv_norm(self) -> float:
        """RMS norm of HSV over all targets: sqrt(sum_l n_l sigma_l^2)."""
        return sum(t.param.numel() * hsv_sigma(t.param, self.sigma_v, self.gamma) ** 2 for t in self.targets) ** 0.5

    def gav(self, gradients: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """alpha * v(w) = alpha * g / ||g|| * ||dw|| (gradient-ascent variation)."""
        norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in gradients)))
        scale = self.alpha * self.hsv_norm() / (norm + 1e-12)
        return [g * scale for g in gradients]

    def step(self, closure: Closure) -> torch.Tensor:
        everything = self.targets + self.others
        coin, x = self._uniform(), self._uniform()
        if coin >= self.p:
            self.last_kind, self.last_variation = "none", []
            with forward_weights(everything):
                loss = self._eval(closure)
            self.optimizer.step()
            return loss
        if x < self.w_th:
            self.last_kind = "hsv"
            wv = self.hsv()
        else:
            self.last_kind = "gav"
            with forward_weights(everything):
                self._eval(closure)
            g = grads(self.targets)
            wv = self.gav(g)
        self.last_variation = wv
        with forward_weights(everything, wv + [None] * len(self.others)):  # w <- w + w_v
            loss = self._eval(closure)
        # leaving the block is the weight reverse (exact restore); then w <- w - eta grad L(w + w_v)
        self.optimizer.step()
        return loss


__all__ = ["WVAT", "hsv_sigma", "layer_range"]
