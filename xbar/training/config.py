"""Training configurations: one dataclass per algorithm, the single home of defaults and checks.

As aihwkit's RPU configs describe a tile, these describe a training run:
:class:`CommonConfig` holds what every algorithm takes (optimizer, schedule, data,
device, quantization, checkpointing, evaluation) and one class per algorithm holds its
own hyper-parameters with the papers' values as defaults (TRICE Alg. 3 and Eq. 10,
DAT Algorithm 1, WVAT Sec. 3-4, SAM as summarized in WVAT Sec. 2). The optimizer
constructors (:class:`~xbar.training.sam.SAM`, :class:`~xbar.training.dat.DAT`, ...)
take their defaults from these classes; ``xbar train --list-hp`` and ``--hp KEY=VALUE``
read the fields (name, type, default, help) from them.

``check()`` raises a one-line :class:`~xbar.errors.InputError` naming the first bad
field and what it expects.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from xbar.errors import InputError, first_line

#: Lowest threshold th (in sigmas) of an injection family: below it P(g < th) < 1e-6, so a
#: censored family replaces nearly every draw by th (a constant shift, not noise) and a
#: truncated one has no mass left (``xbar.devices.NoiseFamily`` refuses it).
MIN_THRESHOLD = -4.7

SCHEDULES = ("cosine", "step", "constant")


def hp(type_: type, default: Any, help: str) -> Any:
    """A config field: its value type (for ``--hp`` parsing), default and meaning."""
    return field(default=default, metadata={"type": type_, "help": help})


@dataclass(frozen=True)
class Hyper:
    """One hyper-parameter as ``--list-hp`` shows it: its type, default and meaning."""

    type: type
    default: Any
    help: str


class _Config:
    """Shared behaviour of the config dataclasses."""

    @classmethod
    def hyper(cls) -> dict[str, Hyper]:
        """Every field as a :class:`Hyper`, in declaration order."""
        return {
            f.name: Hyper(f.metadata["type"], None if f.default is MISSING else f.default, f.metadata["help"])
            for f in fields(cls)  # type: ignore[arg-type]
        }

    def _need(self, ok: bool, key: str, what: str) -> None:
        if not ok:
            raise InputError(f"{key} = {getattr(self, key)!r}: expected {what}")

    def check_finite(self) -> None:
        """Every float field set is a finite number."""
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata["type"] is float and value is not None:
                self._need(math.isfinite(value), f.name, "a finite number")

    def check(self) -> None:
        """Range checks; the first bad field raises a one-line InputError."""


@dataclass(frozen=True)
class CommonConfig(_Config):
    """What every algorithm takes; ``None`` optimizer fields take the algorithm's :data:`PAPER_DEFAULTS`."""

    lr: float | None = hp(float, None, "learning rate (the beta of DAT Algorithm 1 for dat-fast and dat-full)")
    momentum: float | None = hp(float, None, "SGD momentum")
    weight_decay: float | None = hp(float, None, "SGD weight decay")
    batch_size: int | None = hp(int, None, "batch size")
    schedule: str | None = hp(str, None, "learning-rate schedule: cosine, step or constant")
    step_size: int = hp(int, 10, "epochs between decays of the step schedule")
    step_gamma: float = hp(float, 0.8, "decay factor of the step schedule (DAT: 0.8 every 10 epochs)")
    act_bits: int | None = hp(int, None, "activation bits (default: TRICE's 4 for lenet, 6 for vgg8/resnet18, else none)")
    weight_bits: int | None = hp(int, None, "stored weight bits H, the preset's weight_bits overridden (default: TRICE's 4 "
                                 "for lenet, 6 for vgg8/resnet18, else the preset's; 0: analog)")
    quantize_weights: bool = hp(bool, True, "train with the H-bit stored weights in the forward (straight-through)")
    convert: bool = hp(bool, False, "train the aihwkit model from xbar.convert instead of the plain one")
    device: str = hp(str, "cpu", "torch device")
    checkpoint_every: int = hp(int, 50, "also checkpoint every this many steps inside an epoch (0: epoch ends only)")
    eval_mc: int = hp(int, 0, "Monte Carlo instances for the per-epoch test KPP (0: none)")
    eval_q: float = hp(float, 0.01, "percentile q of the reported KPP (0.01: 1st percentile)")
    data_root: str | None = hp(str, None, "directory of MNIST/CIFAR files")
    split_seed: int | None = hp(int, None, "seed of the train/test split of mnist5k/digits (default: the run's seed)")
    split: str | None = hp(str, None, "split of mnist5k/digits: stratified (default) or random (unstratified)")
    train_fraction: float | None = hp(float, None, "share of mnist5k/digits in the training part (default 0.8)")
    normalize: str | None = hp(str, None, "input normalisation: default (the data set's), none (pixels in [0, 1]) or "
                               "MEAN/STD per channel, e.g. 0.1307/0.3081")
    progress: bool | None = hp(bool, None, "a line per epoch on stderr and a bar within it (default; False: silent)")

    def check(self) -> None:
        need = self._need
        need(self.lr > 0, "lr", "> 0")
        need(0 <= self.momentum < 1, "momentum", "in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", ">= 0")
        need(self.batch_size >= 1, "batch_size", ">= 1")
        need(self.schedule in SCHEDULES, "schedule", "cosine, step or constant")
        need(self.step_size >= 1, "step_size", ">= 1")
        need(self.step_gamma > 0, "step_gamma", "> 0")
        need(self.checkpoint_every >= 0, "checkpoint_every", ">= 0")
        need(self.eval_mc >= 0, "eval_mc", ">= 0")
        need(0 < self.eval_q < 1, "eval_q", "a probability in (0, 1)")
        need(self.act_bits is None or 0 <= self.act_bits <= 16, "act_bits", "0 to 16")
        need(self.weight_bits is None or 0 <= self.weight_bits <= 16, "weight_bits", "0 (analog) to 16")
        from xbar.data.sources import check_options

        check_options(self.split, self.train_fraction, self.normalize)
        check_device(self.device)


