"""``train()``: one training run end to end, with an optional run directory.

The hyper-parameters (names, defaults, checks) are the fields of the config
dataclasses of :mod:`xbar.training.config`; the run directory (``manifest.json``,
``metrics.jsonl``, ``checkpoint.pt``, ``model.pt``: the state dict of the digital
network, weights exported from the tiles for a converted model) is kept by
:class:`xbar.training.rundir.RunDir`. Every input is checked (hyper-parameter ranges,
device, preset, data set, model) before the directory is written. This module puts
them together: the data, the network, the algorithm's optimizer (:func:`_build_runner`),
the epoch loop and the Monte Carlo KPP of ``eval_mc`` and TRICE (TRICE Alg. 2).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xbar.devices.seeding import derive_seed
from xbar.errors import InputError
from xbar.evaluation import kpp
from xbar.evaluation import monte_carlo as study_monte_carlo
from xbar.mapping import default_activation_bits, default_weight_bits, quantize_activations
from xbar.presets import resolve as resolve_preset
from xbar.training.base import make_optimizer
from xbar.training.checkpoint import tensor_state
from xbar.training.config import (
    DATConfig,
    NoiseConfig,
    SAMConfig,
    SWAConfig,
    TRICEConfig,
    WVATConfig,
    check_algo,
    check_device,
    check_family,
    configs,
    resolve,
)
from xbar.training.dat import DAT
from xbar.training.distributed import start as start_parallel
from xbar.training.injection import NoiseInjection
from xbar.training.params import (
    NoisyParam,
    is_analog,
    make_generator,
    noisy_parameters,
    other_parameters,
)
from xbar.training.rundir import RunDir, check_force, new_manifest, prepare_resume
from xbar.training.sam import SAM
from xbar.training.swa import SWA
from xbar.training.trainer import (
    Batches,
    Schedule,
    StepRunner,
    Trainer,
    TriceRunner,
    clean_accuracy,
)
from xbar.training.trice import TRICE
from xbar.training.wvat import WVAT


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
    return check_family(kind, base.threshold if h["threshold"] is None else h["threshold"], "threshold")


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
        return json.loads(json.dumps(preset.to_dict(canonical=True), default=str))
    except (TypeError, ValueError):
        return None


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
    ckpt = None
    if out is not None:
        if resume:
            ckpt = prepare_resume(Path(out), source, split.name, label, algo, seed, epochs, h, spec)
        else:
            check_force(Path(out), force)
    elif resume:
        raise InputError("resume: needs a run directory (out)")

    # Everything that can refuse the input runs before the run directory is touched.
    dev = check_device(h["device"])
    parallel = start_parallel(dev, seed, h["convert"])  # under torchrun: DDP, rank 0 writes
    if parallel is not None:
        dev = parallel.device
    torch.manual_seed(derive_seed(seed, "init"))
    model = build_network(source, split)
    if h["convert"]:
        import xbar

        model = xbar.convert(model, preset_obj)
    model = model.to(dev)
    act_bits = default_activation_bits(source.spec) if h["act_bits"] is None else h["act_bits"]
    quantize_activations(model, act_bits)

    train_b = Batches(split.train, dev)
    test_b = Batches(split.test, dev)
    runner = _build_runner(algo, model, preset_obj, h, epochs, seed, dev, train_b, source, split, act_bits,
                           family)

    def mc_metrics(m, key) -> dict[str, Any]:
        """The test KPP of ``eval_mc`` Monte Carlo instances of ``m`` (seeded by ``key``)."""
        x, y = trainer.test_tensors()
        accs = _mc(m, source, split, preset_obj, act_bits, x, y, h["eval_mc"], derive_seed(seed, "eval-mc", key))
        return {"test_kpp": _kpp(accs, h["eval_q"]), "test_mc_mean": float(accs.mean()), "kpp_q": h["eval_q"]}

    manifest = new_manifest(
        model=source.spec, model_spec=source.to_dict(), data=split.name, data_spec=data_spec,
        in_channels=split.in_channels, num_classes=split.num_classes, image_size=split.image_size,
        preset=label, algo=algo, seed=seed, epochs=epochs, act_bits=act_bits, weight_bits=h["weight_bits"], hyper=h,
    )
    if spec is not None:
        manifest["preset_spec"] = spec
    if parallel is not None:
        manifest["processes"] = parallel.world
        parallel.barrier()  # every rank has checked the input (and read the checkpoint) before rank 0 writes
    run_dir = RunDir(out if parallel is None or parallel.is_main else None)

    trainer = Trainer(runner, train_b, test_b, epochs, h["batch_size"], seed, _lr_schedule(algo, epochs, h),
                      (lambda m, targets, epoch: mc_metrics(m, epoch)) if h["eval_mc"] > 0 else None,
                      run_dir.write_checkpoint if run_dir.path is not None else None, run_dir.write_metrics,
                      h["checkpoint_every"], h["progress"], parallel)
    if ckpt is not None:
        trainer.load_state_dict(ckpt)
    run_dir.start(manifest, resumed=ckpt is not None)
    try:
        history = trainer.fit()
        final = runner.final(lambda: train_b.batches(torch.arange(len(train_b)), h["batch_size"],
                                                     seed=derive_seed(seed, "update-bn")))
        final.eval()
        xt, yt = trainer.test_tensors()
        metrics: dict[str, Any] = {"test_acc": clean_accuracy(final, _targets_of(final, preset_obj, h), xt, yt),
                                   "epochs_done": len(history)}
        if h["eval_mc"] > 0:
            metrics.update(mc_metrics(final, "final"))
        if history:
            metrics["train_loss"] = history[-1]["train_loss"]
            metrics["time_s"] = history[-1]["time_s"]
        if run_dir.path is not None:
            run_dir.finish(metrics, tensor_state(digital_copy(final, build_network(source, split)).cpu()))
    except BaseException as exc:
        run_dir.fail(exc)
        raise
    if parallel is not None:
        parallel.barrier()  # the run directory is complete when any rank returns
    return final, history


def swa_epoch(fraction: float, epochs: int) -> int:
    """The first epoch (0-based) of the SWA phase: ``floor(swa_start * epochs)``."""
    return int(math.floor(fraction * epochs))


def _lr_schedule(algo: str, epochs: int, h: dict[str, Any]) -> Schedule:
    """The schedule of ``h``, then the SWA phase's constant rate (WVAT Sec. 4)."""
    if algo in ("wvat", "swa") and (algo == "swa" or h["swa"]):
        return Schedule(h["schedule"], epochs, h["step_size"], h["step_gamma"],
                        swa_epoch(h["swa_start"], epochs), h["swa_lr"])
    return Schedule(h["schedule"], epochs, h["step_size"], h["step_gamma"])


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
    """The algorithm's optimizer around SGD (and SWA, TRICE's three models), configured by ``algo``'s config."""
    common, cfg = configs(algo, h)
    if is_analog(model) and algo not in ("noise", "trice"):
        from xbar import tiles

        tiles.set_injection(model, enabled=False)

    def opt_of(m):
        return make_optimizer(m, common.lr, common.momentum, common.weight_decay)

    def gen(*keys):
        return make_generator(seed, dev, algo, *keys)

    def targets_of(m):
        return _targets_of(m, preset, h)

    if isinstance(cfg, TRICEConfig):
        x, y = train_b.all(cfg.kpp_images or None, seed)

        def evaluate_kpp(m, epoch):
            s = derive_seed(seed, "trice-kpp", epoch)  # common random numbers for the three models
            return _kpp(_mc(m, model_name, split, preset, act_bits, x, y, cfg.n_train, s), cfg.q)

        tr = TRICE(model, opt_of, targets_of, evaluate_kpp, cfg.start, cfg.end, cfg.th, cfg.warm, cfg.tol,
                   check_family("right-censored", cfg.th, "th"), [gen(i) for i in range(3)])
        return TriceRunner(tr, targets_of)

    targets = targets_of(model)
    opt = opt_of(model)
    others = other_parameters(model, targets)
    if isinstance(cfg, NoiseConfig):
        step = NoiseInjection(opt, targets, family, cfg.sigma_scale, gen(), model)
    elif isinstance(cfg, DATConfig):
        chosen_ids = {id(c.param) for c in noisy_parameters(model, preset, cfg.layers)}
        dat_targets = [t for t in targets if id(t.param) in chosen_ids]
        rest = [t for t in targets if id(t.param) not in chosen_ids] + others
        step = DAT(opt, dat_targets, cfg.alpha, cfg.p, cfg.rank, rest, gen(), cfg.correlated, cfg.independent)
    elif isinstance(cfg, WVATConfig):
        step = WVAT(opt, targets, cfg.sigma_v, cfg.gamma, cfg.w_th, cfg.alpha, cfg.p, others, gen())
    elif isinstance(cfg, SAMConfig):
        step = SAM(opt, targets + others, cfg.rho)
    else:  # sgd, swa: plain steps
        step = NoiseInjection(opt, targets, None, 0.0, None, model)
    averaging = isinstance(cfg, SWAConfig) or (isinstance(cfg, WVATConfig) and cfg.swa)
    swa = SWA(model, swa_epoch(cfg.swa_start, epochs)) if averaging else None
    return StepRunner(model, step, targets, swa)
