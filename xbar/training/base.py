"""Shared plumbing of the training algorithms: the wrapped optimizer and its state.

Every algorithm wraps an ordinary optimizer that applies the final update:
``torch.optim.SGD`` for a plain model, aihwkit's ``AnalogSGD`` for a converted
model (so that the tiles' post-update hooks, e.g. weight clipping, still run).
The wrapper is itself a ``torch.optim.Optimizer`` whose param groups are the
inner optimizer's, so torch's learning-rate schedulers drive it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from xbar.training.params import is_analog

Closure = Callable[[], torch.Tensor]


def make_optimizer(
    model: nn.Module, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """SGD for a plain model; ``aihwkit.optim.AnalogSGD`` (param groups regrouped) for an analog one.

    ``AnalogSGD.step`` hands each group's current ``lr`` to its tile before the tile's
    update, so a scheduler that changes ``param_groups`` reaches the tiles too.
    """
    if is_analog(model):
        from aihwkit.optim import AnalogSGD

        opt = AnalogSGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        opt.regroup_param_groups(model)
        return opt
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


class WrappedOptimizer(torch.optim.Optimizer):
    """An algorithm step around ``optimizer``, itself a ``torch.optim.Optimizer``.

    ``param_groups`` and ``state`` are the inner optimizer's own objects (also after its
    ``load_state_dict``, which replaces them), so an LR scheduler on the wrapper
    (``CosineAnnealingLR``, ``StepLR``, ``SWALR``) sets the rate the inner update uses.
    ``step(closure)``: the closure computes the loss and calls ``backward()``; the
    wrapper zeroes the gradients before each call, so it may be called several times
    per step. ``generator`` draws every random number of the algorithm; its state is
    part of :meth:`state_dict`, so a resumed run draws the same noise.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, generator: torch.Generator | None = None) -> None:
        # torch's own set-up (step hooks, defaults, parameter checks) on copies of the groups;
        # then the groups and state become the inner optimizer's
        super().__init__([dict(g) for g in optimizer.param_groups], optimizer.defaults)
        self.optimizer = optimizer
        self.generator = generator
        self._share()
        optimizer.register_load_state_dict_post_hook(lambda _: self._share())

    def _share(self) -> None:
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def _eval(self, closure: Closure) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            return closure()

    def extra_state(self) -> dict[str, Any]:
        """Algorithm-specific state (tensors and plain numbers only)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state (its groups hold the scheduled ``lr``), the generator's
        and the algorithm's: tensors and plain values, loadable with ``weights_only=True``."""
        out: dict[str, Any] = {"optimizer": self.optimizer.state_dict()}
        if self.generator is not None:
            out["generator"] = self.generator.get_state()
        out["extra"] = self.extra_state()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])
        self.load_extra_state(state.get("extra", {}))

    def step(self, closure: Closure) -> torch.Tensor:  # type: ignore[override]  # pragma: no cover - abstract
        raise NotImplementedError
