"""Loss landscapes along device-noise directions (DAT Sec. III-C).

1D: g(alpha) = (1/n) sum_i l(f_{w + alpha d}(x_i), y_i), with d a draw of the preset's
device noise, d = program(w) - target(w) over the noisy layers (the programming noise of
one instance without the deterministic quantization step), normalised as in the paper
by its Frobenius norm ||d||_F over all noisy layers together (``normalize="model"``).
Alternatives: ``"layer"`` scales each layer's d_l to the norm of its weights
||w_l||_F (the filter/layer normalisation of Li et al., the paper's ref. [6]) and
``"none"`` keeps the raw draw (alpha = 1 is one programmed instance). g is reported per
direction and averaged over ``directions`` draws. ``noise_norm`` (the mean ||d||_F of
the raw draws) says where the device itself sits on the alpha axis for "model".

2D: g(alpha, beta) = (1/n) sum_i l(f_{w + alpha u + beta v}(x_i), y_i) with w = w_SGD,
u = w_A - w_SGD, v = 2 w_B - w_A - w_SGD over alpha in [-0.5, 1.5], beta in [-0.3, 0.8]
(the paper's grid): (0, 0) is w_SGD, (1, 0) is w_A and (0.5, 0.5) is w_B. Every
parameter of every Conv/Linear/BatchNorm layer moves; batch-norm running statistics
move the same way (running variances clamped at 0).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from xbar.evaluation.batched import STACKABLE, StackedModel, as_batches, default_layers, evaluate
from xbar.evaluation.distributed import Dist, context, local_device
from xbar.evaluation.montecarlo import (
    _json_safe,
    default_batch_instances,
    metric_arrays,
    resolve_model,
    run_instances,
)
from xbar.evaluation.streams import DIRECTION, instance_seeds

__all__ = [
    "NORMALIZATIONS",
    "DAT_ALPHAS",
    "DAT_BETAS",
    "Landscape1D",
    "Landscape2D",
    "device_directions",
    "landscape_1d",
    "landscape_2d",
]

NORMALIZATIONS = ("model", "layer", "none")
#: The paper's 2D grid: alpha in [-0.5, 1.5], beta in [-0.3, 0.8] (step 0.1).
DAT_ALPHAS = tuple(np.round(np.linspace(-0.5, 1.5, 21), 10))
DAT_BETAS = tuple(np.round(np.linspace(-0.3, 0.8, 12), 10))
_PARAMS = ("weight", "bias", "running_mean", "running_var")


def device_directions(
    model: nn.Module,
    preset,
    directions: int = 5,
    seed: int = 0,
    layers: Sequence[str] | None = None,
    normalize: str = "model",
) -> tuple[list[dict[str, torch.Tensor]], list[float]]:
    """``directions`` device-noise directions {layer: d_l} and the raw norms ||d||_F (see module doc)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize = {normalize!r}: expected one of {', '.join(NORMALIZATIONS)}")
    model, dm, _ = resolve_model(model, preset)
    if dm is None:
        raise ValueError("device_directions: no preset given and the model carries none")
    mods = dict(model.named_modules())
    names = list(default_layers(model) if layers is None else layers)
    out: list[dict[str, torch.Tensor]] = []
    norms: list[float] = []
    for j in range(directions):
        d = {}
        for pos, name in enumerate(names):
            w = mods[name].weight.detach()
            d[name] = dm.program(w, 1, seeds=instance_seeds(seed, [j], DIRECTION, pos))[0] - dm.target(w)
        total = math.sqrt(sum(float((v.double() ** 2).sum()) for v in d.values()))
        if total == 0:
            raise ValueError("device_directions: the preset's device noise is zero, so there is no direction")
        norms.append(total)
        if normalize == "model":
            d = {k: v / total for k, v in d.items()}
        elif normalize == "layer":
            d = {k: v * (mods[k].weight.detach().norm() / v.norm().clamp(min=1e-30)) for k, v in d.items()}
        out.append(d)
    return out, norms


@dataclass
class Landscape1D:
    """g(alpha) per direction: ``loss``/``accuracy`` of shape [directions, alphas]."""

    alphas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    normalize: str
    noise_norms: list[float]
    preset: str | None
    seed: int
    split: str = "train"
    num_images: int = 0
    seconds: float = 0.0
    layers: list[str] = field(default_factory=list)

    @property
    def mean_loss(self) -> np.ndarray:
        return self.loss.mean(axis=0)

    @property
    def noise_norm(self) -> float:
        return float(np.mean(self.noise_norms))

    def to_dict(self) -> dict:
        return _json_safe(
            {
                "study": "landscape",
                "dims": 1,
                "preset": self.preset,
                "seed": self.seed,
                "split": self.split,
                "normalize": self.normalize,
                "noise_norm": self.noise_norm,
                "noise_norms": list(self.noise_norms),
                "alphas": [float(a) for a in self.alphas],
                "loss": self.loss.tolist(),
                "accuracy": self.accuracy.tolist(),
                "mean_loss": self.mean_loss.tolist(),
                "mean_accuracy": self.accuracy.mean(axis=0).tolist(),
                "layers": list(self.layers),
                "num_images": self.num_images,
                "seconds": self.seconds,
            }
        )

    def plot(self, path, force: bool = False):
        from xbar.evaluation.plots import plot_landscape_1d

        return plot_landscape_1d({self.preset or "model": self}, path, force=force)


