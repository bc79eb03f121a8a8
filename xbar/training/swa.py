"""Stochastic weight averaging (Izmailov et al.; WVAT Sec. 3 applies it on top of WVAT).

A thin layer over ``torch.optim.swa_utils.AveragedModel``: from epoch
``start`` on, the weights at the end of every epoch are averaged; at the end the
batch-norm statistics of the average are recomputed (``update_bn``, in the trainer).
The learning rate of the averaging phase is the trainer's schedule
(:class:`xbar.training.trainer.Schedule` with ``swa_lr``, WVAT Sec. 4.2: 75% of the budget
with a decaying rate, then torch's ``SWALR`` at the fixed SWA rate).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim.swa_utils import AveragedModel

from xbar.training.checkpoint import load_tensors, tensor_state


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class SWA:
    """Running average of a model's weights from epoch ``start`` on."""

    def __init__(self, model: nn.Module, start: int) -> None:
        self.start = int(start)
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

    def state_dict(self) -> dict[str, Any]:
        return tensor_state(self.averaged)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_tensors(self.averaged, state)
