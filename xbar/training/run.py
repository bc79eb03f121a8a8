"""``train()``: one training run end to end, with an optional run directory.

A run directory holds ``manifest.json`` (model, data, preset, algorithm, seed,
every hyper-parameter, metrics), ``metrics.jsonl`` (one JSON line per epoch),
``checkpoint.pt`` (plain tensors, written every epoch and every
``checkpoint_every`` steps) and, at the end, ``model.pt``: the state dict of the
digital network of ``xbar.models.build`` (weights exported from the tiles for a
converted model), loadable with ``torch.load(..., weights_only=True)``.

Every input is checked (hyper-parameter ranges, device, preset, data set, model)
before the directory is written. A run that stops before its first checkpoint
removes what it wrote; one that stops later keeps its checkpoint and marks the
manifest ``failed``. A directory left by a run killed before its first checkpoint
(manifest ``running``, its process gone, no checkpoint) is started over without
``force``.
"""

from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xbar.errors import InputError, first_line
from xbar.evaluation import kpp
from xbar.evaluation import monte_carlo as study_monte_carlo
from xbar.fileio import atomic_torch_save, atomic_write_json, atomic_write_text
from xbar.mapping import default_activation_bits, default_weight_bits, quantize_activations
from xbar.presets import resolve as resolve_preset
from xbar.training.base import make_optimizer
from xbar.training.checkpoint import load_checkpoint, save_checkpoint, tensor_state
from xbar.training.dat import DAT
from xbar.training.distributed import start as start_parallel
from xbar.training.injection import NoiseInjection
from xbar.training.params import (
    NoisyParam,
    derive_seed,
    is_analog,
    make_generator,
    noisy_parameters,
    other_parameters,
)
from xbar.training.sam import SAM
from xbar.training.swa import SWA
from xbar.training.trainer import Batches, StepRunner, Trainer, TriceRunner, clean_accuracy, lr_at
from xbar.training.trice import TRICE
from xbar.training.wvat import WVAT

ALGOS = ("sgd", "noise", "trice", "dat-fast", "dat-full", "wvat", "sam", "swa")
RUN_FORMAT = "xbar-run"
MANIFEST, METRICS, CHECKPOINT, MODEL = "manifest.json", "metrics.jsonl", "checkpoint.pt", "model.pt"


@dataclass(frozen=True)
class Hyper:
    """One hyper-parameter: its type, default and meaning."""

    type: type
    default: Any
    help: str


_SGD = {"epochs": 100, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128, "schedule": "cosine"}
#: The papers' optimizer schedules per algorithm (TRICE Sec. IV-B, DAT Sec. IV-A, WVAT Sec. 4).
PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": _SGD,
    "noise": _SGD,
    "trice": _SGD,
    "sam": _SGD,
    "dat-fast": {"epochs": 200, "lr": 0.015, "momentum": 0.9, "weight_decay": 2e-4, "batch_size": 128, "schedule": "step"},
    "dat-full": {"epochs": 200, "lr": 0.015, "momentum": 0.9, "weight_decay": 2e-4, "batch_size": 128, "schedule": "step"},
    "wvat": {"epochs": 200, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128, "schedule": "cosine"},
    "swa": {"epochs": 200, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128, "schedule": "cosine"},
}

