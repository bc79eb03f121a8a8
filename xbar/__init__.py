"""xbar: crossbar emulation for noise-robust deep learning on analog NVM hardware.

Entry points: ``xbar.presets.load``, ``xbar.convert``, ``xbar.sample_weights``;
models in ``xbar.models``, data in ``xbar.data``, device physics in ``xbar.devices``,
analog tiles in ``xbar.tiles``, training in ``xbar.training``, studies in
``xbar.evaluation``, device fitting in ``xbar.calibration``, hardware in the loop in
``xbar.hil``. The subpackages are imported on first attribute access, so
``import xbar`` stays cheap (no torch: ``xbar --help`` starts in a fraction of a
second) and ``xbar.models.build("lenet")`` works without importing ``xbar.models`` first.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Subpackages (and modules) reachable as ``xbar.<name>`` after ``import xbar``.
SUBPACKAGES = (
    "calibration",
    "checkpoints",
    "data",
    "devices",
    "errors",
    "evaluation",
    "fileio",
    "hil",
    "mapping",
    "models",
    "presets",
    "sampling",
    "tiles",
    "training",
)


#: Functions reachable as ``xbar.<name>``, imported from their module on first access.
FUNCTIONS = {"sample_weights": "sampling"}


def __getattr__(name: str):
    """Import ``xbar.<name>`` on first access (PEP 562)."""
    if name in SUBPACKAGES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    if name in FUNCTIONS:
        value = getattr(importlib.import_module(f"{__name__}.{FUNCTIONS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SUBPACKAGES) | set(FUNCTIONS))


def convert(model, preset, **options):
    """Convert a PyTorch model to aihwkit analog tiles driven by ``preset`` (see xbar.tiles.convert)."""
    from xbar.tiles import convert as _convert

    return _convert(model, preset, **options)


def to_digital(model, inplace=False):
    """A plain PyTorch model from a converted one (see xbar.tiles.to_digital)."""
    from xbar.tiles import to_digital as _to_digital

    return _to_digital(model, inplace=inplace)


__all__ = ["__version__", "convert", "sample_weights", "to_digital"]
