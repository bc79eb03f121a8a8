"""Stacked-weight forward: ``k`` Monte Carlo instances of one network in a single pass.

The instances are folded into the batch dimension, instance-major: an activation of
``k`` instances on a data batch of ``B`` images is one tensor ``[k * B, ...]`` whose
rows ``i*B .. i*B + B - 1`` belong to instance ``i``. Every batch-agnostic operation
of the network (ReLU, pooling, flatten, residual additions, eval-mode batch norm)
then runs unchanged on all instances at once; only the stacked layers, whose
parameters differ between instances, know about ``k``:

* ``Linear``: ``torch.baddbmm`` over ``[k, B, in] x [k, in, out]``.
* ``Conv1d/2d/3d``: ``"loop"`` (one convolution per instance on its contiguous rows,
  then one concatenation; a layer whose input is still shared runs one convolution
  with the k instances' filters side by side, so the input is unfolded once) or ``"grouped"`` (the instances become groups of one grouped
  convolution over ``[B, k * C, ...]``, as ``torch.func.vmap`` over the weight would
  do). Measured here on 2 CPU cores (LeNet, batch 250) the grouped NCHW convolution
  was 2-5x slower per instance than a plain one while the loop costs the same as a
  plain convolution, so ``"auto"`` means ``"loop"`` on CPU and ``"grouped"`` on CUDA
  (cuDNN runs grouped convolutions efficiently). On CPU ``"loop"`` also makes every
  instance's arithmetic independent of ``k``, so results are bit-identical for any
  ``batch_instances``. On CUDA only the random draws are: cuDNN/cuBLAS choose kernels
  (and TF32 convolutions by default) by shape, which depends on ``k``, so metrics agree
  to rounding only (docs/studies.md, "Independence of batching").
* ``BatchNorm1d/2d/3d`` (eval mode): per-instance scale and shift ``[k, C]``.

The private copy gets the exact rewrites of :mod:`xbar.evaluation.rewrites`: on CPU,
``MaxPool2d`` with kernel == stride (2 to 4) and no padding becomes a max over strided
slices (about 10x faster there), and a ReLU (with its activation quantization) that
precedes such a pool runs after it, on a quarter of the elements.

Until the first stacked layer the activations are the same for every instance and
stay ``[B, ...]`` (shared); a stacked layer accepts either form and always returns
the folded ``[k * B, ...]``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from xbar.evaluation.rewrites import pool_before_relu, set_submodule, swap_pools

__all__ = [
    "STACKABLE",
    "StackedModel",
    "as_batches",
    "default_layers",
    "evaluate",
]

#: Module types that can hold per-instance parameters.
STACKABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass
class _Context:
    """Shared by the stacked layers of one model: instances and images of the current pass."""

    k: int = 1
    batch: int = 0

    def shared(self, x: torch.Tensor) -> bool:
        """True when ``x`` is still the same for every instance (``[B, ...]``)."""
        if x.shape[0] == self.k * self.batch:
            return False
        if x.shape[0] == self.batch:
            return True
        raise RuntimeError(
            f"stacked forward: a layer got {x.shape[0]} rows, expected {self.batch} (shared) "
            f"or {self.k} x {self.batch} (instances folded into the batch)"
        )


class _Stacked(nn.Module):
    """Base of the stacked layers: ``stacks`` maps a parameter name to a ``[k, *shape]`` tensor."""

    def __init__(self, base: nn.Module, ctx: _Context) -> None:
        super().__init__()
        self.base = base
        self.ctx = ctx
        self.stacks: dict[str, torch.Tensor] = {}

    def param(self, name: str) -> torch.Tensor | None:
        """The stack of ``name``, or the base tensor expanded to ``[k, ...]`` (None if absent)."""
        if name in self.stacks:
            return self.stacks[name]
        t = getattr(self.base, name)
        return None if t is None else t.detach().unsqueeze(0).expand(self.ctx.k, *t.shape)


class StackedLinear(_Stacked):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.stacks:
            return self.base(x)
        k, B = self.ctx.k, self.ctx.batch
        shared = self.ctx.shared(x)
        w, b = self.param("weight"), self.param("bias")
        rest = x.shape[1:-1]
        if shared:
            out = torch.matmul(x.reshape(1, -1, x.shape[-1]), w.transpose(1, 2))
            if b is not None:
                out = out + b.unsqueeze(1)
        else:
            xs = x.reshape(k, -1, x.shape[-1])
            wt = w.transpose(1, 2)
            out = torch.baddbmm(b.unsqueeze(1), xs, wt) if b is not None else torch.bmm(xs, wt)
        return out.reshape(k * B, *rest, w.shape[1])


class StackedConv(_Stacked):
    def __init__(self, base: nn.modules.conv._ConvNd, ctx: _Context, strategy: str) -> None:
        super().__init__(base, ctx)
        if strategy not in ("loop", "grouped"):
            raise ValueError(f"conv strategy {strategy!r}: expected 'loop' or 'grouped'")
        self.strategy = strategy
        self.dims = len(base.kernel_size)

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, groups: int) -> torch.Tensor:
        m = self.base
        if m.padding_mode != "zeros":
            x = F.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
            pad = 0
        else:
            pad = m.padding
        return _CONV_FN[self.dims](x, w, b, m.stride, pad, m.dilation, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.stacks:
            return self.base(x)
        k, B = self.ctx.k, self.ctx.batch
        shared = self.ctx.shared(x)
        w, b = self.param("weight"), self.param("bias")
        g = self.base.groups
        if self.strategy == "loop":
            if k == 1:
                return self._conv(x, w[0], None if b is None else b[0], g)
            if shared and g == 1:  # one convolution with k x O filters: the input is unfolded once
                O = w.shape[1]
                y = self._conv(x, w.reshape(k * O, *w.shape[2:]), None if b is None else b.reshape(k * O), 1)
                sp2 = y.shape[2:]
                return y.reshape(B, k, O, *sp2).transpose(0, 1).reshape(k * B, O, *sp2)
            outs = [
                self._conv(x if shared else x[i * B : (i + 1) * B], w[i], None if b is None else b[i], g)
                for i in range(k)
            ]
            return torch.cat(outs)
        O = w.shape[1]
        wf = w.reshape(k * O, *w.shape[2:])
        bf = None if b is None else b.reshape(k * O)
        if shared and g == 1:
            y = self._conv(x, wf, bf, 1)
        else:
            C, sp = x.shape[1], x.shape[2:]
            if shared:
                xg = x.repeat(1, k, *([1] * len(sp)))
            else:
                xg = x.reshape(k, B, C, *sp).transpose(0, 1).reshape(B, k * C, *sp)
            y = self._conv(xg, wf, bf, g * k)
        sp2 = y.shape[2:]
        return y.reshape(B, k, O, *sp2).transpose(0, 1).reshape(k * B, O, *sp2)


class StackedBatchNorm(_Stacked):
    """Eval-mode batch norm with per-instance affine parameters and running statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.stacks:
            return self.base(x)
        m = self.base
        k, B = self.ctx.k, self.ctx.batch
        shared = self.ctx.shared(x)
        mean, var = self.param("running_mean"), self.param("running_var")
        scale = torch.rsqrt(var.clamp(min=0.0) + m.eps)
        w, b = self.param("weight"), self.param("bias")
        if w is not None:
            scale = scale * w
        shift = -mean * scale
        if b is not None:
            shift = shift + b
        C = x.shape[1]
        tail = [1] * (x.dim() - 2)
        xs = x.unsqueeze(0) if shared else x.reshape(k, B, *x.shape[1:])
        out = xs * scale.reshape(k, 1, C, *tail) + shift.reshape(k, 1, C, *tail)
        return out.reshape(k * B, *x.shape[1:])