COMMON: dict[str, Hyper] = {
    "lr": Hyper(float, None, "learning rate (the beta of DAT Algorithm 1 for dat-fast and dat-full)"),
    "momentum": Hyper(float, None, "SGD momentum"),
    "weight_decay": Hyper(float, None, "SGD weight decay"),
    "batch_size": Hyper(int, None, "batch size"),
    "schedule": Hyper(str, None, "learning-rate schedule: cosine, step or constant"),
    "step_size": Hyper(int, 10, "epochs between decays of the step schedule"),
    "step_gamma": Hyper(float, 0.8, "decay factor of the step schedule (DAT: 0.8 every 10 epochs)"),
    "act_bits": Hyper(int, None, "activation bits (default: TRICE's 4 for lenet, 6 for vgg8/resnet18, else none)"),
    "weight_bits": Hyper(int, None, "stored weight bits H, the preset's weight_bits overridden (default: TRICE's 4 "
                         "for lenet, 6 for vgg8/resnet18, else the preset's; 0: analog)"),
    "quantize_weights": Hyper(bool, True, "train with the H-bit stored weights in the forward (straight-through)"),
    "convert": Hyper(bool, False, "train the aihwkit model from xbar.convert instead of the plain one"),
    "device": Hyper(str, "cpu", "torch device"),
    "checkpoint_every": Hyper(int, 50, "also checkpoint every this many steps inside an epoch (0: epoch ends only)"),
    "eval_mc": Hyper(int, 0, "Monte Carlo instances for the per-epoch test KPP (0: none)"),
    "eval_q": Hyper(float, 0.01, "percentile q of the reported KPP (0.01: 1st percentile)"),
    "data_root": Hyper(str, None, "directory of MNIST/CIFAR files"),
    "split_seed": Hyper(int, None, "seed of the train/test split of mnist5k/digits (default: the run's seed)"),
    "split": Hyper(str, None, "split of mnist5k/digits: stratified (default) or random (unstratified)"),
    "train_fraction": Hyper(float, None, "share of mnist5k/digits in the training part (default 0.8)"),
    "normalize": Hyper(str, None, "input normalisation: default (the data set's), none (pixels in [0, 1]) or "
                       "MEAN/STD per channel, e.g. 0.1307/0.3081"),
    "progress": Hyper(bool, None, "a line per epoch on stderr and a bar within it (default; False: silent)"),
}

ALGO_HYPER: dict[str, dict[str, Hyper]] = {
    "sgd": {},
    "noise": {
        "family": Hyper(str, None, "injection family (default: the preset's)"),
        "threshold": Hyper(float, None, "threshold th of a censored/truncated family (default: the preset's)"),
        "sigma_scale": Hyper(float, 1.0, "injected sigma / device sigma_d"),
    },
    "trice": {
        "start": Hyper(float, 0.0, "search start, units of sigma_d (Alg. 3)"),
        "end": Hyper(float, 2.0, "search end, units of sigma_d (paper: 2 sigma_d)"),
        "th": Hyper(float, 2.0, "RC-Gaussian threshold (Eq. 10)"),
        "warm": Hyper(int, 5, "warm-up epochs"),
        "n_train": Hyper(int, 300, "Monte Carlo instances per KPP ranking (N_train)"),
        "q": Hyper(float, 0.01, "percentile of the ranking KPP (k/100)"),
        "tol": Hyper(float, 1e-4, "merge the models when |end - start| <= tol"),
        "kpp_images": Hyper(int, 0, "training images the ranking KPP uses (0: all, as the paper)"),
    },
    "dat-fast": {
        "alpha": Hyper(float, 150.0, "perturbation step (Alg. 1 line 10); no value in the paper, see docs/training.md"),
        "p": Hyper(int, 1, "perturbations per step"),
        "rank": Hyper(int, 10, "k of the low-rank noise directions per tile"),
        "layers": Hyper(str, "last", "perturbed layers: last (the last Linear), all, or comma-separated names"),
        "correlated": Hyper(bool, True, "include the preset's correlated component"),
        "independent": Hyper(bool, True, "include the preset's independent per-weight noise"),
    },
    "wvat": {
        "sigma_v": Hyper(float, 0.1, "HSV sigma relative to the layer range A"),
        "gamma": Hyper(float, 1.0, "range coefficient"),
        "w_th": Hyper(float, 0.5, "HSV if x < w_th, else GAV"),
        "alpha": Hyper(float, 0.1, "GAV step length"),
        "p": Hyper(float, 1.0, "probability that a batch is perturbed"),
        "swa": Hyper(bool, True, "stochastic weight averaging on top"),
        "swa_start": Hyper(float, 0.75, "fraction of the epochs before averaging starts"),
        "swa_lr": Hyper(float, None, "learning rate of the averaging phase (default: lr / 2)"),
    },
    "sam": {"rho": Hyper(float, 0.05, "neighbourhood radius")},
    "swa": {
        "swa_start": Hyper(float, 0.75, "fraction of the epochs before averaging starts"),
        "swa_lr": Hyper(float, None, "learning rate of the averaging phase (default: lr / 2)"),
    },
}
ALGO_HYPER["dat-full"] = {k: v for k, v in ALGO_HYPER["dat-fast"].items() if k != "rank"}


def hyper_spec(algo: str) -> dict[str, Hyper]:
    """Every hyper-parameter ``algo`` accepts (common ones first)."""
    check_algo(algo)
    return {**COMMON, **ALGO_HYPER[algo]}


