"""A plain evaluation loop: logits and top-1 accuracy of a model on a dataset.

Deterministic (eval mode, fixed batch order, no shuffling), so the same weights
give the same logits bit for bit; that is what makes a replayed session comparable
with the recorded one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


@dataclass(frozen=True)
class Evaluation:
    """Top-1 ``accuracy`` in [0, 1] and the ``logits [n, classes]`` it came from (CPU)."""

    accuracy: float
    logits: torch.Tensor


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | tuple[torch.Tensor, torch.Tensor],
    batch_size: int = 500,
    device: torch.device | str | None = None,
) -> Evaluation:
    """Logits and accuracy of ``model`` on ``data`` (a dataset of (x, label) or a pair of tensors)."""
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    if isinstance(data, tuple):
        batches = [(data[0][i : i + batch_size], data[1][i : i + batch_size]) for i in range(0, len(data[0]), batch_size)]
    else:
        batches = DataLoader(data, batch_size=batch_size, shuffle=False)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for x, y in batches:
            logits.append(model(x.to(device)).float().cpu())
            labels.append(torch.as_tensor(y))
    finally:
        model.train(was_training)
    out = torch.cat(logits)
    y = torch.cat(labels)
    acc = float((out.argmax(1) == y).float().mean()) if len(y) else float("nan")
    return Evaluation(acc, out)