def default_layers(model: nn.Module) -> list[str]:
    """Names of the layers whose weights are noisy by default: every Conv and Linear."""
    return [name for name, m in model.named_modules() if isinstance(m, _WEIGHT_LAYERS)]


def _resolve_strategy(strategy: str, device: torch.device) -> str:
    if strategy == "auto":
        return "grouped" if device.type == "cuda" else "loop"
    return strategy


class StackedModel:
    """A private eval-mode copy of ``model`` whose ``layers`` take per-instance parameters.

    ``set(name, weight=[k, *w], bias=[k, out], ...)`` loads a layer's stacks;
    ``forward(x, k)`` returns ``[k, B, ...]``. Layers not given stacks use the model's own
    parameters for every instance. ``observed`` names modules whose outputs a caller
    hooks (after construction): the ReLU/pool reordering leaves them as they are.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | None = None,
        strategy: str = "auto",
        device: torch.device | str | None = None,
        observed: Sequence[str] = (),
    ) -> None:
        dev = torch.device(device) if device is not None else _model_device(model)
        self.device = dev
        self.strategy = _resolve_strategy(strategy, dev)
        self.model = copy.deepcopy(model).to(dev).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        if dev.type == "cpu":
            swap_pools(self.model)
        self.ctx = _Context()
        names = list(default_layers(self.model) if layers is None else layers)
        known = dict(self.model.named_modules())
        self.layers: dict[str, _Stacked] = {}
        for name in names:
            if name not in known:
                raise ValueError(f"layer {name!r}: no such module (known: {', '.join(n for n in known if n)})")
            base = known[name]
            if not isinstance(base, STACKABLE):
                raise ValueError(f"layer {name!r}: a {type(base).__name__} cannot be stacked ({_names(STACKABLE)})")
            if isinstance(base, nn.modules.batchnorm._BatchNorm) and not base.track_running_stats:
                raise ValueError(f"layer {name!r}: batch norm without running statistics cannot be stacked")
            if isinstance(base, nn.Linear):
                wrapped: _Stacked = StackedLinear(base, self.ctx)
            elif isinstance(base, _WEIGHT_LAYERS):
                wrapped = StackedConv(base, self.ctx, self.strategy)
            else:
                wrapped = StackedBatchNorm(base, self.ctx)
            set_submodule(self.model, name, wrapped)
            self.layers[name] = wrapped
        pool_before_relu(self.model, keep=set(observed))

    def base(self, name: str) -> nn.Module:
        """The original layer ``name`` (its parameters are the noise-free ones)."""
        return self.layers[name].base

    def set(self, name: str, **stacks: torch.Tensor | None) -> None:
        """Per-instance tensors of layer ``name``; ``None`` drops a stack."""
        layer = self.layers[name]
        for key, value in stacks.items():
            if value is None:
                layer.stacks.pop(key, None)
            else:
                layer.stacks[key] = value.to(self.device)

    def clear(self) -> None:
        for layer in self.layers.values():
            layer.stacks.clear()

    def named_modules(self) -> Iterable[tuple[str, nn.Module]]:
        return self.model.named_modules()

    @torch.no_grad()
    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Outputs of ``k`` instances on one data batch, ``[k, B, ...]``."""
        B = x.shape[0]
        self.ctx.k, self.ctx.batch = k, B
        out = self.model(x)
        if out.shape[0] == B and k > 1:  # nothing instance-specific ran
            return out.unsqueeze(0).expand(k, *out.shape)
        return out.reshape(k, B, *out.shape[1:])