def check_algo(algo: str) -> None:
    if algo not in ALGOS:
        raise InputError(f"algo {algo!r}: expected one of {', '.join(ALGOS)}")


def parse_value(algo: str, key: str, text: str) -> Any:
    """Convert a command-line string to the type of hyper-parameter ``key``."""
    spec = hyper_spec(algo)
    if key not in spec:
        raise InputError(f"--hp {key}: unknown for algo {algo!r}; expected one of {', '.join(spec)}")
    t = spec[key].type
    try:
        if t is bool:
            low = text.strip().lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError
            return low in ("1", "true", "yes", "on")
        return t(text)
    except ValueError:
        raise InputError(f"--hp {key}={text!r}: expected {'true/false' if t is bool else t.__name__}") from None


def resolve(algo: str, epochs: int | None, hyper: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(epochs, every hyper-parameter) with the paper defaults filled in; InputError on a bad one."""
    spec = hyper_spec(algo)
    unknown = [k for k in hyper if k not in spec]
    if unknown:
        raise InputError(f"{unknown[0]}: unknown hyper-parameter for algo {algo!r}; expected one of {', '.join(spec)}")
    paper = PAPER_DEFAULTS[algo]
    out: dict[str, Any] = {}
    for k, h in spec.items():
        v = hyper.get(k, None)
        if v is None:
            v = paper.get(k, h.default)
        if v is not None and h.type is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if v is not None and not isinstance(v, h.type):
            raise InputError(f"{k} = {v!r}: expected {h.type.__name__}")
        out[k] = v
    epochs = paper["epochs"] if epochs is None else epochs
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise InputError(f"epochs = {epochs!r}: expected a positive integer")
    _validate(algo, epochs, out)
    if algo in ("wvat", "swa") and out["swa_lr"] is None:
        out["swa_lr"] = out["lr"] / 2
    return epochs, out


#: Lowest threshold th (in sigmas) of an injection family: below it P(g < th) < 1e-6, so a
#: censored family replaces nearly every draw by th (a constant shift, not noise) and a
#: truncated one has no mass left (``xbar.devices.NoiseFamily`` refuses it).
MIN_THRESHOLD = -4.7


def _validate(algo: str, epochs: int, h: dict[str, Any]) -> None:
    """Range checks of every hyper-parameter; the first bad one raises a one-line InputError."""

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise InputError(f"{key} = {h[key]!r}: expected {what}")

    spec = hyper_spec(algo)
    for key, value in h.items():
        if spec[key].type is float and value is not None:
            need(math.isfinite(value), key, "a finite number")
    need(h["lr"] > 0, "lr", "> 0")
    need(0 <= h["momentum"] < 1, "momentum", "in [0, 1)")
    need(h["weight_decay"] >= 0, "weight_decay", ">= 0")
    need(h["batch_size"] >= 1, "batch_size", ">= 1")
    need(h["schedule"] in ("cosine", "step", "constant"), "schedule", "cosine, step or constant")
    need(h["step_size"] >= 1, "step_size", ">= 1")
    need(h["step_gamma"] > 0, "step_gamma", "> 0")
    need(h["checkpoint_every"] >= 0, "checkpoint_every", ">= 0")
    need(h["eval_mc"] >= 0, "eval_mc", ">= 0")
    need(0 < h["eval_q"] < 1, "eval_q", "a probability in (0, 1)")
    need(h["act_bits"] is None or 0 <= h["act_bits"] <= 16, "act_bits", "0 to 16")
    need(h["weight_bits"] is None or 0 <= h["weight_bits"] <= 16, "weight_bits", "0 (analog) to 16")
    from xbar.data.sources import check_options

    check_options(h["split"], h["train_fraction"], h["normalize"])
    _check_device(h["device"])
    if algo == "trice":
        need(h["start"] >= 0, "start", ">= 0")
        need(h["end"] >= h["start"], "end", f">= start ({h['start']})")
        need(h["th"] >= MIN_THRESHOLD, "th", f">= {MIN_THRESHOLD} (sigmas)")
        _check_family("right-censored", h["th"], "th")
        need(h["warm"] >= 0, "warm", ">= 0")
        need(h["n_train"] >= 1, "n_train", ">= 1")
        need(0 < h["q"] < 1, "q", "a probability in (0, 1)")
        need(h["tol"] >= 0, "tol", ">= 0")
        need(h["kpp_images"] >= 0, "kpp_images", ">= 0 (0: all)")
    if algo in ("dat-fast", "dat-full"):
        need(h["alpha"] >= 0, "alpha", ">= 0")
        need(h["p"] >= 1, "p", ">= 1")
        if algo == "dat-fast":
            need(h["rank"] >= 1, "rank", ">= 1")
    if algo == "wvat":
        need(0 <= h["w_th"] <= 1, "w_th", "a probability in [0, 1]")
        need(0 <= h["p"] <= 1, "p", "a probability in [0, 1]")
        need(h["sigma_v"] >= 0, "sigma_v", ">= 0")
        need(h["gamma"] >= 0, "gamma", ">= 0")
        need(h["alpha"] >= 0, "alpha", ">= 0")
    if algo in ("wvat", "swa"):
        need(0 <= h["swa_start"] <= 1, "swa_start", "a fraction in [0, 1]")
        need(h["swa_lr"] is None or h["swa_lr"] > 0, "swa_lr", "> 0")
    if algo == "sam":
        need(h["rho"] >= 0, "rho", ">= 0")
    if algo == "noise":
        from xbar.devices import FAMILIES

        need(h["family"] is None or h["family"] in FAMILIES, "family", f"one of {', '.join(FAMILIES)}")
        need(h["threshold"] is None or h["threshold"] >= MIN_THRESHOLD, "threshold", f">= {MIN_THRESHOLD} (sigmas)")
        need(h["sigma_scale"] >= 0, "sigma_scale", ">= 0")


def _check_family(kind: str, threshold: float, key: str):
    """``NoiseFamily(kind, threshold)``; its ValueError as a one-line InputError naming ``key``."""
    from xbar.devices import NoiseFamily

    try:
        return NoiseFamily(kind, threshold)
    except ValueError as exc:
        raise InputError(f"{key} = {threshold!r} with family {kind!r}: {exc}") from None


def _check_device(name: str) -> torch.device:
    """``torch.device(name)``, checked to be usable here (InputError otherwise)."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise InputError(f"device = {name!r}: expected a torch device such as cpu, cuda or cuda:1") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device = {name!r}: CUDA is not available")
    try:
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError) as exc:
        first = first_line(exc)
        raise InputError(f"device = {name!r}: not usable here ({first})") from None
    return dev