@dataclass(frozen=True)
class SGDConfig(_Config):
    """Plain SGD: no hyper-parameters beyond the common ones."""


@dataclass(frozen=True)
class NoiseConfig(_Config):
    """Noise injection (TRICE Sec. III-A): ``None`` family/threshold take the preset's."""

    family: str | None = hp(str, None, "injection family (default: the preset's)")
    threshold: float | None = hp(float, None, "threshold th of a censored/truncated family (default: the preset's)")
    sigma_scale: float = hp(float, 1.0, "injected sigma / device sigma_d")

    def check(self) -> None:
        from xbar.devices import FAMILIES

        self._need(self.family is None or self.family in FAMILIES, "family", f"one of {', '.join(FAMILIES)}")
        self._need(self.threshold is None or self.threshold >= MIN_THRESHOLD, "threshold",
                   f">= {MIN_THRESHOLD} (sigmas)")
        self._need(self.sigma_scale >= 0, "sigma_scale", ">= 0")


@dataclass(frozen=True)
class TRICEConfig(_Config):
    """TRICE's search for the injection start (Alg. 3) with the RC-Gaussian of Eq. 10."""

    start: float = hp(float, 0.0, "search start, units of sigma_d (Alg. 3)")
    end: float = hp(float, 2.0, "search end, units of sigma_d (paper: 2 sigma_d)")
    th: float = hp(float, 2.0, "RC-Gaussian threshold (Eq. 10)")
    warm: int = hp(int, 5, "warm-up epochs")
    n_train: int = hp(int, 300, "Monte Carlo instances per KPP ranking (N_train)")
    q: float = hp(float, 0.01, "percentile of the ranking KPP (k/100)")
    tol: float = hp(float, 1e-4, "merge the models when |end - start| <= tol")
    kpp_images: int = hp(int, 0, "training images the ranking KPP uses (0: all, as the paper)")

    def check(self) -> None:
        need = self._need
        need(self.start >= 0, "start", ">= 0")
        need(self.end >= self.start, "end", f">= start ({self.start})")
        need(self.th >= MIN_THRESHOLD, "th", f">= {MIN_THRESHOLD} (sigmas)")
        check_family("right-censored", self.th, "th")
        need(self.warm >= 0, "warm", ">= 0")
        need(self.n_train >= 1, "n_train", ">= 1")
        need(0 < self.q < 1, "q", "a probability in (0, 1)")
        need(self.tol >= 0, "tol", ">= 0")
        need(self.kpp_images >= 0, "kpp_images", ">= 0 (0: all)")


@dataclass(frozen=True)
class DATConfig(_Config):
    """DAT Algorithm 1; ``rank`` k of the low-rank noise directions (dat-fast), None: the full covariance (dat-full)."""

    alpha: float = hp(float, 150.0, "perturbation step (Alg. 1 line 10); no value in the paper, see docs/training.md")
    p: int = hp(int, 1, "perturbations per step")
    rank: int | None = hp(int, 10, "k of the low-rank noise directions per tile")
    layers: str = hp(str, "last", "perturbed layers: last (the last Linear), all, or comma-separated names")
    correlated: bool = hp(bool, True, "include the preset's correlated component")
    independent: bool = hp(bool, True, "include the preset's independent per-weight noise")

    def check(self) -> None:
        self._need(self.alpha >= 0, "alpha", ">= 0")
        self._need(self.p >= 1, "p", ">= 1")
        self._need(self.rank is None or self.rank >= 1, "rank", ">= 1")


def _swa_start() -> Any:
    return hp(float, 0.75, "fraction of the epochs before averaging starts")


def _swa_lr() -> Any:
    return hp(float, None, "learning rate of the averaging phase (default: lr / 2)")


class _AveragingChecks:
    def check_swa(self) -> None:
        self._need(0 <= self.swa_start <= 1, "swa_start", "a fraction in [0, 1]")  # type: ignore[attr-defined]
        self._need(self.swa_lr is None or self.swa_lr > 0, "swa_lr", "> 0")  # type: ignore[attr-defined]


