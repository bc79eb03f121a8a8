"""Noise-injection training (TRICE Algorithm 1) with any device model and injection family.

Each step samples dW from the device model (``DeviceModel.inject_noise``: the
preset's per-level sigma times a unit draw of the family, e.g. the right-censored
Gaussian of TRICE Eq. 10, plus the correlated component), runs the forward and
backward on ``target(w) + dW`` and updates the clean weights with that gradient:

    w <- w - lr * dL/d(w + dW)                       (Alg. 1, line 6)

For a converted (aihwkit) model the tiles inject the noise themselves
(``xbar.tiles.set_injection``); the update goes through ``AnalogSGD``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from xbar.devices import NoiseFamily
from xbar.training.base import Closure, WrappedOptimizer
from xbar.training.config import NoiseConfig
from xbar.training.params import NoisyParam, forward_weights


def sample_injection(
    targets: Sequence[NoisyParam],
    family: NoiseFamily | None,
    sigma_scale: float,
    generator: torch.Generator | None,
) -> list[torch.Tensor | None]:
    """One draw of the injected weight noise for each target (None where it is zero)."""
    out: list[torch.Tensor | None] = []
    for t in targets:
        if t.device is None or sigma_scale == 0:
            out.append(None)
        else:
            out.append(t.device.inject_noise(t.param.detach(), family, sigma_scale, generator))
    return out


class NoiseInjection(WrappedOptimizer):
    """Noise-injection training step (TRICE Alg. 1).

    Args:
        optimizer: applies the update (SGD, or AnalogSGD for a converted model).
        targets: the device-stored weights (``xbar.training.noisy_parameters``).
        family: injection family (default: each device model's preset family);
            TRICE uses ``NoiseFamily("right-censored", th)``.
        sigma_scale: sigma_t / sigma_d (TRICE's sigma_t in units of the device sigma).
        generator: draws the noise (plain models).
        model: the model; needed only for a converted model, whose tiles inject.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        targets: Sequence[NoisyParam],
        family: NoiseFamily | None = None,
        sigma_scale: float = NoiseConfig.sigma_scale,
        generator: torch.Generator | None = None,
        model: nn.Module | None = None,
    ) -> None:
        super().__init__(optimizer, generator)
        self.targets = list(targets)
        self.family = family
        self.sigma_scale = float(sigma_scale)
        self.model = model
        self.analog = any(t.tile is not None for t in self.targets)

    def _set_tiles(self) -> None:
        from xbar import tiles
        from xbar.tiles.simulator import Injection

        on = self.sigma_scale > 0
        if self.model is not None:
            tiles.set_injection(self.model, enabled=on, family=self.family, sigma_scale=self.sigma_scale)
        for t in self.targets:
            if t.tile is not None and self.model is None:
                t.tile.injection = Injection(enabled=on, family=self.family, sigma_scale=self.sigma_scale)

    def step(self, closure: Closure) -> torch.Tensor:
        if self.analog:
            self._set_tiles()  # the tiles add the noise after their own quantization, from the global RNG
            loss = self._eval(closure)
        else:
            deltas = sample_injection(self.targets, self.family, self.sigma_scale, self.generator)
            with forward_weights(self.targets, deltas):
                loss = self._eval(closure)
        self.optimizer.step()
        return loss

    def extra_state(self) -> dict:
        return {"sigma_scale": self.sigma_scale}

    def load_extra_state(self, state: dict) -> None:
        self.sigma_scale = float(state.get("sigma_scale", self.sigma_scale))