# ------------------------------------------------------------------------ helpers
def _with_weight_bits(preset, model_name: str, bits: int | None):
    """``(preset, H)``: the preset with ``[mapping].weight_bits`` = H, H = ``bits`` or TRICE's
    per-network default (:func:`xbar.mapping.default_weight_bits`)."""
    current = preset.mapping.weight_bits
    bits = default_weight_bits(model_name, current) if bits is None else bits
    if bits != current:
        preset = preset.with_overrides(origin=f"weight_bits = {bits}", weight_bits=bits)
    return preset, bits


def _injection_family(algo: str, preset, h: dict[str, Any]):
    """The injection family of ``noise`` given ``family``/``threshold`` (None: each device's own),
    checked here so that a bad pair fails before the run starts."""
    if algo != "noise" or (h["family"] is None and h["threshold"] is None):
        return None
    from xbar.devices import NoiseFamily

    base = preset.injection or NoiseFamily()
    kind = h["family"] or base.kind
    return _check_family(kind, base.threshold if h["threshold"] is None else h["threshold"], "threshold")


def _preset_label(preset) -> str:
    if isinstance(preset, str | os.PathLike):
        p = Path(preset)
        return str(p.resolve()) if p.suffix == ".toml" and p.exists() else str(preset)
    return preset.name


def build_network(model_name, split) -> nn.Module:
    """A fresh network of model spec ``model_name`` (any form, see ``xbar.models.resolve``) for ``split``'s data."""
    from xbar import models

    return models.resolve(model_name).build(split.in_channels, split.num_classes, split.image_size)


