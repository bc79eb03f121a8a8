"""Bit-flip sweeps (Emonds et al.): accuracy against flip probability p, midpoint fits, tables.

A sweep evaluates ``repeats`` instances at each p of a log grid (default 1e-8 .. 1e-1,
``points_per_decade`` per decade, default 2; a network's drop spans under a decade, so
one point per decade often leaves no point on the slope and no identified midpoint).
Flips are symmetric, p1 = p2 = p, as in the paper, unless ``p10_ratio`` = p2 / p1 says
otherwise (``directional``: the swept p is the larger of the two, so 0 means 0 -> 1
flips only and ``inf`` 1 -> 0 flips only, as on a cell whose one state is the weak one).
In an
instance every targeted tensor is stored in the chosen format, hit by the fliptensors
of Eq. 3 (``xbar.devices.bitflip``) and read back:

* ``weights`` / ``biases``: every stacked layer's parameters, once per instance;
* ``activations``: the outputs of the activation sites (default the outputs of every
  Conv/Linear layer, i.e. what each layer writes to memory for the next one to read),
  flipped at every forward pass by forward hooks.

Storage: ``float16``/``bfloat16``/``float32`` values are rounded to the format, flipped
and read back into float32 compute; ``float64`` computes in float64. ``int8`` is
symmetric post-training quantization: weights and biases with their per-tensor scale
max|x|/127, activations with a static per-site scale calibrated on a clean pass over the
evaluation set (max |a| / 127), as in Emonds Sec. 6.2. The masks are the Fig. 4
thermometer masks (``BitFlipModel.thermometer``: the n most significant bits never
flip) or explicit bit ranges. Observed flips are counted per target (the fliptensor
entries that changed a bit, i.e. the popcount of old XOR new pattern, counted on the
touched elements only) and reported next to the expected p x slots.

Flips are applied in place by ``xbar.devices.bitflip.Flipper`` on the streams of
``xbar.evaluation.flips``: the sparse regime costs what the flips cost (a Binomial count, distinct uniform slots, only those elements read and
written), the dense regime (p > 0.05) is a counter-based draw per slot.

The accuracy curve is fitted with Eq. 2 (``xbar.evaluation.midpoint.fit_midpoint``,
a_min fixed to 1/K) giving the midpoint noise level mu and the 99%-of-peak noise.
Instance j of a sweep is (p index j // repeats, repeat j % repeats). Its weight and
bias flips come from streams seeded by (seed, j, PROGRAM or BIAS, layer); the flips
of an activation site's output live on the virtual tensor [images, *shape] of the whole
evaluation set, drawn by (seed, j, ACTIVATION, site, call, block of images) (sparse) or
keyed by (seed, j, ACTIVATION, site, call) and the element's global position (dense).
So a result depends on (seed, j) and the data, not on ``batch_size``,
``batch_instances`` or how instances are split across processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from xbar.devices.bitflip import BitFlipModel, Flipper, decode, encode
from xbar.evaluation.batched import StackedModel, as_batches, default_layers, evaluate
from xbar.evaluation.distributed import Dist, context, local_device
from xbar.evaluation.flips import ActivationStreams, StoredStack
from xbar.evaluation.midpoint import MidpointFit, fit_midpoint
from xbar.evaluation.montecarlo import (
    _json_safe,
    default_batch_instances,
    metric_arrays,
    run_instances,
)
from xbar.evaluation.streams import ACTIVATION, BIAS, PROGRAM

__all__ = [
    "TARGETS",
    "BitflipEngine",
    "BitflipResult",
    "bitflip_sweep",
    "directional",
    "p_grid",
    "midpoint_table",
    "mask_label",
]

TARGETS = ("weights", "biases", "activations")

def p_grid(p_min: float = 1e-8, p_max: float = 1e-1, points_per_decade: int = 2) -> np.ndarray:
    """Log grid from p_min to p_max with ``points_per_decade`` points per decade (both ends included)."""
    if not (0 < p_min < p_max <= 1):
        raise ValueError(f"p range [{p_min}, {p_max}]: expected 0 < p_min < p_max <= 1")
    if points_per_decade < 1:
        raise ValueError(f"points_per_decade = {points_per_decade}: expected >= 1")
    decades = math.log10(p_max) - math.log10(p_min)
    count = max(2, int(round(decades * points_per_decade)) + 1)
    return np.logspace(math.log10(p_min), math.log10(p_max), count)


def mask_label(mask) -> str:
    if isinstance(mask, str):
        return mask
    return "+".join(f"{lo}-{hi}" for lo, hi in mask) if mask else "none"


def directional(p: float, p10_ratio: float = 1.0) -> tuple[float, float]:
    """(p1, p2) = (p(0 -> 1), p(1 -> 0)) with p2 / p1 = ``p10_ratio`` and the larger of the two equal to p.

    ``p10_ratio`` 1 is the paper's symmetric p1 = p2 = p, 0 flips only 0 -> 1, ``inf`` only 1 -> 0.
    """
    r = float(p10_ratio)
    if math.isnan(r) or r < 0:
        raise ValueError(f"p10_ratio = {p10_ratio!r}: expected a ratio p(1->0) / p(0->1) in [0, inf]")
    return (p, p) if r == 1 else (p * min(1.0, 1.0 / r) if r > 0 else p, p * min(1.0, r))


@dataclass
class BitflipResult:
    """One sweep: accuracy/loss ``[n_p, repeats]``, observed flips and the Eq. 2 fit."""

    storage: str
    mask: object
    targets: list[str]
    p: np.ndarray
    accuracy: np.ndarray
    loss: np.ndarray
    flips: dict[str, np.ndarray]
    slots: dict[str, int]
    baseline: dict[str, float]
    fit: MidpointFit | None
    seed: int
    num_classes: int
    num_images: int = 0
    seconds: float = 0.0
    activation_sites: list[str] = field(default_factory=list)
    p10_ratio: float = 1.0

    @property
    def repeats(self) -> int:
        return int(self.accuracy.shape[1])

    def observed_rate(self, target: str) -> np.ndarray:
        """Observed fraction of flipped bit slots per p (mean over repeats): about p with symmetric flips."""
        if not self.slots.get(target):
            return np.full(self.p.shape, np.nan)
        return self.flips[target].mean(axis=1) / self.slots[target]

    def table(self) -> list[dict]:
        rows = []
        for i, p in enumerate(self.p):
            row = {
                "p": float(p),
                "accuracy_mean": float(self.accuracy[i].mean()),
                "accuracy_std": float(self.accuracy[i].std(ddof=1)) if self.repeats > 1 else 0.0,
                "loss_mean": float(np.mean(self.loss[i])),
            }
            if self.p10_ratio != 1:
                row["p_0to1"], row["p_1to0"] = directional(float(p), self.p10_ratio)
            for t in self.targets:
                row[f"flips_{t}"] = float(self.flips[t][i].mean())
                # with directional flips the expectation depends on how many stored bits are 1
                row[f"expected_flips_{t}"] = float(p * self.slots[t]) if self.p10_ratio == 1 else None
            if self.fit is not None and self.fit.converged:
                row["fitted_accuracy"] = float(self.fit.curve(p))
            rows.append(row)
        return rows

    def to_dict(self) -> dict:
        return _json_safe(
            {
                "study": "bitflip",
                "storage": self.storage,
                "mask": mask_label(self.mask),
                "mask_bits": BitFlipModel(0.0, 0.0, self.storage, self.mask).mask_bits(),
                "targets": list(self.targets),
                "p10_ratio": self.p10_ratio if math.isfinite(self.p10_ratio) else "inf",  # JSON has no inf
                "activation_sites": list(self.activation_sites),
                "seed": self.seed,
                "repeats": self.repeats,
                "num_classes": self.num_classes,
                "num_images": self.num_images,
                "p": [float(v) for v in self.p],
                "accuracy": self.accuracy.tolist(),
                "loss": self.loss.tolist(),
                "baseline": dict(self.baseline),
                "slots": dict(self.slots),
                "flips": {t: v.tolist() for t, v in self.flips.items()},
                "observed_rate": {t: self.observed_rate(t).tolist() for t in self.targets},
                "fit": self.fit.to_dict() if self.fit is not None else None,
                "table": self.table(),
                "seconds": self.seconds,
            }
        )

    def plot(self, path, force: bool = False, label: str | None = None):
        from xbar.evaluation.plots import plot_bitflip

        return plot_bitflip({label or f"{self.storage} {mask_label(self.mask)}": self}, path, force=force)


class BitflipEngine:
    """The model, data and hooks of a bit-flip study, built once; ``run`` evaluates a batch of instances.

    ``clean()`` evaluates the same stacked model with no stacks and no injection (what
    the benchmark times ``run`` against). Use as a context manager, or ``close()`` to
    remove the hooks.
    """

    def __init__(
        self,
        model: nn.Module,
        data,
        storage: str = "float32",
        targets: Sequence[str] = ("activations",),
        mask="all",
        seed: int = 0,
        activation_sites: Sequence[str] | None = None,
        layers: Sequence[str] | None = None,
        batch_size: int = 256,
        device: torch.device | str | None = None,
        strategy: str = "auto",
        limit: int | None = None,
    ) -> None:
        targets = list(dict.fromkeys(targets))
        bad = [t for t in targets if t not in TARGETS]
        if bad or not targets:
            raise ValueError(f"targets {bad or targets}: expected a non-empty subset of {', '.join(TARGETS)}")
        BitFlipModel(0.0, 0.0, storage, mask)  # validates storage and mask
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self.targets, self.storage, self.mask, self.seed, self.device = targets, storage, mask, seed, dev
        self.dtype = torch.float64 if storage == "float64" else torch.float32
        wlayers = list(default_layers(model) if layers is None else layers)
        stack = wlayers if ("weights" in targets or "biases" in targets) else []
        self.sites = (
            list(default_layers(model) if activation_sites is None else activation_sites)
            if "activations" in targets else []
        )
        self.stacked = StackedModel(model, layers=stack, strategy=strategy, device=dev, observed=self.sites)
        self.stacked.model.to(self.dtype)
        self.batches = [(x.to(self.dtype), y) for x, y in as_batches(data, batch_size, dev, limit)]
        sizes = [int(x.shape[0]) for x, _ in self.batches]
        self.starts = [0, *np.cumsum(sizes).tolist()]
        self.num_images = self.starts[-1]
        self.flipper = Flipper(storage, mask)
        self.stores: dict[tuple[str, str], StoredStack] = {}  # stored weights/biases, kept between runs
        modules = dict(self.stacked.named_modules())
        missing = [s for s in self.sites if s not in modules]
        if missing:
            raise ValueError(f"activation site {missing[0]!r}: no such module")
        self.scales = self._int8_scales(modules) if storage == "int8" and self.sites else {}
        self._inj: _Injection | None = None
        self.num_outputs: int | None = None
        self.handles = [modules[s].register_forward_hook(self._hook(pos)) for pos, s in enumerate(self.sites)]

    def _int8_scales(self, modules) -> dict[int, torch.Tensor]:
        """Static int8 scales of the activation sites, max |a| / 127 over a clean pass (Emonds Sec. 6.2)."""
        peaks = {pos: torch.zeros((), dtype=self.dtype, device=self.device) for pos in range(len(self.sites))}

        def peak(pos):
            return lambda m, i, o: peaks.__setitem__(pos, torch.maximum(peaks[pos], o.detach().abs().amax()))

        handles = [modules[s].register_forward_hook(peak(pos)) for pos, s in enumerate(self.sites)]
        try:
            evaluate(self.stacked, self.batches, 1, loss=False)
        finally:
            for h in handles:
                h.remove()
        return {pos: torch.where(v > 0, v / 127.0, torch.ones_like(v)) for pos, v in peaks.items()}

    def _hook(self, pos: int):
        def fn(module, inputs, out):
            inj = self._inj
            if inj is None or not isinstance(out, torch.Tensor):
                return out
            return inj.activation(pos, out, inputs)

        return fn

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        self.stacked.clear()

    def __enter__(self) -> BitflipEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def clean(self) -> dict[str, np.ndarray]:
        """Accuracy and loss of the model with no stacks and no flips (float compute, no storage rounding)."""
        self.stacked.clear()
        raw = evaluate(self.stacked, self.batches, 1)
        self.num_outputs = raw["outputs"]
        return metric_arrays(raw, ("accuracy", "loss"))

    def run(
        self, batch: Sequence[int], probs: Sequence[float], p_1to0: Sequence[float] | None = None
    ) -> dict[str, np.ndarray]:
        """Instances ``batch`` (global indices) with flip probabilities ``probs`` (0 -> 1) and ``p_1to0``
        (1 -> 0; default ``probs``, symmetric flips).

        Returns per instance ``accuracy``, ``loss``, ``flips_<target>`` (changed bits) and
        ``slots_activations`` (stored activation bit slots over the evaluation set).
        """
        k = len(batch)
        p1 = [float(q) for q in probs]
        p2 = p1 if p_1to0 is None else [float(q) for q in p_1to0]
        if len(p2) != k or len(p1) != k:
            raise ValueError(f"run: got {len(p1)} and {len(p2)} probabilities for {k} instances")
        out: dict[str, np.ndarray] = {}
        for t, tag in (("weights", PROGRAM), ("biases", BIAS)):
            count = torch.zeros(k, dtype=torch.int64, device=self.device)
            if t in self.targets:
                for pos, name in enumerate(self.stacked.layers):
                    src = getattr(self.stacked.base(name), "weight" if t == "weights" else "bias")
                    if src is None:
                        continue
                    key = (t, name)
                    if key not in self.stores:
                        self.stores[key] = StoredStack(self.flipper, src.detach())
                    vals, c = self.stores[key].flip(p1, p2, self.seed, batch, (tag, pos))
                    self.stacked.set(name, **{"weight" if t == "weights" else "bias": vals})
                    count += c
            out[f"flips_{t}"] = count
        inj = _Injection(self, list(batch), p1, p2) if self.sites else None
        self._inj = inj
        try:
            raw = evaluate(self.stacked, self.batches, k, before_batch=inj.start_batch if inj else None)
        finally:
            self._inj = None
        self.num_outputs = raw["outputs"]
        res = {key: v.cpu().numpy() for key, v in out.items()}
        res.update(metric_arrays(raw, ("accuracy", "loss")))
        res["flips_activations"] = inj.counts.cpu().numpy() if inj else np.zeros(k, dtype=np.int64)
        res["slots_activations"] = np.full(k, inj.slots if inj else 0, dtype=np.int64)
        return res


class _Injection:
    """Activation flips of one batch of instances during one pass over the evaluation set."""

    def __init__(self, engine: BitflipEngine, batch: list[int], p1: list[float], p2: list[float]) -> None:
        self.e, self.batch, self.p1, self.p2 = engine, batch, p1, p2
        self.counts = torch.zeros(len(batch), dtype=torch.int64, device=engine.device)
        self.slots = 0  # per instance
        self.streams: dict[tuple[int, int, int], ActivationStreams] = {}
        self.calls: dict[int, int] = {}
        self.index = 0

    def start_batch(self, j: int) -> None:
        self.index = j
        self.calls.clear()

    def activation(self, pos: int, out: torch.Tensor, inputs) -> torch.Tensor:
        e = self.e
        ctx = e.stacked.ctx
        k, B = ctx.k, ctx.batch
        if out.shape[0] != k * B:  # still shared by all instances: each gets its own copy
            x = out.repeat(k, *([1] * (out.dim() - 1)))
        elif any(isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() == out.untyped_storage().data_ptr()
                 for t in inputs):
            x = out.clone()  # the site returns (a view of) its input: flip a copy, not what others read
        else:
            x = out  # flipped in place (float storage of the compute dtype: no copy at all)
        call = self.calls.get(pos, 0)
        self.calls[pos] = call + 1
        pattern, scale = encode(x, e.flipper.ref, scale=e.scales.get(pos))
        rows = pattern.view(k, -1)
        E = rows.shape[1] // B
        key = (pos, call, E)
        if key not in self.streams:
            self.streams[key] = ActivationStreams(e.flipper, e.seed, self.batch, self.p1, self.p2,
                                                  (ACTIVATION, pos, call), E, e.starts)
        self.streams[key].flip(rows, e.starts[self.index], B, self.counts)
        self.slots += rows.shape[1] * e.flipper.m
        return decode(pattern, e.flipper.ref, scale, dtype=x.dtype).reshape(x.shape)


def bitflip_sweep(
    model: nn.Module,
    data,
    storage: str = "float32",
    p: Sequence[float] | None = None,
    p_min: float = 1e-8,
    p_max: float = 1e-1,
    points_per_decade: int = 2,
    repeats: int = 5,
    targets: Sequence[str] = ("activations",),
    mask="all",
    p10_ratio: float = 1.0,
    seed: int = 0,
    num_classes: int | None = None,
    activation_sites: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    batch_instances: int | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    strategy: str = "auto",
    limit: int | None = None,
    fit: bool = True,
    baseline: bool = True,
    progress: bool = True,
    dist: Dist | None = None,
) -> BitflipResult:
    """Sweep bit-flip probability ``p`` over ``targets`` stored as ``storage`` (Emonds Sec. 5-6).

    ``targets`` is any of weights, biases, activations (Emonds' default: activations
    only). ``mask`` is a BitFlipModel mask. ``p10_ratio`` = p(1 -> 0) / p(0 -> 1)
    (default 1: symmetric, as the paper; see :func:`directional`).
    ``activation_sites`` names the modules whose outputs are flipped (default: every
    Conv/Linear layer). ``layers`` names the layers whose weights/biases are flipped.
    ``baseline`` also evaluates p = 0 (storage rounding or quantization only), the
    reference peak accuracy. Results depend on ``seed`` and the data, not on
    ``batch_size``, ``batch_instances`` or the number of processes.
    """
    if repeats < 1:
        raise ValueError(f"repeats = {repeats}: expected >= 1")
    grid = np.asarray(p, dtype=float) if p is not None else p_grid(p_min, p_max, points_per_decade)
    if grid.ndim != 1 or grid.size < 1 or np.any(~np.isfinite(grid)) or np.any(grid < 0) or np.any(grid > 1):
        raise ValueError("p: expected probabilities in [0, 1]")
    pairs = [directional(float(q), p10_ratio) for q in grid]
    dev = local_device(None if device is None else str(device))
    dist = dist or context(dev)
    engine = BitflipEngine(model, data, storage, targets, mask, seed, activation_sites, layers, batch_size, dev,
                           strategy, limit)
    targets = engine.targets
    keys = ["accuracy", "loss", "flips_weights", "flips_biases", "flips_activations", "slots_activations"]

    def step(batch: list[int]) -> dict[str, np.ndarray]:
        if not batch:
            return {key: np.zeros((0,)) for key in keys}
        return engine.run(batch, [pairs[j // repeats][0] for j in batch], [pairs[j // repeats][1] for j in batch])

    t0 = time.perf_counter()
    with engine:
        base = engine.run([-1], [0.0]) if baseline else None  # storage rounding / quantization only
        bi = batch_instances or default_batch_instances(dev)
        _, vals = run_instances(range(grid.size * repeats), step, bi, dist, progress, desc=f"bitflip {storage}")
    stacked, nbits = engine.stacked, engine.flipper.m
    shape = (grid.size, repeats)
    slots = {
        "weights": sum(stacked.base(n).weight.numel() for n in stacked.layers) * nbits,
        "biases": sum(stacked.base(n).bias.numel() for n in stacked.layers if stacked.base(n).bias is not None) * nbits,
        "activations": _activation_slots(base or vals),
    }
    flips = {t: vals[f"flips_{t}"].reshape(shape).astype(np.int64) for t in targets}
    acc = vals["accuracy"].reshape(shape)
    if not (num_classes or engine.num_outputs):  # this rank ran nothing: one clean pass for K
        engine.clean()
    k_classes = num_classes or engine.num_outputs
    mfit = None
    if fit and grid.size >= 2 and np.all(grid > 0):
        with np.errstate(over="ignore"):
            mfit = fit_midpoint(grid, acc, num_classes=k_classes)
    return BitflipResult(
        storage=storage,
        mask=mask,
        targets=targets,
        p=grid,
        accuracy=acc,
        loss=vals["loss"].reshape(shape),
        flips=flips,
        slots={t: int(slots[t]) for t in targets},
        baseline={"accuracy": float(base["accuracy"][0]), "loss": float(base["loss"][0])} if base else {},
        fit=mfit,
        seed=seed,
        num_classes=k_classes,
        num_images=engine.num_images,
        seconds=time.perf_counter() - t0,
        activation_sites=engine.sites,
        p10_ratio=float(p10_ratio),
    )


def _activation_slots(vals: dict[str, np.ndarray]) -> int:
    s = vals["slots_activations"]
    return int(s[0]) if s.size else 0


# -------------------------------------------------------------------- tables
def midpoint_table(results: Mapping[str, BitflipResult], reference: str | None = None) -> list[dict]:
    """Rows like Emonds Tables 2, 4 and 5: midpoint mu (with its interval), 99%-of-peak noise,
    peak accuracy and the improvement of mu over ``reference`` (e.g. the float32 sweep)."""
    ref = results[reference].fit if reference is not None and reference in results else None
    rows = []
    for label, r in results.items():
        f = r.fit
        ok = f is not None and f.converged
        row = {
            "label": label,
            "storage": r.storage,
            "mask": mask_label(r.mask),
            "baseline_accuracy": r.baseline.get("accuracy"),
            "midpoint_p": f.midpoint_p if ok else None,
            "midpoint_interval": list(f.midpoint_p_interval) if ok else None,
            "p_99_percent_of_peak": f.p_at_99_percent_of_peak if ok else None,
            "a_max": f.a_max if f is not None else None,
            "converged": bool(ok),
            "reason": "" if ok or f is None else f.reason,
        }
        if ref is not None and ref.converged and ok:
            row["improvement"] = f.midpoint_p / ref.midpoint_p
        rows.append(row)
    return _json_safe(rows)