@dataclass(frozen=True)
class SWAConfig(_AveragingChecks, _Config):
    """Stochastic weight averaging (as WVAT Sec. 4 uses it)."""

    swa_start: float = _swa_start()
    swa_lr: float | None = _swa_lr()

    def check(self) -> None:
        self.check_swa()


@dataclass(frozen=True)
class WVATConfig(_AveragingChecks, _Config):
    """WVAT (Sec. 3): hybrid sampled variation (HSV) or gradient-ascent variation (GAV), SWA on top."""

    sigma_v: float = hp(float, 0.1, "HSV sigma relative to the layer range A")
    gamma: float = hp(float, 1.0, "range coefficient")
    w_th: float = hp(float, 0.5, "HSV if x < w_th, else GAV")
    alpha: float = hp(float, 0.1, "GAV step length")
    p: float = hp(float, 1.0, "probability that a batch is perturbed")
    swa: bool = hp(bool, True, "stochastic weight averaging on top")
    swa_start: float = _swa_start()
    swa_lr: float | None = _swa_lr()

    def check(self) -> None:
        need = self._need
        need(0 <= self.w_th <= 1, "w_th", "a probability in [0, 1]")
        need(0 <= self.p <= 1, "p", "a probability in [0, 1]")
        need(self.sigma_v >= 0, "sigma_v", ">= 0")
        need(self.gamma >= 0, "gamma", ">= 0")
        need(self.alpha >= 0, "alpha", ">= 0")
        self.check_swa()


@dataclass(frozen=True)
class SAMConfig(_Config):
    """Sharpness-aware minimization (Foret et al.)."""

    rho: float = hp(float, 0.05, "neighbourhood radius")

    def check(self) -> None:
        self._need(self.rho >= 0, "rho", ">= 0")


ALGO_CONFIGS: dict[str, type[_Config]] = {
    "sgd": SGDConfig,
    "noise": NoiseConfig,
    "trice": TRICEConfig,
    "dat-fast": DATConfig,
    "dat-full": DATConfig,
    "wvat": WVATConfig,
    "sam": SAMConfig,
    "swa": SWAConfig,
}
ALGOS = tuple(ALGO_CONFIGS)
#: Fields an algorithm fixes rather than takes (dat-full: the full covariance).
FIXED: dict[str, dict[str, Any]] = {"dat-full": {"rank": None}}

_SGD = {"epochs": 100, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128, "schedule": "cosine"}
_DAT = {"epochs": 200, "lr": 0.015, "momentum": 0.9, "weight_decay": 2e-4, "batch_size": 128, "schedule": "step"}
_WVAT = {"epochs": 200, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128, "schedule": "cosine"}
#: The papers' optimizer schedules per algorithm (TRICE Sec. IV-B, DAT Sec. IV-A, WVAT Sec. 4).
PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": _SGD, "noise": _SGD, "trice": _SGD, "sam": _SGD,
    "dat-fast": _DAT, "dat-full": _DAT, "wvat": _WVAT, "swa": _WVAT,
}


def check_algo(algo: str) -> None:
    if algo not in ALGOS:
        raise InputError(f"algo {algo!r}: expected one of {', '.join(ALGOS)}")


def algo_hyper(algo: str) -> dict[str, Hyper]:
    """The hyper-parameters of ``algo``'s own config (those it fixes left out)."""
    check_algo(algo)
    return {k: v for k, v in ALGO_CONFIGS[algo].hyper().items() if k not in FIXED.get(algo, {})}


def hyper_spec(algo: str) -> dict[str, Hyper]:
    """Every hyper-parameter ``algo`` accepts (common ones first)."""
    return {**CommonConfig.hyper(), **algo_hyper(algo)}


def configs(algo: str, h: dict[str, Any]) -> tuple[CommonConfig, _Config]:
    """``(CommonConfig, algorithm config)`` of a flat dict of hyper-parameters (as :func:`resolve` returns)."""
    common = CommonConfig(**{k: h[k] for k in CommonConfig.hyper()})
    cls = ALGO_CONFIGS[algo]
    return common, cls(**{k: h[k] for k in algo_hyper(algo)}, **FIXED.get(algo, {}))


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
    common, own = configs(algo, out)
    common.check_finite()
    own.check_finite()
    common.check()
    own.check()
    if algo in ("wvat", "swa") and out["swa_lr"] is None:
        out["swa_lr"] = out["lr"] / 2
    return epochs, out


def check_family(kind: str, threshold: float, key: str):
    """``NoiseFamily(kind, threshold)``; its ValueError as a one-line InputError naming ``key``."""
    from xbar.devices import NoiseFamily

    try:
        return NoiseFamily(kind, threshold)
    except ValueError as exc:
        raise InputError(f"{key} = {threshold!r} with family {kind!r}: {exc}") from None


def check_device(name: str):
    """``torch.device(name)``, checked to be usable here (InputError otherwise)."""
    import torch

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