def _names(types: tuple[type, ...]) -> str:
    return ", ".join(t.__name__ for t in types)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


# ------------------------------------------------------------------------- data
def as_batches(
    data,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    limit: int | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The evaluation set as a list of ``(images, labels)`` batches on ``device``.

    ``data`` is a ``Dataset`` (``(image, label)`` pairs), a ``DataLoader``, a pair of
    tensors ``(x, y)`` or an ``xbar.data`` split (its test part). The batches are fixed
    once, so every instance sees the same images in the same order. ``limit`` keeps the
    first ``limit`` images.
    """
    if hasattr(data, "test") and hasattr(data, "num_classes"):
        data = data.test
    if isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) == 2:
        data = tuple(data.tensors)  # no per-item collation
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if limit is not None:
            x, y = x[:limit], y[:limit]
        pairs = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    else:
        if isinstance(data, DataLoader):
            loader = data
        elif isinstance(data, Dataset):
            if limit is not None:
                data = torch.utils.data.Subset(data, range(min(limit, len(data))))
            loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        else:
            raise TypeError(f"data: got {type(data).__name__}, expected a Dataset, DataLoader or (x, y) tensors")
        xs, ys = [], []
        for x, y in loader:
            xs.append(x)
            ys.append(torch.as_tensor(y))
        if not xs:
            raise ValueError("data: the evaluation set is empty")
        x, y = torch.cat(xs), torch.cat(ys)
        if limit is not None:
            x, y = x[:limit], y[:limit]
        pairs = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    if not pairs:
        raise ValueError("data: the evaluation set is empty")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return [(x.to(dev), y.to(dev).long()) for x, y in pairs]


@torch.no_grad()
def evaluate(
    stacked: StackedModel,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    k: int,
    before_batch: Callable[[int], None] | None = None,
    loss: bool = True,
) -> dict[str, torch.Tensor]:
    """Per-instance ``correct`` counts, summed cross-entropy ``loss_sum``, ``count`` of images and the
    number of ``outputs`` (logits per image; None for an empty pass).

    Loss sums accumulate in float64 in the fixed order of the batches, so the metrics of
    an instance do not depend on which other instances share its pass. ``loss=False``
    skips the cross-entropy (``loss_sum`` stays 0).
    """
    correct = torch.zeros(k, dtype=torch.int64, device=stacked.device)
    loss_sum = torch.zeros(k, dtype=torch.float64, device=stacked.device)
    count, outputs = 0, None
    for j, (x, y) in enumerate(batches):
        if before_batch is not None:
            before_batch(j)
        out = stacked.forward(x, k)
        B = x.shape[0]
        logits = out.reshape(k, B, -1)
        outputs = int(logits.shape[-1])
        correct += (logits.argmax(-1) == y).sum(1)
        if loss:
            ce = F.cross_entropy(logits.reshape(k * B, -1).float(), y.repeat(k), reduction="none")
            loss_sum += ce.reshape(k, B).double().sum(1)
        count += B
    return {"correct": correct.cpu(), "loss_sum": loss_sum.cpu(), "count": torch.tensor(count), "outputs": outputs}
