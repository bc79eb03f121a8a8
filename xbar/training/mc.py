"""k-th percentile performance by weight-space Monte Carlo (TRICE Algorithm 2), for training.

Each instance programs every device-stored weight through its device model
(``DeviceModel.program``: H-bit target plus programming noise, TRICE Eq. 14),
evaluates the accuracy on the given images and restores the clean weights. The
KPP is ``sorted(perf)[floor(q * N)]`` (Alg. 2, line 10). ``xbar.evaluation``
holds the full study engine; TRICE's in-training ranking only needs this.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from xbar.training.params import NoisyParam


def kpp_of(perf: Sequence[float] | torch.Tensor, q: float) -> float:
    """perf_l[floor(q * len(perf_l))] of the ascending list (Alg. 2 lines 9-10), index clamped
    to the list; the order statistic of ``xbar.evaluation.kpp(..., rule="trice")``."""
    p = torch.as_tensor(perf, dtype=torch.float64).flatten().sort().values
    if p.numel() == 0:
        raise ValueError("no Monte Carlo results")
    idx = min(math.floor(q * p.numel() + 1e-9), p.numel() - 1)  # 0.29 * 100 is 28.999...
    return float(p[idx])


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> float:
    """Top-1 accuracy of ``model`` on the tensors ``x``, ``y``."""
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        out = model(x[i : i + batch_size])
        correct += int((out.argmax(1) == y[i : i + batch_size]).sum())
    return correct / max(1, x.shape[0])


@torch.no_grad()
def monte_carlo_accuracy(
    model: nn.Module,
    targets: Sequence[NoisyParam],
    x: torch.Tensor,
    y: torch.Tensor,
    n: int,
    generator: torch.Generator | None = None,
    batch_size: int = 2048,
) -> torch.Tensor:
    """Accuracies ``[n]`` of ``n`` programmed instances of ``model`` (eval mode, weights restored)."""
    was_training = model.training
    model.eval()
    saved = [t.param.detach().clone() for t in targets]
    accs = torch.empty(n, dtype=torch.float64)
    try:
        for i in range(n):
            for t, w in zip(targets, saved):
                if t.device is not None:
                    t.param.data.copy_(t.device.program(w, 1, generator)[0])
            accs[i] = accuracy(model, x, y, batch_size)
    finally:
        for t, w in zip(targets, saved):
            t.param.data.copy_(w)
        model.train(was_training)
    return accs


def kpp(
    model: nn.Module,
    targets: Sequence[NoisyParam],
    x: torch.Tensor,
    y: torch.Tensor,
    n: int,
    q: float = 0.01,
    generator: torch.Generator | None = None,
    batch_size: int = 2048,
) -> float:
    """QuantEval (TRICE Alg. 2): the q-quantile accuracy over ``n`` Monte Carlo instances."""
    return kpp_of(monte_carlo_accuracy(model, targets, x, y, n, generator, batch_size=batch_size), q)