def load_data(data, h: dict[str, Any], seed: int):
    """``(DatasetSplit, data_spec)`` of a data spec (name, ``npz:FILE``, ``imagefolder:DIR``), a
    ``DatasetSplit`` or a ``(train, test)`` pair of datasets; ``data_spec`` is what the manifest records."""
    from xbar import data as xdata

    opts = {k: h[k] for k in ("split", "train_fraction", "normalize")}
    if isinstance(data, xdata.DatasetSplit) or isinstance(data, tuple | list):
        if any(v is not None for v in opts.values()) or h["split_seed"] is not None:
            raise InputError("split_seed, split, train_fraction, normalize: apply to data specs, not to datasets "
                             "given from Python")
        split = data if isinstance(data, xdata.DatasetSplit) else _pair(data)
        return split, {"kind": "python", "name": split.name}
    split_seed = seed if h["split_seed"] is None else h["split_seed"]
    split = xdata.load(data, h["data_root"], split_seed, **opts)
    record: dict[str, Any] = {"kind": xdata.sources.parse(data)[0], "spec": split.name, "split_seed": split_seed,
                              **{k: v for k, v in opts.items() if v is not None}}
    if record["kind"] == "npz":
        from xbar.fileio import sha256_of

        record["sha256"] = sha256_of(split.name.split(":", 1)[1])
    return split, record


def _pair(data):
    from xbar import data as xdata

    if len(data) != 2:
        raise InputError(f"data: a sequence of {len(data)} items; expected (train_dataset, test_dataset)")
    return xdata.from_datasets(*data)


def digital_copy(model: nn.Module, blank: nn.Module) -> nn.Module:
    """``blank`` (a freshly built plain network) holding the weights of ``model``.

    Analog layers export their weights with ``get_weights()``; the other tensors
    (batch norm...) are copied by name from the tensors-only state.
    """
    with torch.no_grad():
        if not is_analog(model):
            blank.load_state_dict(tensor_state(model))
            return blank
        from xbar import tiles

        dst_state = blank.state_dict()
        for k, v in tiles.clean_state_dict(model).items():
            if k in dst_state and dst_state[k].shape == v.shape:
                dst_state[k].copy_(v)
        for name, layer in tiles.xbar_layers(model):
            w, b = layer.get_weights()
            dst = blank.get_submodule(name)
            dst.weight.copy_(w.reshape(dst.weight.shape))
            if b is not None and getattr(dst, "bias", None) is not None:
                dst.bias.copy_(b.reshape(dst.bias.shape))
    return blank


def _spec(preset) -> dict[str, Any] | None:
    """The preset as JSON data (overrides included), or None if it does not serialize."""
    try:
        return json.loads(json.dumps(preset.to_dict(), default=str))
    except (TypeError, ValueError):
        return None


def _check_force(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    if not out.exists() or force or not any(out.iterdir()) or _abandoned_start(out):
        return
    raise InputError(f"{out}: run directory already exists; pass --force to overwrite it or --resume to continue it (force=True, resume=True from Python)")


def _abandoned_start(out: Path) -> bool:
    """Whether ``out`` holds only what a run killed before its first checkpoint leaves behind:
    our manifest (status running) and maybe metrics, no checkpoint or model, and the
    process that wrote it gone (same host, pid no longer running). Such a directory is
    started over without --force."""
    names = {p.name for p in out.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))}
    if MANIFEST not in names or not names <= {MANIFEST, METRICS}:
        return False
    try:
        man = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(man, dict) or man.get("format") != RUN_FORMAT or man.get("status") != "running":
        return False
    pid = man.get("pid")
    if man.get("host") != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool):
        return False  # cannot tell whether it still runs
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