@dataclass
class Landscape2D:
    """g(alpha, beta): ``loss``/``accuracy`` of shape [alphas, betas]."""

    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    labels: tuple[str, str, str] = ("SGD", "A", "B")
    split: str = "train"
    num_images: int = 0
    seconds: float = 0.0
    layers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return _json_safe(
            {
                "study": "landscape",
                "dims": 2,
                "labels": list(self.labels),
                "split": self.split,
                "alphas": [float(a) for a in self.alphas],
                "betas": [float(b) for b in self.betas],
                "loss": self.loss.tolist(),
                "accuracy": self.accuracy.tolist(),
                "points": {self.labels[0]: [0.0, 0.0], self.labels[1]: [1.0, 0.0], self.labels[2]: [0.5, 0.5]},
                "layers": list(self.layers),
                "num_images": self.num_images,
                "seconds": self.seconds,
            }
        )

    def plot(self, path, force: bool = False):
        from xbar.evaluation.plots import plot_landscape_2d

        return plot_landscape_2d(self, path, force=force)


def _part(data, split: str):
    """The ``split`` part ("train" or "test") of an ``xbar.data`` split; other data as given
    (``split`` then only labels the result)."""
    if hasattr(data, "test") and hasattr(data, "num_classes"):
        if split not in ("train", "test"):
            raise ValueError(f"split = {split!r}: expected 'train' or 'test' for an xbar.data split")
        return getattr(data, split)
    return data


