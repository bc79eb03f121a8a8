"""Hardware in the loop: program a model onto a crossbar chip and evaluate what it reads back.

* :class:`CrossbarBackend` (``protocol``): what a chip offers, in level units:
  ``program``/``read`` tiles, an optional ``mvm``, ``tiles()``, ``rows``/``cols``
  and a clock (``time_s``, ``advance``). A driver for a real instrument implements it.
* :class:`EmulatedBackend`: a chip whose devices follow a preset's device model
  (programming noise, optional write-verify, read noise, drift on a simulated clock).
* :class:`RecordingBackend`: wraps any backend and writes every call to an
  ``xbar-measurements`` file that ``xbar fit`` accepts, plus the session log.
* :class:`ReplayBackend`: serves a recording's read-backs, so an evaluation can be
  reproduced exactly without the chip.
* :class:`Arc2Backend`: the ArC TWO instrument through ``pyarc2`` (optional extra
  ``xbar[arc2]``), with incremental pulse-and-verify programming.
* :func:`finetune`: chip-in-the-loop progressive fine-tuning (NeuRRAM Fig. 4d).
* :func:`compare_with_preset`: a fit of a recording against the preset a network was
  trained for, per level (the signal to retrain).
* :func:`program_model` / :func:`read_model`: map a network's weights to device
  levels, program them, read them back and recombine them (TRICE Eq. 11-14);
  :func:`evaluate` is a plain deterministic accuracy loop.

Guide: docs/hardware-in-the-loop.md.
"""

from xbar.hil.arc2 import Arc2Backend, Arc2Wiring, PulseVerify
from xbar.hil.compare import ChipComparison, compare_with_preset
from xbar.hil.emulated import EmulatedBackend, WriteVerifyReport, summarize
from xbar.hil.evaluate import Evaluation, evaluate
from xbar.hil.finetune import FinetuneConfig, FinetuneResult, finetune
from xbar.hil.protocol import CrossbarBackend, SupportsMVM
from xbar.hil.recording import RecordingBackend
from xbar.hil.replay import ReplayBackend
from xbar.hil.session import (
    HilSession,
    program_model,
    read_model,
    read_weights,
    stored_copy,
    weight_parameters,
)

__all__ = [
    "Arc2Backend",
    "Arc2Wiring",
    "ChipComparison",
    "FinetuneConfig",
    "FinetuneResult",
    "PulseVerify",
    "compare_with_preset",
    "finetune",
    "CrossbarBackend",
    "EmulatedBackend",
    "Evaluation",
    "HilSession",
    "RecordingBackend",
    "ReplayBackend",
    "SupportsMVM",
    "WriteVerifyReport",
    "evaluate",
    "program_model",
    "read_model",
    "read_weights",
    "stored_copy",
    "summarize",
    "weight_parameters",
]
