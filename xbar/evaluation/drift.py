"""Drift studies: accuracy percentiles of programmed instances read at later times.

Each instance programs every noisy layer once, device by device
(``DeviceModel.program_devices``: programming noise and per-device drift exponents
nu), then reads it at each time t (``DeviceModel.read``): G(t) = G0 ((t + t0)/t0)^-nu
plus read noise (for PCM the accumulated 1/f noise of aihwkit's PCMLikeNoiseModel).
With global drift compensation every layer of every instance is rescaled by
alpha = sum|W(0)| / sum|W(t)| of its noise-free read, the digital periphery's
calibration with a known input (aihwkit's ``GlobalDriftCompensation``). Both
variants reuse the same read of an instance (same read-noise draw): they differ only
by alpha. The read at time t of instance i draws from a stream seeded by
(seed, i, layer, t), so a time's result does not depend on the other times asked for.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from xbar.devices import DeviceModel, DeviceState
from xbar.evaluation import kpp as _kpp
from xbar.evaluation.batched import StackedModel, as_batches, evaluate
from xbar.evaluation.distributed import Dist, context, local_device
from xbar.evaluation.montecarlo import (
    _json_safe,
    clean_metrics,
    default_batch_instances,
    metric_arrays,
    resolve_model,
    run_instances,
)
from xbar.evaluation.streams import PROGRAM, READ, generators, instance_seeds, time_tag

__all__ = [
    "DEFAULT_TIMES",
    "TIME_LABELS",
    "DriftResult",
    "drift_study",
    "program_states",
    "read_states",
    "time_label",
]

DAY = 86400.0
YEAR = 365 * DAY
#: 1 s, 1 h, 1 day, 1 month (30 days), 1 year (365 days), 10 years.
DEFAULT_TIMES: tuple[float, ...] = (1.0, 3600.0, DAY, 30 * DAY, YEAR, 10 * YEAR)
TIME_LABELS = {0.0: "0 s", 1.0: "1 s", 3600.0: "1 h", DAY: "1 day", 30 * DAY: "1 month", YEAR: "1 year", 10 * YEAR: "10 years"}


def time_label(t: float) -> str:
    return TIME_LABELS.get(float(t), f"{t:g} s")


def program_states(
    dm: DeviceModel, weights: torch.Tensor, seed: int, indices: Sequence[int], layer: int
) -> list[DeviceState]:
    """Device states of instances ``indices`` of one layer, each from its (seed, i, PROGRAM, layer) stream."""
    progs = instance_seeds(seed, indices, PROGRAM, layer)
    return [dm.program_devices(weights, 1, g) for g in generators(progs, weights.device)]


def read_states(
    dm: DeviceModel,
    states: Sequence[DeviceState],
    seed: int,
    indices: Sequence[int],
    layer: int,
    t: float,
    compensations: Sequence[bool] = (True, False),
) -> dict[bool, torch.Tensor]:
    """Weights ``[k, *w]`` read at time ``t`` per compensation variant, from (seed, i, READ, layer, t).

    Each instance is read once (``DeviceModel.read_levels``: drift, then read noise); the
    compensated variant is that same read times alpha = sum|W(0)| / sum|W_drift(t)|,
    exactly what ``DeviceModel.read(..., compensate=True)`` returns for the same stream.
    """
    seeds = instance_seeds(seed, indices, READ, layer, time_tag(t))
    out: dict[bool, list[torch.Tensor]] = {c: [] for c in compensations}
    for st, s in zip(states, seeds):
        g = torch.Generator(device=st.programmed.device).manual_seed(s)
        levels, drifted = dm.read_levels(st.target, st.programmed, st.nu, t, g)
        w = st.weights(levels)
        for c in compensations:
            if c and t > 0:
                ref0 = st.weights().flatten(1).abs().sum(1)
                reft = st.weights(drifted).flatten(1).abs().sum(1)
                alpha = ref0 / reft.clamp(min=1e-30)
                out[c].append(w * alpha.reshape(-1, *([1] * (w.dim() - 1))))
            else:
                out[c].append(w)
    return {c: torch.cat(v) for c, v in out.items()}


@dataclass
class DriftResult:
    """Per-instance accuracy and loss ``[compensation, time, instance]`` of a drift study."""

    times: list[float]
    compensation: list[bool]
    accuracy: np.ndarray
    loss: np.ndarray
    seed: int
    preset: str | None
    percentile: float = 1.0
    confidence: float = 0.95
    clean: dict[str, float] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)
    num_images: int = 0
    seconds: float = 0.0
    has_drift: bool = True
    read_noise: bool = True

    @property
    def n(self) -> int:
        return int(self.accuracy.shape[-1])

    def kpp(self, k: float | None = None, compensated: bool = True) -> np.ndarray:
        """KPP of accuracy at every time (one compensation variant)."""
        k = self.percentile if k is None else k
        c = self.compensation.index(compensated)
        return np.array([_kpp.kpp(a, k) for a in self.accuracy[c]])

    def table(self, k: float | None = None) -> list[dict]:
        """One row per (compensation, time): mean, std, median, KPP and its interval."""
        k = self.percentile if k is None else k
        rows = []
        for ci, comp in enumerate(self.compensation):
            for ti, t in enumerate(self.times):
                a = self.accuracy[ci, ti]
                lo, hi = _kpp.kpp_interval(a, k, self.confidence)
                rows.append(
                    {
                        "time_s": float(t),
                        "time": time_label(t),
                        "compensation": comp,
                        "mean": float(a.mean()),
                        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
                        "median": float(np.median(a)),
                        "kpp": _kpp.kpp(a, k),
                        "kpp_interval": [lo, hi],
                        "loss_mean": float(self.loss[ci, ti].mean()),
                    }
                )
        return rows

    def to_dict(self, per_instance: bool = True) -> dict:
        out = {
            "study": "drift",
            "preset": self.preset,
            "n": self.n,
            "seed": self.seed,
            "percentile": self.percentile,
            "confidence": self.confidence,
            "times_s": [float(t) for t in self.times],
            "compensation": list(self.compensation),
            "has_drift": self.has_drift,
            "read_noise": self.read_noise,
            "table": self.table(),
            "clean": dict(self.clean),
            "layers": list(self.layers),
            "num_images": self.num_images,
            "seconds": self.seconds,
        }
        if per_instance:
            out["per_instance"] = {
                "accuracy": self.accuracy.tolist(),
                "loss": self.loss.tolist(),
            }
        return _json_safe(out)

    def plot(self, path, force: bool = False):
        from xbar.evaluation.plots import plot_drift

        return plot_drift(self, path, force=force)


def drift_study(
    model: nn.Module,
    data,
    preset=None,
    times: Sequence[float] = DEFAULT_TIMES,
    n: int = 100,
    seed: int = 0,
    percentile: float = 1.0,
    confidence: float = 0.95,
    compensation: Sequence[bool] = (True, False),
    read_noise: bool = True,
    batch_instances: int | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    layers: Sequence[str] | None = None,
    strategy: str = "auto",
    limit: int | None = None,
    progress: bool = True,
    dist: Dist | None = None,
) -> DriftResult:
    """Accuracy of ``n`` instances programmed once and read at ``times`` (seconds after programming).

    ``compensation`` lists the variants to evaluate (True: global drift compensation).
    ``read_noise=False`` drops the preset's read noise (then t = 0 reads exactly the
    programmed state).
    """
    if n < 1:
        raise ValueError(f"n = {n}: expected >= 1 instances")
    times = [float(t) for t in times]
    if not times or any(not (t >= 0 and math.isfinite(t)) for t in times):
        raise ValueError(f"times = {times}: expected finite times >= 0 seconds")
    if len(set(times)) != len(times):
        raise ValueError(f"times = {times}: expected distinct times")
    comps = [bool(c) for c in compensation]
    if not comps:
        raise ValueError("compensation: expected at least one of True, False")
    dev = local_device(None if device is None else str(device))
    dist = dist or context(dev)
    model, dm, preset_name = resolve_model(model, preset)
    if dm is None:
        raise ValueError("drift_study: no preset given and the model carries none")
    if not read_noise:
        dm = dataclasses.replace(dm, read_noise=None)
    bi = batch_instances or default_batch_instances(dev)
    stacked = StackedModel(model, layers=layers, strategy=strategy, device=dev)
    batches = as_batches(data, batch_size, dev, limit)
    clean = clean_metrics(stacked, batches, ("accuracy", "loss"))
    keys = [(t, c) for c in comps for t in times]

    def step(batch: list[int]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if not batch:
            return {f"{m}{j}": np.zeros((0,)) for j in range(len(keys)) for m in ("a", "l")}
        states = {
            name: program_states(dm, stacked.base(name).weight.detach(), seed, batch, pos)
            for pos, name in enumerate(stacked.layers)
        }
        for t in times:
            reads = {
                name: read_states(dm, states[name], seed, batch, pos, t, comps)
                for pos, name in enumerate(stacked.layers)
            }
            for c in comps:
                for name in stacked.layers:
                    stacked.set(name, weight=reads[name][c])
                vals = metric_arrays(evaluate(stacked, batches, len(batch)), ("accuracy", "loss"))
                j = keys.index((t, c))
                out[f"a{j}"], out[f"l{j}"] = vals["accuracy"], vals["loss"]
        return out

    t0 = time.perf_counter()
    _, vals = run_instances(range(n), step, bi, dist, progress, desc=f"drift {preset_name}")
    stacked.clear()
    shape = (len(comps), len(times), n)
    acc = np.stack([vals[f"a{j}"] for j in range(len(keys))]).reshape(shape)
    loss = np.stack([vals[f"l{j}"] for j in range(len(keys))]).reshape(shape)
    return DriftResult(
        times=times,
        compensation=comps,
        accuracy=acc,
        loss=loss,
        seed=seed,
        preset=preset_name,
        percentile=percentile,
        confidence=confidence,
        clean=clean,
        layers=list(stacked.layers),
        num_images=sum(int(x.shape[0]) for x, _ in batches),
        seconds=time.perf_counter() - t0,
        has_drift=dm.drift is not None,
        read_noise=dm.read_noise is not None,
    )