def landscape_1d(
    model: nn.Module,
    data,
    preset=None,
    alphas: Sequence[float] | None = None,
    directions: int = 5,
    seed: int = 0,
    normalize: str = "model",
    layers: Sequence[str] | None = None,
    batch_instances: int | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    strategy: str = "auto",
    limit: int | None = None,
    split: str = "train",
    progress: bool = True,
    dist: Dist | None = None,
) -> Landscape1D:
    """g(alpha) along ``directions`` device-noise directions (DAT Sec. III-C, 1D plot).

    Default ``alphas``: 21 points over [-2, 2] x noise_norm for "model" (alpha = noise_norm
    is the device's own noise magnitude), [-1, 1] for "layer", [-2, 2] for "none".
    ``data`` as for ``monte_carlo``, except that of an ``xbar.data`` split the ``split``
    part is used (default the training images: DAT plots training loss).
    """
    if directions < 1:
        raise ValueError(f"directions = {directions}: expected >= 1")
    dev = local_device(None if device is None else str(device))
    dist = dist or context(dev)
    model, dm, preset_name = resolve_model(model, preset)
    if dm is None:
        raise ValueError("landscape_1d: no preset given and the model carries none")
    dirs, norms = device_directions(model, dm, directions, seed, layers, normalize)
    if alphas is None:
        span = {"model": 2.0 * float(np.mean(norms)), "layer": 1.0, "none": 2.0}[normalize]
        grid = np.linspace(-span, span, 21)
    else:
        grid = np.asarray(alphas, dtype=float)
    if grid.ndim != 1 or grid.size < 1 or not np.all(np.isfinite(grid)):
        raise ValueError("alphas: expected a non-empty list of finite numbers")
    stacked = StackedModel(model, layers=list(dirs[0]), strategy=strategy, device=dev)
    batches = as_batches(_part(data, split), batch_size, dev, limit)
    dirs = [{k: v.to(dev) for k, v in d.items()} for d in dirs]
    na = grid.size

    def step(batch: list[int]) -> dict[str, np.ndarray]:
        if not batch:
            return {"accuracy": np.zeros((0,)), "loss": np.zeros((0,))}
        for name in stacked.layers:
            w = stacked.base(name).weight.detach()
            ws = [w + float(grid[j % na]) * dirs[j // na][name] for j in batch]
            stacked.set(name, weight=torch.stack(ws))
        return metric_arrays(evaluate(stacked, batches, len(batch)), ("accuracy", "loss"))

    t0 = time.perf_counter()
    bi = batch_instances or default_batch_instances(dev)
    _, vals = run_instances(range(directions * na), step, bi, dist, progress, desc="landscape 1d")
    stacked.clear()
    return Landscape1D(
        alphas=grid,
        loss=vals["loss"].reshape(directions, na),
        accuracy=vals["accuracy"].reshape(directions, na),
        normalize=normalize,
        noise_norms=norms,
        preset=preset_name,
        seed=seed,
        split=split,
        num_images=sum(int(x.shape[0]) for x, _ in batches),
        seconds=time.perf_counter() - t0,
        layers=list(stacked.layers),
    )


def _plane(w_sgd: nn.Module, w_a: nn.Module, w_b: nn.Module, names: Sequence[str]):
    """(w, u, v) per stacked layer and parameter; checks that nothing else differs."""
    sds = [m.state_dict() for m in (w_sgd, w_a, w_b)]
    if not (sds[0].keys() == sds[1].keys() == sds[2].keys()):
        raise ValueError("landscape_2d: the three models do not have the same parameters")
    for key in sds[0]:
        if sds[0][key].shape != sds[1][key].shape or sds[0][key].shape != sds[2][key].shape:
            raise ValueError(f"landscape_2d: parameter {key!r} has different shapes in the three models")
    moving = {f"{n}.{p}" for n in names for p in _PARAMS}
    for key, t in sds[0].items():
        if key in moving or key.endswith("num_batches_tracked") or not t.is_floating_point():
            continue
        if not (torch.equal(t, sds[1][key]) and torch.equal(t, sds[2][key])):
            raise ValueError(f"landscape_2d: {key!r} differs between the models but is not in a Conv/Linear/BatchNorm layer")
    plane: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
    for n in names:
        plane[n] = {}
        for p in _PARAMS:
            key = f"{n}.{p}"
            if key in sds[0] and sds[0][key] is not None:
                w, a, b = (sd[key].detach().to(device=sds[0][key].device, dtype=torch.float64) for sd in sds)
                plane[n][p] = (w, a - w, 2 * b - a - w)
    return plane


def landscape_2d(
    w_sgd: nn.Module,
    w_a: nn.Module,
    w_b: nn.Module,
    data,
    alphas: Sequence[float] = DAT_ALPHAS,
    betas: Sequence[float] = DAT_BETAS,
    labels: tuple[str, str, str] = ("SGD", "A", "B"),
    batch_instances: int | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    strategy: str = "auto",
    limit: int | None = None,
    split: str = "train",
    progress: bool = True,
    dist: Dist | None = None,
) -> Landscape2D:
    """g(alpha, beta) on the plane through three trained models (DAT Sec. III-C, 2D surface).

    ``data``: as for :func:`landscape_1d` (of an ``xbar.data`` split, its ``split`` part).
    """
    ga, gb = np.asarray(alphas, dtype=float), np.asarray(betas, dtype=float)
    if ga.ndim != 1 or gb.ndim != 1 or ga.size < 1 or gb.size < 1:
        raise ValueError("alphas, betas: expected non-empty lists of numbers")
    dev = local_device(None if device is None else str(device))
    dist = dist or context(dev)
    names = [n for n, m in w_sgd.named_modules() if isinstance(m, STACKABLE)]
    plane = {n: {p: tuple(t.to(dev) for t in wuv) for p, wuv in ps.items()} for n, ps in _plane(w_sgd, w_a, w_b, names).items()}
    stacked = StackedModel(w_sgd, layers=names, strategy=strategy, device=dev)
    batches = as_batches(_part(data, split), batch_size, dev, limit)
    nb = gb.size
    dtype = {n: stacked.base(n).weight.dtype if getattr(stacked.base(n), "weight", None) is not None else torch.float32 for n in names}

    def step(batch: list[int]) -> dict[str, np.ndarray]:
        if not batch:
            return {"accuracy": np.zeros((0,)), "loss": np.zeros((0,))}
        a = torch.tensor([ga[j // nb] for j in batch], dtype=torch.float64, device=dev)
        b = torch.tensor([gb[j % nb] for j in batch], dtype=torch.float64, device=dev)
        for n in names:
            stacks = {}
            for p, (w, u, v) in plane[n].items():
                shape = (-1,) + (1,) * w.dim()
                t = w.unsqueeze(0) + a.reshape(shape) * u.unsqueeze(0) + b.reshape(shape) * v.unsqueeze(0)
                if p == "running_var":
                    t = t.clamp(min=0.0)
                stacks[p] = t.to(dtype[n])
            stacked.set(n, **stacks)
        return metric_arrays(evaluate(stacked, batches, len(batch)), ("accuracy", "loss"))

    t0 = time.perf_counter()
    bi = batch_instances or default_batch_instances(dev)
    _, vals = run_instances(range(ga.size * nb), step, bi, dist, progress, desc="landscape 2d")
    stacked.clear()
    return Landscape2D(
        alphas=ga,
        betas=gb,
        loss=vals["loss"].reshape(ga.size, nb),
        accuracy=vals["accuracy"].reshape(ga.size, nb),
        labels=labels,
        split=split,
        num_images=sum(int(x.shape[0]) for x, _ in batches),
        seconds=time.perf_counter() - t0,
        layers=names,
    )

