"""The physics of one device population: programming noise, correlated noise,
injection families, read noise, drift and bit flips, composed by :class:`DeviceModel`.

The names below are imported from their module on first access (PEP 562, as ``xbar``
itself does): the parts a preset describes (``xbar.devices.config`` and the modules it
imports) need no torch, so the preset schema, and with it ``xbar presets list``, starts
without it; the tensor code (``DeviceModel``, ``flip_bits``, ...) imports torch when used.
"""

from __future__ import annotations

import importlib

#: Public name -> (module under xbar.devices, attribute).
EXPORTS: dict[str, tuple[str, str]] = {
    "BitFlipModel": ("bitflip_config", "BitFlipModel"),
    "flip_bits": ("bitflip", "flip_bits"),
    "DenseCovariance": ("correlated", "DenseCovariance"),
    "KroneckerCovariance": ("correlated", "KroneckerCovariance"),
    "KroneckerLowRank": ("correlated", "KroneckerLowRank"),
    "LowRankCovariance": ("correlated", "LowRankCovariance"),
    "exponential_kernel": ("correlated", "exponential_kernel"),
    "DeviceConfig": ("config", "DeviceConfig"),
    "DriftModel": ("drift", "DriftModel"),
    "ReadNoise": ("drift", "ReadNoise"),
    "FAMILIES": ("families", "FAMILIES"),
    "NoiseFamily": ("families", "NoiseFamily"),
    "MeasuredCovariance": ("measured", "MeasuredCovariance"),
    "DeviceModel": ("model", "DeviceModel"),
    "DeviceState": ("model", "DeviceState"),
    "ProgrammingNoise": ("programming", "ProgrammingNoise"),
    "fefet_profile": ("programming", "fefet_profile"),
    "instance_generators": ("seeding", "generators"),
    "RangeVariation": ("variation", "RangeVariation"),
}


def __getattr__(name: str):
    """Import ``xbar.devices.<name>`` from its module on first access (PEP 562)."""
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = EXPORTS[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(EXPORTS))


__all__ = sorted(EXPORTS)
