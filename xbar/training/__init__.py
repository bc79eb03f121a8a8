"""Noise-robust training: noise injection, TRICE, DAT, WVAT, SAM and SWA.

Optimizer-style steps (``step(closure)``) around an ordinary optimizer (SGD, or
aihwkit's ``AnalogSGD`` for a model from ``xbar.convert``):

- :class:`NoiseInjection` - TRICE Algorithm 1 with any device model and family (Eq. 10);
- :class:`DAT` - DAT Algorithm 1, DAT-Fast (rank k) and DAT-Full;
- :class:`WVAT` - WVAT's HSV/GAV mix with weight reverse (SWA via :class:`SWA`);
- :class:`SAM` - sharpness-aware minimization;

one config dataclass per algorithm (:class:`SAMConfig`, :class:`DATConfig`, ...; the
defaults and checks of ``xbar train --hp``), the three-model :class:`TRICE` trainer (Algorithm 3), the epoch loop
:class:`Trainer`, and :func:`train`, one run end to end (what ``xbar train`` calls).
"""

from xbar.training.base import WrappedOptimizer, make_optimizer
from xbar.training.checkpoint import load_checkpoint, save_checkpoint
from xbar.training.config import (
    ALGOS,
    PAPER_DEFAULTS,
    CommonConfig,
    DATConfig,
    NoiseConfig,
    SAMConfig,
    SGDConfig,
    SWAConfig,
    TRICEConfig,
    WVATConfig,
    hyper_spec,
    resolve,
)
from xbar.training.dat import DAT, NoiseProfile, projection
from xbar.training.injection import NoiseInjection, sample_injection
from xbar.training.params import (
    NoisyParam,
    forward_weights,
    is_analog,
    noisy_parameters,
    other_parameters,
)
from xbar.training.run import digital_copy, train
from xbar.training.sam import SAM, sam_perturbation
from xbar.training.swa import SWA
from xbar.training.trainer import (
    Batches,
    EpochScheduler,
    Schedule,
    StepRunner,
    Trainer,
    TrainingDiverged,
    TriceRunner,
    epoch_order,
)
from xbar.training.trice import TRICE, quartiles, search_update
from xbar.training.wvat import WVAT, hsv_sigma, layer_range

__all__ = [
    "ALGOS",
    "DAT",
    "PAPER_DEFAULTS",
    "SAM",
    "SWA",
    "TRICE",
    "WVAT",
    "Batches",
    "EpochScheduler",
    "CommonConfig",
    "DATConfig",
    "NoiseConfig",
    "SAMConfig",
    "SGDConfig",
    "SWAConfig",
    "Schedule",
    "TRICEConfig",
    "WVATConfig",
    "NoiseInjection",
    "NoiseProfile",
    "NoisyParam",
    "StepRunner",
    "Trainer",
    "TrainingDiverged",
    "TriceRunner",
    "WrappedOptimizer",
    "digital_copy",
    "epoch_order",
    "forward_weights",
    "hsv_sigma",
    "hyper_spec",
    "is_analog",
    "layer_range",
    "load_checkpoint",
    "make_optimizer",
    "noisy_parameters",
    "other_parameters",
    "projection",
    "quartiles",
    "resolve",
    "sam_perturbation",
    "sample_injection",
    "save_checkpoint",
    "search_update",
    "train",
]
