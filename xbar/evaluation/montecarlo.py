"""Monte Carlo evaluation of a trained network on emulated devices (TRICE Algorithm 2).

Instance i programs every noisy layer from its own stream (``streams.instance_seeds``
with tags (PROGRAM, layer position)) through ``DeviceModel.program(..., seeds=...)``,
runs the evaluation set and records its accuracy and mean cross-entropy. Instances are
evaluated ``batch_instances`` at a time with the stacked forward of ``batched.py``
and sharded across processes by ``distributed.py``; per-instance results depend only
on ``(seed, i)``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from xbar.devices import DeviceModel
from xbar.evaluation import kpp as _kpp
from xbar.evaluation.batched import StackedModel, as_batches, evaluate
from xbar.evaluation.distributed import Dist, context
from xbar.evaluation.streams import BIAS, PROGRAM, instance_seeds
from xbar.progress import progress_bar

__all__ = [
    "HIGHER_IS_BETTER",
    "MonteCarloResult",
    "monte_carlo",
    "resolve_model",
    "run_instances",
    "default_batch_instances",
    "digital_model",
    "metric_arrays",
]

#: Direction of each metric: KPP is the k-th percentile from the bad end.
HIGHER_IS_BETTER = {"accuracy": True, "loss": False}


# ------------------------------------------------------------------ helpers
def resolve_model(model: nn.Module, preset=None) -> tuple[nn.Module, DeviceModel | None, str | None]:
    """A plain PyTorch model, its device model and preset name.

    ``preset`` is a DeviceModel, a Preset, a shipped preset name or a TOML path. When it
    is None the model's own preset is used: an ``xbar_preset``/``preset`` attribute of
    the model, or that of the rpu_config of its aihwkit analog layers (a model from
    ``xbar.convert``); analog layers are turned back into digital ones holding the tile
    weights (``digital_model``).
    """
    carried = None
    for obj in (model, *model.modules()):
        if carried is not None:
            break
        for attr in ("xbar_preset", "preset"):
            cand = getattr(obj, attr, None)
            if cand is not None and not isinstance(cand, nn.Module | torch.Tensor):
                carried = carried or cand
        cfg = getattr(obj, "rpu_config", None)
        if cfg is not None and carried is None:
            if callable(getattr(cfg, "preset_object", None)):  # xbar.tiles.XbarRPUConfig
                carried = cfg.preset_object()
            else:
                carried = getattr(cfg, "xbar_preset", None) or getattr(cfg, "preset", None)
    if isinstance(carried, dict) and carried:
        from xbar.presets import resolve

        carried = resolve(carried, origin="the model's preset")
    model = digital_model(model)
    chosen = preset if preset is not None else carried
    if chosen is None:
        return model, None, None
    from xbar.presets import device_model_of

    dm = device_model_of(chosen)
    name = getattr(chosen, "name", None) or (chosen if isinstance(chosen, str) else type(chosen).__name__)
    return model, dm, str(name)


def digital_model(model: nn.Module) -> nn.Module:
    """``model`` with every aihwkit analog Linear/Conv layer replaced by a plain one holding its
    tile weights (``get_weights()``); the model itself when it has none."""
    from aihwkit.nn.modules.base import AnalogLayerBase

    analog = [(n, m) for n, m in model.named_modules() if isinstance(m, AnalogLayerBase) and n]
    analog = [(n, m) for n, m in analog if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)]
    if not analog:
        return model
    model = copy.deepcopy(model)
    for name, m in analog:
        m = model.get_submodule(name)
        w, b = m.get_weights()
        if isinstance(m, nn.Linear):
            new: nn.Module = nn.Linear(m.in_features, m.out_features, bias=b is not None)
        else:
            conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(m.kernel_size)]
            new = conv(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                       m.groups, bias=b is not None, padding_mode=m.padding_mode)
        with torch.no_grad():
            new.weight.copy_(w.detach().reshape(new.weight.shape))
            if b is not None:
                new.bias.copy_(b.detach().reshape(new.bias.shape))
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, new.to(w.device))
    return model.eval()


def default_batch_instances(device: torch.device) -> int:
    """Instances per forward pass: 4 on CPU (larger k spills the caches, see batched.py), 32 on CUDA."""
    return 32 if device.type == "cuda" else 4


def metric_arrays(raw: dict[str, torch.Tensor], metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """``accuracy`` and/or ``loss`` per instance from ``evaluate``'s counts."""
    n = float(raw["count"])
    out: dict[str, np.ndarray] = {}
    for m in metrics:
        if m == "accuracy":
            out[m] = raw["correct"].double().numpy() / n
        elif m == "loss":
            out[m] = raw["loss_sum"].numpy() / n
        else:
            raise ValueError(f"metric {m!r}: expected accuracy or loss")
    return out


