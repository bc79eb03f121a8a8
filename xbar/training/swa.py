"""Stochastic weight averaging (Izmailov et al.; WVAT Sec. 3 applies it on top of WVAT).

A thin layer over ``torch.optim.swa_utils.AveragedModel``: from epoch
``start`` on, the weights at the end of every epoch are averaged; at the end the
batch-norm statistics of the average are recomputed (``update_bn``). The learning
rate during the averaging phase is ``swa_lr`` (the trainer's schedule sets it,
WVAT Sec. 4.2: 75% of the budget with a decaying rate, then a fixed SWA rate).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from xbar.training.checkpoint import load_tensors, tensor_state


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class SWA:
    """Running average of a model's weights from epoch ``start`` on."""

    def __init__(self, model: nn.Module, start: int, swa_lr: float) -> None:
        self.start = int(start)
        self.swa_lr = float(swa_lr)
        self.averaged = AveragedModel(model)

    @property
    def n_averaged(self) -> int:
        return int(self.averaged.n_averaged)

    def active(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) is in the averaging phase."""
        return epoch >= self.start

    def update(self, model: nn.Module) -> None:
        """Add the current weights of ``model`` to the average."""
        self.averaged.update_parameters(model)

    def finalize(self, batches: Iterable[Any] | None, device: torch.device | str | None = None) -> nn.Module:
        """The averaged model, batch-norm statistics recomputed on ``batches`` if it has any."""
        module = self.averaged.module
        if batches is not None and has_batch_norm(module) and self.n_averaged > 0:
            update_bn(batches, module, device=device)
        return module

    def state_dict(self) -> dict[str, Any]:
        return tensor_state(self.averaged)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_tensors(self.averaged, state)
