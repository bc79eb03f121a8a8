"""Chip-in-the-loop progressive fine-tuning (Wan et al., NeuRRAM, Nature 2022, Fig. 4d, Ext. Data Fig. 8).

Programming a network onto a chip costs accuracy: every device lands off its target.
NeuRRAM recovers part of that loss layer by layer. For layer k = 1..N:

1. program layer k (its current weights) onto the chip;
2. read it back: from now on layer k runs with the weights the chip holds, frozen;
3. fine-tune the layers not yet programmed, k+1..N, on the training data, with the
   inputs they see computed through layers 1..k as the chip holds them (and with the
   device noise of the preset injected into their own weights, TRICE Alg. 1, so they
   stay robust for their own programming);
4. go on with layer k+1, which is now programmed with its fine-tuned weights.

The later layers thus learn to correct the errors the chip made in the earlier ones.
The comparison without fine-tuning programs the original network onto other tiles of
the same chip and evaluates it with layers 1..k from the chip and the rest in
software, for every k (NeuRRAM's "without fine-tuning" curve).

Everything the chip contributes goes through the backend (``program``/``read``),
and the training is deterministic given ``seed`` (seeded shuffling and noise), so a
session recorded with :class:`~xbar.hil.RecordingBackend` replays exactly through
:class:`~xbar.hil.ReplayBackend`. The chip's layer outputs come from read-back
weights (the chip's ``mvm`` is not used).
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from xbar.errors import InputError
from xbar.hil.evaluate import evaluate
from xbar.hil.protocol import CrossbarBackend
from xbar.hil.session import HilSession, program_model, read_weights, stored_copy, weight_parameters
from xbar.presets import device_model_of
from xbar.progress import progress_bar
from xbar.training.params import is_analog


@dataclass(frozen=True)
class FinetuneConfig:
    """How the not-yet-programmed layers are fine-tuned after each programming step.

    Args:
        epochs: passes over the training data after each layer (0: no fine-tuning).
        lr, momentum, weight_decay: SGD on the trainable layers.
        batch_size: training batch size.
        noise: inject the preset's device noise into the trainable weights (TRICE Alg. 1).
        sigma_scale: injected sigma over the preset's sigma.
        baseline: also program the original network (extra tiles) for the
            "without fine-tuning" accuracies.
    """

    epochs: int = 2
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    noise: bool = True
    sigma_scale: float = 1.0
    baseline: bool = True

    def check(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or not (self.lr > 0) or self.sigma_scale < 0:
            raise InputError(
                f"FinetuneConfig: epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr}, "
                f"sigma_scale={self.sigma_scale}: expected epochs >= 0, batch_size >= 1, lr > 0, sigma_scale >= 0"
            )


@dataclass
class FinetuneResult:
    """Accuracy after each programmed layer, with and without fine-tuning.

    ``rows[k]``: ``layer`` (weight name), ``programmed`` (layers on the chip, k+1),
    ``without`` (original network, layers 1..k+1 from the chip, the rest in software;
    None without a baseline), ``before_finetune`` (the fine-tuned network right after
    programming layer k+1) and ``with`` (after fine-tuning layers k+2..N; equal to
    ``before_finetune`` for the last layer). ``software`` and ``stored`` are the float
    and the quantized (noise-free) network's accuracies. ``model`` is the final network,
    every layer as the chip holds it.
    """

    rows: list[dict]
    software: float
    stored: float
    model: nn.Module
    sessions: list[HilSession] = field(default_factory=list)
    baseline: HilSession | None = None
    seed: int = 0

    @property
    def final_with(self) -> float:
        return self.rows[-1]["with"]

    @property
    def final_without(self) -> float | None:
        return self.rows[-1]["without"]

    @property
    def recovered(self) -> float | None:
        """Share of the accuracy lost to programming that fine-tuning won back: (with - without) / (stored - without)."""
        wo = self.final_without
        if wo is None or self.stored - wo <= 0:
            return None
        return (self.final_with - wo) / (self.stored - wo)

    def table(self) -> list[dict]:
        """Rows for :func:`xbar.cli.tables.format_table` (accuracies in %)."""
        pct = lambda v: None if v is None else round(100 * v, 2)  # noqa: E731
        return [
            {"layers on chip": r["programmed"], "layer": r["layer"], "without fine-tuning": pct(r["without"]),
             "programmed": pct(r["before_finetune"]), "with fine-tuning": pct(r["with"])}
            for r in self.rows
        ]

    def to_dict(self) -> dict:
        wv = [s.summary().get("write_verify") for s in self.sessions]
        return {
            "seed": self.seed,
            "software_accuracy": self.software,
            "stored_accuracy": self.stored,
            "final_accuracy_with_finetuning": self.final_with,
            "final_accuracy_without_finetuning": self.final_without,
            "recovered_fraction": self.recovered,
            "layers": self.rows,
            "write_verify": [w for w in wv if w is not None],
            "tiles": sum(s.tiles_used for s in self.sessions) + (self.baseline.tiles_used if self.baseline else 0),
        }

    def plot(self, path: str | Path, force: bool = False) -> Path:
        """NeuRRAM Fig. 4d: accuracy vs layers programmed, with and without fine-tuning."""
        from xbar.evaluation.plots import _figure, _save

        fig, ax = _figure()
        k = [r["programmed"] for r in self.rows]
        if self.final_without is not None:
            ax.plot(k, [100 * r["without"] for r in self.rows], "o-", label="without fine-tuning")
        ax.plot(k, [100 * r["with"] for r in self.rows], "s-", label="with fine-tuning")
        ax.axhline(100 * self.stored, color="gray", ls="--", lw=1, label="stored weights (no device noise)")
        ax.set_xlabel("layers programmed onto the chip")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xticks(k)
        ax.set_title("chip-in-the-loop progressive fine-tuning")
        ax.legend()
        return _save(fig, path, force)


def finetune(
    model: nn.Module,
    backend: CrossbarBackend,
    preset,
    data,
    config: FinetuneConfig | None = None,
    seed: int = 0,
    tiles: Sequence[int] | None = None,
    progress: bool = False,
) -> FinetuneResult:
    """Program ``model`` layer by layer onto ``backend`` and fine-tune the rest after each layer.

    Args:
        model: a plain PyTorch network (Conv2d/Linear weights go onto the chip, biases
            stay digital); it is not modified.
        backend: the chip (emulated, recorded, replayed or an instrument).
        preset: the preset the network was trained for (mapping, injected noise).
        data: an ``xbar.data.DatasetSplit`` or a ``(train, test)`` pair of datasets
            or of ``(x, y)`` tensor pairs.
        config: fine-tuning settings (:class:`FinetuneConfig`).
        seed: seeds the shuffling and the injected noise.
        tiles: tile ids to use (default ``backend.tiles()``).
    """
    config = config or FinetuneConfig()
    config.check()
    train_set, test_set = _split(data)
    dm = device_model_of(preset)
    names = [n for n, _ in weight_parameters(model)]
    if not names:
        raise InputError(f"{type(model).__name__}: no Conv2d or Linear weights to program")
    if is_analog(model):
        raise InputError("finetune: expected a plain PyTorch model (not one from xbar.convert)")
    free = list(backend.tiles() if tiles is None else tiles)
    software = evaluate(model, test_set).accuracy
    stored = evaluate(stored_copy(model, dm), test_set).accuracy

    without: list[float | None] = [None] * len(names)
    baseline = None
    if config.baseline:
        baseline = program_model(model, backend, preset, tiles=free)
        free = free[baseline.tiles_used :]
        chip0 = {layer.name: read_weights(baseline, layer) for layer in baseline.layers}
        partial = copy.deepcopy(model)
        params = dict(weight_parameters(partial))
        for k, name in enumerate(names):
            _set(params[name], chip0[name])
            without[k] = evaluate(partial, test_set).accuracy

    work = copy.deepcopy(model)
    params = dict(weight_parameters(work))
    gen = torch.Generator().manual_seed(int(seed))
    sessions: list[HilSession] = []
    rows: list[dict] = []
    bar = progress_bar(len(names), "layers", progress, unit="layer", leave=False)
    for k, name in enumerate(names):
        session = program_model(work, backend, preset, layers=[name], tiles=free)
        free = free[session.tiles_used :]
        sessions.append(session)
        _set(params[name], read_weights(session, name))
        _freeze(work, names[: k + 1])
        before = evaluate(work, test_set).accuracy
        after = before
        if k + 1 < len(names) and config.epochs > 0:
            _train(work, dm, names[k + 1 :], train_set, config, gen)
            after = evaluate(work, test_set).accuracy
        rows.append({"layer": name, "programmed": k + 1, "without": without[k], "before_finetune": before, "with": after})
        bar.update(1)
    bar.close()
    annotate = getattr(backend, "annotate", None)
    if callable(annotate):
        annotate("finetune", {"seed": int(seed), "layers": names, "config": asdict(config)})
    for p in work.parameters():
        p.requires_grad_(True)
    return FinetuneResult(rows, software, stored, work.eval(), sessions, baseline, int(seed))


def _set(param: torch.Tensor, value: torch.Tensor) -> None:
    with torch.no_grad():
        param.copy_(value.to(dtype=param.dtype, device=param.device))


def _owner(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _freeze(model: nn.Module, programmed: Sequence[str]) -> None:
    """No gradient for the programmed layers (their weights and biases)."""
    for name in programmed:
        for p in model.get_submodule(_owner(name)).parameters(recurse=False):
            p.requires_grad_(False)


def _train(model: nn.Module, dm, trainable: Sequence[str], train_set, config: FinetuneConfig, gen: torch.Generator) -> None:
    """``config.epochs`` of SGD (with device-noise injection) on the parameters that still have gradients."""
    from xbar.training.injection import NoiseInjection
    from xbar.training.params import NoisyParam

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    weights = dict(weight_parameters(model))
    targets = [NoisyParam(n, weights[n], dm) for n in trainable]
    step = NoiseInjection(opt, targets, sigma_scale=config.sigma_scale if config.noise else 0.0, generator=gen)
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=gen)
    model.train()
    for _ in range(config.epochs):
        for x, y in loader:
            def closure(x=x, y=y):
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                return loss

            step.step(closure)
    model.eval()


def _split(data) -> tuple[Dataset, Dataset | tuple]:
    """(train dataset, test data) from a DatasetSplit or a (train, test) pair."""
    if hasattr(data, "train") and hasattr(data, "test"):
        return data.train, data.test
    if isinstance(data, tuple | list) and len(data) == 2:
        train, test = data
        if isinstance(train, tuple | list):
            train = TensorDataset(*train)
        return train, (tuple(test) if isinstance(test, list) else test)
    raise InputError(f"finetune: data of type {type(data).__name__}: expected a DatasetSplit or a (train, test) pair")


def seed_statistics(results: Sequence[FinetuneResult]) -> dict:
    """Mean and sample std over seeds of the final accuracies and of the paired gain."""
    def stats(xs: list[float]) -> dict:
        return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "values": xs}

    w = [r.final_with for r in results]
    wo = [r.final_without for r in results]
    if any(v is None for v in wo):
        raise InputError("seed_statistics: every result needs a baseline (FinetuneConfig.baseline=True)")
    return {
        "with": stats(w),
        "without": stats(wo),
        "gain": stats([a - b for a, b in zip(w, wo)]),
        "stored": stats([r.stored for r in results]),
    }