def _progress(total: int, desc: str, enabled: bool, dist: Dist):
    return progress_bar(total, desc, enabled and dist.is_main, unit="inst")


def run_instances(
    indices: Sequence[int],
    step: Callable[[list[int]], dict[str, np.ndarray]],
    batch_instances: int,
    dist: Dist,
    progress: bool = True,
    desc: str = "monte carlo",
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Evaluate this rank's share of ``indices`` in batches with ``step`` and gather all ranks.

    ``step(batch)`` returns per-instance arrays for the global indices in ``batch``.
    """
    mine = dist.shard(indices)
    parts: list[dict[str, np.ndarray]] = []
    with _progress(len(mine), desc, progress, dist) as bar:
        for s in range(0, len(mine), batch_instances):
            chunk = mine[s : s + batch_instances]
            parts.append(step(chunk))
            bar.update(len(chunk))
    keys = list(parts[0]) if parts else []
    if not parts and dist.active:  # this rank got nothing; it still joins the gather
        keys = list(step([]).keys())
    local = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros((0,)) for k in keys}
    return dist.gather(mine, local)


# ------------------------------------------------------------------- result
@dataclass
class MonteCarloResult:
    """Per-instance metrics of a Monte Carlo study, with KPP and summary statistics.

    ``per_instance[metric][j]`` belongs to global instance ``indices[j]`` (0..n-1).
    ``metric`` (the default of ``kpp``, ``interval``, ``mean`` and ``std``) is accuracy
    when it was recorded, else the first recorded metric (e.g. ``metrics=("loss",)``).
    """

    per_instance: dict[str, np.ndarray]
    indices: np.ndarray
    seed: int
    preset: str | None
    percentile: float = 1.0
    confidence: float = 0.95
    clean: dict[str, float] = field(default_factory=dict)
    stored: dict[str, float] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)
    num_images: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    rule: str = "inverse-cdf"

    @property
    def n(self) -> int:
        return int(self.indices.size)

    @property
    def metric(self) -> str:
        """The headline metric: accuracy when recorded, else the first one."""
        return "accuracy" if "accuracy" in self.per_instance else next(iter(self.per_instance), "accuracy")

    def values(self, metric: str | None = None) -> np.ndarray:
        metric = metric or self.metric
        if metric not in self.per_instance:
            raise KeyError(f"metric {metric!r}: this result has {', '.join(self.per_instance)}")
        return self.per_instance[metric]

    def kpp(self, k: float | None = None, metric: str | None = None) -> float:
        """k-th percentile performance (default ``percentile``), from the bad end of ``metric``."""
        k = self.percentile if k is None else k
        metric = metric or self.metric
        x = self.values(metric)
        if HIGHER_IS_BETTER.get(metric, True):
            return _kpp.kpp(x, k, self.rule)
        return -_kpp.kpp(-x, k, self.rule)

    def interval(
        self, k: float | None = None, metric: str | None = None, confidence: float | None = None
    ) -> tuple[float | None, float | None]:
        """Distribution-free confidence interval of ``kpp(k)`` (see ``kpp.py``)."""
        k = self.percentile if k is None else k
        metric = metric or self.metric
        c = self.confidence if confidence is None else confidence
        x = self.values(metric)
        if HIGHER_IS_BETTER.get(metric, True):
            return _kpp.kpp_interval(x, k, c)
        lo, hi = _kpp.kpp_interval(-x, k, c)
        return (None if hi is None else -hi, None if lo is None else -lo)

    @property
    def mean(self) -> float:
        """Mean of ``metric`` over the instances."""
        return float(np.mean(self.values()))

    @property
    def std(self) -> float:
        return float(np.std(self.values(), ddof=1)) if self.n > 1 else 0.0

    def summary(self, metric: str | None = None, k: float | None = None) -> dict:
        metric = metric or self.metric
        x = self.values(metric)
        k = self.percentile if k is None else k
        lo, hi = self.interval(k, metric)
        return {
            "mean": float(np.mean(x)),
            "std": float(np.std(x, ddof=1)) if x.size > 1 else 0.0,
            "min": float(np.min(x)),
            "median": float(np.median(x)),
            "max": float(np.max(x)),
            "kpp": self.kpp(k, metric),
            "kpp_interval": [lo, hi],
        }

    def to_dict(self, per_instance: bool = True) -> dict:
        """JSON-ready result (keys documented in docs/studies.md)."""
        k = self.percentile
        out = {
            "study": "monte_carlo",
            "metric": self.metric,
            "preset": self.preset,
            "n": self.n,
            "seed": self.seed,
            "percentile": k,
            "confidence": self.confidence,
            "order_statistic": _kpp.order_statistic(self.n, k, self.rule),
            "rule": self.rule,
            "kpp": self.kpp(k),
            "kpp_interval": list(self.interval(k)),
            "mean": self.mean,
            "std": self.std,
            "metrics": {m: self.summary(m) for m in self.per_instance},
            "clean": dict(self.clean),
            "stored": dict(self.stored),
            "layers": list(self.layers),
            "num_images": self.num_images,
            "seconds": self.seconds,
            "instances_per_second": self.n / self.seconds if self.seconds > 0 else None,
            "history": list(self.history),
        }
        if per_instance:
            out["per_instance"] = {m: [float(v) for v in a] for m, a in self.per_instance.items()}
        return _json_safe(out)

    def plot(self, path, ks: Sequence[float] = (1, 5, 10), force: bool = False):
        """Histogram and CDF with KPP markers (TRICE Fig. 2)."""
        from xbar.evaluation.plots import plot_distribution

        return plot_distribution(self, path, ks=ks, force=force)


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


# ------------------------------------------------------------------- engine
def _programmer(
    stacked: StackedModel, dm: DeviceModel, seed: int, noisy_bias: bool
) -> Callable[[list[int]], None]:
    """Loads programmed instances of every stacked layer for a batch of global indices."""

    def load(batch: list[int]) -> None:
        for pos, name in enumerate(stacked.layers):
            base = stacked.base(name)
            w = base.weight.detach()
            stacked.set(name, weight=dm.program(w, len(batch), seeds=instance_seeds(seed, batch, PROGRAM, pos)))
            if noisy_bias and getattr(base, "bias", None) is not None:
                b = base.bias.detach()
                stacked.set(name, bias=dm.program(b, len(batch), seeds=instance_seeds(seed, batch, BIAS, pos)))

    return load


def clean_metrics(
    stacked: StackedModel, batches, metrics: Sequence[str], dm: DeviceModel | None = None
) -> dict[str, float]:
    """Metrics of the noise-free float model (all stacks cleared), or with ``dm`` of the
    noise-free stored one: every stacked layer holding ``dm.target(w)``, its weights as
    the device stores them (H-bit quantized; unchanged for analog storage)."""
    stacked.clear()
    if dm is not None:
        for name in stacked.layers:
            stacked.set(name, weight=dm.target(stacked.base(name).weight.detach())[None])
    vals = metric_arrays(evaluate(stacked, batches, 1, loss="loss" in metrics), metrics)
    stacked.clear()
    return {m: float(v[0]) for m, v in vals.items()}


def monte_carlo(
    model: nn.Module,
    data,
    preset=None,
    n: int = 1000,
    seed: int = 0,
    percentile: float = 1.0,
    confidence: float = 0.95,
    tolerance: float | None = None,
    max_n: int | None = None,
    batch_instances: int | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    metrics: Sequence[str] = ("accuracy", "loss"),
    layers: Sequence[str] | None = None,
    noisy_bias: bool = False,
    strategy: str = "auto",
    limit: int | None = None,
    progress: bool = True,
    rule: str = "inverse-cdf",
    dist: Dist | None = None,
) -> MonteCarloResult:
    """Evaluate ``n`` programmed instances of ``model`` on ``data`` under ``preset`` (Algorithm 2).

    ``layers`` names the noisy layers (default every Conv/Linear; their biases stay
    digital unless ``noisy_bias``). With ``tolerance`` the study is adaptive: after the
    first ``n`` instances it doubles the number of instances until the width of the
    ``confidence`` interval of the ``percentile``-th KPP of accuracy is below
    ``tolerance`` or ``max_n`` (default 16 n) is reached; the first N instances of an
    adaptive run are exactly those of a fixed run with N. ``batch_instances`` only
    changes speed and memory, never results. Under torchrun the instances are sharded
    across the ranks and every rank returns the full result (every rank must call it;
    pass ``dist=Dist()`` to run a study on one rank alone).
    """
    if n < 1:
        raise ValueError(f"n = {n}: expected >= 1 instances")
    if tolerance is not None and not tolerance > 0:
        raise ValueError(f"tolerance = {tolerance}: expected > 0")
    from xbar.evaluation.distributed import local_device

    dev = local_device(None if device is None else str(device))
    dist = dist or context(dev)
    model, dm, preset_name = resolve_model(model, preset)
    if dm is None:
        raise ValueError("monte_carlo: no preset given and the model carries none")
    bi = batch_instances or default_batch_instances(dev)
    if bi < 1:
        raise ValueError(f"batch_instances = {bi}: expected >= 1")
    stacked = StackedModel(model, layers=layers, strategy=strategy, device=dev)
    batches = as_batches(data, batch_size, dev, limit)
    num_images = sum(int(x.shape[0]) for x, _ in batches)
    clean = clean_metrics(stacked, batches, metrics)
    stored = clean_metrics(stacked, batches, metrics, dm)
    load = _programmer(stacked, dm, seed, noisy_bias)

    def step(batch: list[int]) -> dict[str, np.ndarray]:
        if not batch:
            return {m: np.zeros((0,)) for m in metrics}
        load(batch)
        return metric_arrays(evaluate(stacked, batches, len(batch), loss="loss" in metrics), metrics)

    t0 = time.perf_counter()
    target = n
    limit_n = max_n if max_n is not None else 16 * n
    done = 0
    all_idx = np.zeros((0,), dtype=np.int64)
    values: dict[str, np.ndarray] = {m: np.zeros((0,)) for m in metrics}
    history: list[dict] = []
    while True:
        idx, new = run_instances(range(done, target), step, bi, dist, progress, desc=f"monte carlo {preset_name}")
        all_idx = np.concatenate([all_idx, idx])
        values = {m: np.concatenate([values[m], new[m]]) for m in metrics}
        done = target
        if "accuracy" in values:
            lo, hi = _kpp.kpp_interval(values["accuracy"], percentile, confidence)
            width = math.inf if lo is None or hi is None else hi - lo
            history.append({"n": done, "kpp": _kpp.kpp(values["accuracy"], percentile, rule), "interval_width": width})
        else:
            width = 0.0
        if tolerance is None or width < tolerance or done >= limit_n:
            break
        target = min(2 * done, limit_n)
    stacked.clear()
    return MonteCarloResult(
        per_instance=values,
        indices=all_idx,
        seed=seed,
        preset=preset_name,
        percentile=percentile,
        confidence=confidence,
        clean=clean,
        stored=stored,
        layers=list(stacked.layers),
        num_images=num_images,
        seconds=time.perf_counter() - t0,
        history=history,
        rule=rule,
    )
