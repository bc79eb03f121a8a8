"""Bit-flip sweeps (Emonds et al.): accuracy against flip probability p, midpoint fits, tables.

A sweep evaluates ``repeats`` instances at each p of a log grid (default 1e-8 .. 1e-1,
``points_per_decade`` per decade, symmetric p1 = p2 = p as in the paper). In an
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
flip) or explicit bit ranges. Observed flips are counted per target (XOR popcount of
the stored patterns) and reported next to the expected p x slots.

The accuracy curve is fitted with Eq. 2 (``xbar.evaluation.midpoint.fit_midpoint``,
a_min fixed to 1/K) giving the midpoint noise level mu and the 99%-of-peak noise.
Instance j of a sweep is (p index j // repeats, repeat j % repeats) and draws from
streams seeded by (seed, j, target, layer); activation flips depend on the data batch
size (the stream is consumed batch by batch), not on ``batch_instances``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from xbar.devices.bitflip import BitFlipModel, decode, encode, flip_stored
from xbar.evaluation.batched import StackedModel, as_batches, default_layers, evaluate
from xbar.evaluation.distributed import Dist, context, local_device
from xbar.evaluation.midpoint import MidpointFit, fit_midpoint
from xbar.evaluation.montecarlo import (
    _json_safe,
    default_batch_instances,
    metric_arrays,
    run_instances,
)
from xbar.evaluation.streams import ACTIVATION, BIAS, PROGRAM, generators, instance_seeds

__all__ = [
    "TARGETS",
    "BitflipResult",
    "bitflip_sweep",
    "p_grid",
    "parse_mask",
    "midpoint_table",
    "format_table",
    "mask_label",
]

TARGETS = ("weights", "biases", "activations")

_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def p_grid(p_min: float = 1e-8, p_max: float = 1e-1, points_per_decade: int = 1) -> np.ndarray:
    """Log grid from p_min to p_max with ``points_per_decade`` points per decade (both ends included)."""
    if not (0 < p_min < p_max <= 1):
        raise ValueError(f"p range [{p_min}, {p_max}]: expected 0 < p_min < p_max <= 1")
    if points_per_decade < 1:
        raise ValueError(f"points_per_decade = {points_per_decade}: expected >= 1")
    decades = math.log10(p_max) - math.log10(p_min)
    count = max(2, int(round(decades * points_per_decade)) + 1)
    return np.logspace(math.log10(p_min), math.log10(p_max), count)


def parse_mask(text: str, storage: str):
    """A mask from text: all|sign|exponent|mantissa, ``msb:N`` (Fig. 4 thermometer, N MSBs protected)
    or bit ranges ``LO-HI[+LO-HI...]`` (bit 0 = LSB; ``none`` for no bits)."""
    t = text.strip()
    if t in ("all", "sign", "exponent", "mantissa"):
        return t
    if t == "none":
        return ()
    if t.startswith("msb:"):
        try:
            n = int(t[4:])
        except ValueError:
            raise ValueError(f"mask {text!r}: expected msb:N with an integer N") from None
        return BitFlipModel.thermometer(storage, n).mask
    ranges = []
    for part in t.split("+"):
        lo, sep, hi = part.partition("-")
        try:
            ranges.append((int(lo), int(hi if sep else lo)))
        except ValueError:
            raise ValueError(
                f"mask {text!r}: expected all, sign, exponent, mantissa, none, msb:N or bit ranges like 0-22+31-31"
            ) from None
    return tuple(ranges)


def mask_label(mask) -> str:
    if isinstance(mask, str):
        return mask
    return "+".join(f"{lo}-{hi}" for lo, hi in mask) if mask else "none"


_CHUNK = 256


def _popcount(a: torch.Tensor, b: torch.Tensor) -> int:
    """Number of differing bits between two patterns.

    Flips are sparse: find the 256-element chunks that differ, then expand only those
    into bytes and count their bits with a lookup table.
    """
    a, b = a.reshape(-1), b.reshape(-1)
    m = a.numel() // _CHUNK * _CHUNK
    pieces = []
    if m:
        rows = (a[:m] != b[:m]).view(-1, _CHUNK).any(1).nonzero().squeeze(1)
        if rows.numel():
            pieces.append((a[:m].view(-1, _CHUNK)[rows] ^ b[:m].view(-1, _CHUNK)[rows]).reshape(-1))
    if m < a.numel():
        pieces.append(a[m:] ^ b[m:])
    total = 0
    lut = _POPCOUNT.to(a.device)
    for d in pieces:
        total += int(lut[d.contiguous().view(torch.uint8).long()].sum())
    return total


def _store(x: torch.Tensor, model: BitFlipModel, gen: torch.Generator, scale=None) -> tuple[torch.Tensor, int]:
    """``x`` written in ``model.storage``, flipped (Eq. 3) and read back; and the number of flipped bits."""
    pattern, s = encode(x, model, scale=scale)
    flipped = flip_stored(pattern, model, generator=gen)
    return decode(flipped, model, s, dtype=x.dtype).reshape(x.shape), _popcount(pattern, flipped)


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

    @property
    def repeats(self) -> int:
        return int(self.accuracy.shape[1])

    def observed_rate(self, target: str) -> np.ndarray:
        """Observed fraction of flipped bit slots per p (mean over repeats)."""
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
            for t in self.targets:
                row[f"flips_{t}"] = float(self.flips[t][i].mean())
                row[f"expected_flips_{t}"] = float(p * self.slots[t])
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


class _Injector:
    """Per-instance bit-flip models, generators and flip counters of one instance batch."""

    def __init__(self, models: list[BitFlipModel], seed: int, batch: list[int], sites: list[str], device) -> None:
        self.models = models
        self.gens = {s: generators(instance_seeds(seed, batch, ACTIVATION, j), device) for j, s in enumerate(sites)}
        self.flips = np.zeros(len(models), dtype=np.int64)
        self.slots = 0


def bitflip_sweep(
    model: nn.Module,
    data,
    storage: str = "float32",
    p: Sequence[float] | None = None,
    p_min: float = 1e-8,
    p_max: float = 1e-1,
    points_per_decade: int = 1,
    repeats: int = 5,
    targets: Sequence[str] = ("activations",),
    mask="all",
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
    """Sweep symmetric bit-flip probability ``p`` over ``targets`` stored as ``storage`` (Emonds Sec. 5-6).

    ``targets`` is any of weights, biases, activations (Emonds' default: activations
    only). ``mask`` is a BitFlipModel mask (``parse_mask`` reads the text forms).
    ``activation_sites`` names the modules whose outputs are flipped (default: every
    Conv/Linear layer). ``layers`` names the layers whose weights/biases are flipped.
    ``baseline`` also evaluates p = 0 (storage rounding or quantization only), the
    reference peak accuracy.
    """
    targets = list(dict.fromkeys(targets))
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise ValueError(f"targets {bad or targets}: expected a non-empty subset of {', '.join(TARGETS)}")
    if repeats < 1:
        raise ValueError(f"repeats = {repeats}: expected >= 1")
    grid = np.asarray(p, dtype=float) if p is not None else p_grid(p_min, p_max, points_per_decade)
    if grid.ndim != 1 or grid.size < 1 or np.any(~np.isfinite(grid)) or np.any(grid < 0) or np.any(grid > 1):
        raise ValueError("p: expected probabilities in [0, 1]")
    BitFlipModel(0.0, 0.0, storage, mask)  # validates storage and mask
    dev = local_device(None if device is None else str(device))
    dist = dist or context(dev)
    dtype = torch.float64 if storage == "float64" else torch.float32
    wlayers = list(default_layers(model) if layers is None else layers)
    stack = wlayers if ("weights" in targets or "biases" in targets) else []
    stacked = StackedModel(model, layers=stack, strategy=strategy, device=dev)
    stacked.model.to(dtype)
    batches = [(x.to(dtype), y) for x, y in as_batches(data, batch_size, dev, limit)]
    sites = list(default_layers(model) if activation_sites is None else activation_sites) if "activations" in targets else []
    modules = dict(stacked.named_modules())
    missing = [s for s in sites if s not in modules]
    if missing:
        raise ValueError(f"activation site {missing[0]!r}: no such module")

    # static int8 scales of the activation sites, from a clean pass (Emonds Sec. 6.2)
    scales: dict[str, torch.Tensor] = {}
    if storage == "int8" and sites:
        peaks = {s: torch.zeros((), dtype=dtype, device=dev) for s in sites}
        handles = [
            modules[s].register_forward_hook(
                lambda m, i, o, s=s: peaks.__setitem__(s, torch.maximum(peaks[s], o.detach().abs().amax()))
            )
            for s in sites
        ]
        evaluate(stacked, batches, 1)
        for h in handles:
            h.remove()
        scales = {s: torch.where(v > 0, v / 127.0, torch.ones_like(v)) for s, v in peaks.items()}

    state: dict[str, _Injector | None] = {"inj": None}

    def hook(site: str):
        def fn(module, inputs, out):
            inj = state["inj"]
            if inj is None or not isinstance(out, torch.Tensor):
                return out
            k, B = stacked.ctx.k, stacked.ctx.batch
            x = out if out.shape[0] == k * B else out.repeat(k, *([1] * (out.dim() - 1)))
            parts = []
            for i in range(k):
                v, c = _store(x[i * B : (i + 1) * B], inj.models[i], inj.gens[site][i], scales.get(site))
                parts.append(v)
                inj.flips[i] += c
            inj.slots += parts[0].numel() * len(inj.models[0].mask_bits())
            return parts[0] if k == 1 else torch.cat(parts)

        return fn

    handles = [modules[s].register_forward_hook(hook(s)) for s in sites]
    nbits = len(BitFlipModel(0.0, 0.0, storage, mask).mask_bits())

    def run(batch: list[int], probs: Sequence[float]) -> dict[str, np.ndarray]:
        k = len(batch)
        bfm = [BitFlipModel(float(q), float(q), storage, mask) for q in probs]
        out: dict[str, np.ndarray] = {}
        for t, tag in (("weights", PROGRAM), ("biases", BIAS)):
            count = np.zeros(k, dtype=np.int64)
            if t in targets:
                for pos, name in enumerate(stacked.layers):
                    base = stacked.base(name)
                    src = base.weight if t == "weights" else base.bias
                    if src is None:
                        continue
                    gens = generators(instance_seeds(seed, batch, tag, pos), dev)
                    vals = []
                    for i in range(k):
                        v, c = _store(src.detach(), bfm[i], gens[i])
                        vals.append(v)
                        count[i] += c
                    stacked.set(name, **{"weight" if t == "weights" else "bias": torch.stack(vals)})
            out[f"flips_{t}"] = count
        inj = _Injector(bfm, seed, batch, sites, dev) if sites else None
        state["inj"] = inj
        try:
            vals = metric_arrays(evaluate(stacked, batches, k), ("accuracy", "loss"))
        finally:
            state["inj"] = None
        out.update(vals)
        out["flips_activations"] = inj.flips if inj is not None else np.zeros(k, dtype=np.int64)
        out["slots_activations"] = np.full(k, inj.slots if inj is not None else 0, dtype=np.int64)
        return out

    def step(batch: list[int]) -> dict[str, np.ndarray]:
        if not batch:
            keys = ["accuracy", "loss", "flips_weights", "flips_biases", "flips_activations", "slots_activations"]
            return {key: np.zeros((0,)) for key in keys}
        return run(batch, [grid[j // repeats] for j in batch])

    t0 = time.perf_counter()
    try:
        base = run([-1], [0.0]) if baseline else None  # storage rounding / quantization only
        bi = batch_instances or default_batch_instances(dev)
        total = grid.size * repeats
        _, vals = run_instances(range(total), step, bi, dist, progress, desc=f"bitflip {storage}")
    finally:
        for h in handles:
            h.remove()
        stacked.clear()
    shape = (grid.size, repeats)
    slots = {
        "weights": sum(stacked.base(n).weight.numel() for n in stacked.layers) * nbits,
        "biases": sum(stacked.base(n).bias.numel() for n in stacked.layers if stacked.base(n).bias is not None) * nbits,
        "activations": int((base or vals)["slots_activations"][0]) if (base or vals["slots_activations"].size) else 0,
    }
    flips = {t: vals[f"flips_{t}"].reshape(shape).astype(np.int64) for t in targets}
    acc = vals["accuracy"].reshape(shape)
    k_classes = num_classes or _num_classes(stacked, batches)
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
        num_images=sum(int(x.shape[0]) for x, _ in batches),
        seconds=time.perf_counter() - t0,
        activation_sites=sites,
    )


def _num_classes(stacked: StackedModel, batches) -> int:
    x = batches[0][0][:1]
    return int(stacked.forward(x, 1).shape[-1])


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


def format_table(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    """Plain-text table of ``rows`` (floats in 3 significant digits)."""

    def fmt(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.3g}" if (abs(v) >= 1e-3 or v == 0) and abs(v) < 1e4 else f"{v:.2e}"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(fmt(u) for u in v) + "]"
        return str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[j]) for row in cells)) if cells else len(c) for j, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