# --------------------------------------------------------------------------- train
def train(
    model_name: str | os.PathLike | nn.Module,
    data_name: Any,
    preset,
    algo: str,
    epochs: int | None = None,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    **hyper: Any,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train ``model_name`` on ``data_name`` with ``algo`` against ``preset``.

    ``model_name`` is any model spec (a zoo name, ``torchvision:NAME``, ``FILE.py:FACTORY``,
    ``package.module:FACTORY``) or an ``nn.Module`` (trained as a copy; the instance is left
    as it was). ``data_name`` is a data spec (a name, ``npz:FILE``, ``imagefolder:DIR``), a
    ``DatasetSplit`` or a ``(train, test)`` pair of datasets; ``split_seed``, ``split``,
    ``train_fraction`` and ``normalize`` (hyper-parameters) shape a data spec's data.

    Returns ``(model, history)``: the trained model (the SWA average for SWA/WVAT,
    TRICE's final model; an aihwkit model if ``convert=True``) and one metrics dict
    per epoch. ``hyper`` takes the keys of :func:`hyper_spec` (``lr``, ``batch_size``,
    ``rho``, ``alpha``, ...); unset ones take the papers' defaults. With ``out`` the
    run is written to that directory (see the module docstring); ``resume``
    continues it from its last checkpoint, ``force`` overwrites it.
    """
    from xbar import models
    from xbar.data.sources import normalize_text

    check_algo(algo)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed = {seed!r}: expected an integer")
    if hyper.get("normalize") is not None:
        hyper["normalize"] = normalize_text(hyper["normalize"])
    epochs, h = resolve(algo, epochs, hyper)
    source = models.resolve(model_name)
    split, data_spec = load_data(data_name, h, seed)
    preset_obj = resolve_preset(preset)
    label = _preset_label(preset)
    preset_obj, h["weight_bits"] = _with_weight_bits(preset_obj, source.spec, h["weight_bits"])
    family = _injection_family(algo, preset_obj, h)
    spec = _spec(preset_obj)
    outdir = Path(out) if out is not None else None
    ckpt = None
    if outdir is not None:
        if resume:
            ckpt = _prepare_resume(outdir, source, split.name, label, algo, seed, epochs, h, spec)
        else:
            _check_force(outdir, force)
    elif resume:
        raise InputError("resume: needs a run directory (out)")

    # Everything that can refuse the input runs before the run directory is touched.
    dev = _check_device(h["device"])
    parallel = start_parallel(dev, seed, h["convert"])  # under torchrun: DDP, rank 0 writes
    if parallel is not None:
        dev = parallel.device
    torch.manual_seed(derive_seed(seed, "init"))
    net = build_network(source, split)
    model = net
    if h["convert"]:
        import xbar

        model = xbar.convert(net, preset_obj)
    model = model.to(dev)
    act_bits = default_activation_bits(source.spec) if h["act_bits"] is None else h["act_bits"]
    quantize_activations(model, act_bits)

    train_b = Batches(split.train, dev)
    test_b = Batches(split.test, dev)
    runner = _build_runner(algo, model, preset_obj, h, epochs, seed, dev, train_b, source, split, act_bits,
                           family)

    swa_start = None
    if algo in ("wvat", "swa") and (algo == "swa" or h["swa"]):
        swa_start = int(math.floor(h["swa_start"] * epochs))

    def lr_of(e: int) -> float:
        return lr_at(e, epochs, h["lr"], h["schedule"], h["step_size"], h["step_gamma"],
                     swa_start, h.get("swa_lr") if swa_start is not None else None)

    evaluate = None
    if h["eval_mc"] > 0:
        def evaluate(m, targets, epoch):
            x, y = trainer.test_tensors()
            accs = _mc(m, source, split, preset_obj, act_bits, x, y, h["eval_mc"],
                       derive_seed(seed, "eval-mc", epoch))
            return {"test_kpp": _kpp(accs, h["eval_q"]), "test_mc_mean": float(accs.mean()), "kpp_q": h["eval_q"]}

    manifest = {
        "format": RUN_FORMAT,
        "version": 1,
        "status": "running",
        "model": source.spec,
        "model_spec": source.to_dict(),
        "data": split.name,
        "data_spec": data_spec,
        "in_channels": split.in_channels,
        "num_classes": split.num_classes,
        "image_size": split.image_size,
        "preset": label,
        "algo": algo,
        "seed": seed,
        "epochs": epochs,
        "act_bits": act_bits,
        "weight_bits": h["weight_bits"],
        "hyper": h,
        "metrics": {},
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    if spec is not None:
        manifest["preset_spec"] = spec
    if parallel is not None:
        manifest["processes"] = parallel.world

    if parallel is not None:
        parallel.barrier()  # every rank has checked the input (and read the checkpoint) before rank 0 writes
        if not parallel.is_main:
            outdir = None

    def write_metrics(history):
        if outdir is not None:
            atomic_write_text(outdir / METRICS, "".join(json.dumps(r) + "\n" for r in history), force=True)

    def write_checkpoint(state):
        if outdir is not None:
            save_checkpoint(outdir / CHECKPOINT, state)

    trainer = Trainer(runner, train_b, test_b, epochs, h["batch_size"], seed, lr_of, evaluate,
                      write_checkpoint if outdir is not None else None, write_metrics,
                      h["checkpoint_every"], h["progress"], parallel)
    created = False
    if ckpt is not None:
        trainer.load_state_dict(ckpt)
        if outdir is not None:
            _update_manifest(outdir, status="running", error=None, pid=os.getpid(), host=socket.gethostname())
    elif outdir is not None:
        created = not outdir.exists()
        outdir.mkdir(parents=True, exist_ok=True)
        for name in (METRICS, CHECKPOINT, MODEL):
            if (outdir / name).exists():
                (outdir / name).unlink()
        atomic_write_json(outdir / MANIFEST, manifest, force=True)

    try:
        history = trainer.fit()
        final = runner.final(lambda: train_b.batches(torch.arange(len(train_b)), h["batch_size"],
                                                     seed=derive_seed(seed, "update-bn")))
        final.eval()
        fm, ft = final, _targets_of(final, preset_obj, h)
        xt, yt = trainer.test_tensors()
        metrics: dict[str, Any] = {"test_acc": clean_accuracy(fm, ft, xt, yt), "epochs_done": len(history)}
        if h["eval_mc"] > 0:
            accs = _mc(final, source, split, preset_obj, act_bits, xt, yt, h["eval_mc"],
                       derive_seed(seed, "eval-mc", "final"))
            metrics.update(test_kpp=_kpp(accs, h["eval_q"]), test_mc_mean=float(accs.mean()), kpp_q=h["eval_q"])
        if history:
            metrics["train_loss"] = history[-1]["train_loss"]
            metrics["time_s"] = history[-1]["time_s"]
        if outdir is not None:
            blank = build_network(source, split)
            state = tensor_state(digital_copy(final, blank).cpu())
            atomic_torch_save(outdir / MODEL, state, force=True)
            manifest.update(status="done", metrics=metrics)
            manifest.pop("pid")
            manifest.pop("host")
            atomic_write_json(outdir / MANIFEST, manifest, force=True)
    except BaseException as exc:
        if outdir is not None:
            _after_failure(outdir, created, exc)
        raise
    if parallel is not None:
        parallel.barrier()  # the run directory is complete when any rank returns
    return final, history


def _update_manifest(outdir: Path, **fields: Any) -> None:
    """Rewrite some fields of the run's manifest (atomically); a missing or broken one is left alone."""
    try:
        man = json.loads((outdir / MANIFEST).read_text())
    except (OSError, ValueError):
        return
    if isinstance(man, dict):
        for key, value in fields.items():
            if value is None:
                man.pop(key, None)
            else:
                man[key] = value
        atomic_write_json(outdir / MANIFEST, man, force=True)


def _after_failure(outdir: Path, created: bool, exc: BaseException) -> None:
    """A run that stopped on ``exc``: with no checkpoint yet, remove what it wrote (so that a
    retry needs no --force); else keep the checkpoint and mark the manifest failed."""
    if not (outdir / CHECKPOINT).exists():
        for name in (MANIFEST, METRICS):
            (outdir / name).unlink(missing_ok=True)
        if created:
            try:
                outdir.rmdir()
            except OSError:  # something else was put there meanwhile
                pass
        return
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    _update_manifest(outdir, status=status, error=f"{type(exc).__name__}: {first}" if first else type(exc).__name__,
                     pid=None, host=None)


def _prepare_resume(outdir: Path, source, data_name, label, algo, seed, epochs, h, spec=None) -> dict[str, Any]:
    mpath = outdir / MANIFEST
    if not mpath.is_file():
        raise InputError(f"{mpath}: no manifest; nothing to resume (start without --resume)")
    try:
        man = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{mpath}: unreadable manifest ({exc})") from None
    given = {"model": source.spec, "data": data_name, "preset": label, "algo": algo, "seed": seed, "epochs": epochs}
    changed = source.changed(man.get("model_spec"))
    if changed:
        raise InputError(f"{mpath}: {changed}; resume with the code the run started with (or start a new run)")
    if spec is not None and man.get("preset_spec") is not None and man["preset_spec"] != spec:
        raise InputError(f"{mpath}: preset_spec differs from preset {label!r} as given now; resume with the run's preset")
    for key, value in given.items():
        if man.get(key) != value:
            raise InputError(f"{mpath}: {key} = {man.get(key)!r}, but this run asks for {value!r}; resume with the same settings")
    for key, value in h.items():
        if key in ("progress", "device"):
            continue
        if man.get("hyper", {}).get(key) != value:
            raise InputError(
                f"{mpath}: hyper-parameter {key} = {man.get('hyper', {}).get(key)!r}, but this run asks for {value!r}; "
                "resume with the same settings"
            )
    return load_checkpoint(outdir / CHECKPOINT)


def _targets_of(model: nn.Module, preset, h: dict[str, Any]) -> list[NoisyParam]:
    targets = noisy_parameters(model, preset)
    if not h["quantize_weights"]:
        for t in targets:
            t.quantize = False
    return targets


def _mc(model, model_name, split, preset, act_bits, x, y, n, seed) -> torch.Tensor:
    """Accuracies of ``n`` weight-space Monte Carlo instances (TRICE Alg. 2).

    Runs ``xbar.evaluation.monte_carlo`` on the digital network (a copy holding the
    tile weights for a converted model, with the same activation quantization).
    """
    if is_analog(model):
        blank = build_network(model_name, split).to(x.device)
        model = digital_copy(model, blank)
        quantize_activations(model, act_bits)
    was = model.training
    try:
        res = study_monte_carlo(model, (x, y), preset, n=n, seed=seed, metrics=("accuracy",), progress=False,
                                device=x.device, rule="trice")
    finally:
        model.train(was)
    return torch.as_tensor(res.values("accuracy"), dtype=torch.float64)


def _kpp(accs: torch.Tensor, q: float) -> float:
    """The q-quantile (a fraction) of Monte Carlo accuracies by TRICE Algorithm 2's index
    (``perf[floor(q N)]``, ``xbar.evaluation.kpp`` with ``rule="trice"``)."""
    return kpp(accs.numpy(), 100.0 * q, rule="trice")


def _build_runner(algo, model, preset, h, epochs, seed, dev, train_b, model_name, split, act_bits, family=None):
    analog = is_analog(model)
    if analog and algo not in ("noise", "trice"):
        from xbar import tiles

        tiles.set_injection(model, enabled=False)

    def opt_of(m):
        return make_optimizer(m, h["lr"], h["momentum"], h["weight_decay"])

    def gen(*keys):
        return make_generator(seed, dev, algo, *keys)

    if algo == "trice":
        x, y = train_b.all(h["kpp_images"] or None, seed)

        def evaluate_kpp(m, epoch):
            s = derive_seed(seed, "trice-kpp", epoch)  # common random numbers for the three models
            return _kpp(_mc(m, model_name, split, preset, act_bits, x, y, h["n_train"], s), h["q"])

        from xbar.devices import NoiseFamily

        tr = TRICE(model, opt_of, lambda m: _targets_of(m, preset, h), evaluate_kpp,
                   h["start"], h["end"], h["th"], h["warm"], h["tol"], NoiseFamily("right-censored", h["th"]),
                   [gen(i) for i in range(3)])
        return TriceRunner(tr, lambda m: _targets_of(m, preset, h))

    targets = _targets_of(model, preset, h)
    opt = opt_of(model)
    others = other_parameters(model, targets)
    swa = None
    if algo == "sgd" or algo == "swa":
        step = NoiseInjection(opt, targets, None, 0.0, None, model)
        if algo == "swa":
            swa = SWA(model, int(math.floor(h["swa_start"] * epochs)))
    elif algo == "noise":
        step = NoiseInjection(opt, targets, family, h["sigma_scale"], gen(), model)
    elif algo in ("dat-fast", "dat-full"):
        layers = h["layers"]
        chosen = noisy_parameters(model, preset, layers)
        chosen_ids = {id(c.param) for c in chosen}
        dat_targets = [t for t in targets if id(t.param) in chosen_ids]
        rest = [t for t in targets if id(t.param) not in chosen_ids] + others
        step = DAT(opt, dat_targets, h["alpha"], h["p"], h["rank"] if algo == "dat-fast" else None, rest, gen(),
                   h["correlated"], h["independent"])
    elif algo == "wvat":
        step = WVAT(opt, targets, h["sigma_v"], h["gamma"], h["w_th"], h["alpha"], h["p"], others, gen())
        if h["swa"]:
            swa = SWA(model, int(math.floor(h["swa_start"] * epochs)))
    elif algo == "sam":
        step = SAM(opt, targets + others, h["rho"])
    else:  # pragma: no cover - check_algo guards
        raise InputError(f"algo {algo!r}")
    return StepRunner(model, step, targets, swa)
