"""The parts of a device model, their checks and the layout they imply, without torch.

:class:`DeviceConfig` is what a preset describes: the mapping and the noise parts of one
device population, checked against each other, and what follows from them without
drawing anything (devices per weight, whether the weights are noise-free).
:class:`xbar.devices.DeviceModel` adds the tensor methods. Kept apart so that the preset
schema, and with it ``xbar presets list``, does not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xbar.devices.bitflip_config import BitFlipModel
from xbar.devices.correlated import KroneckerCovariance
from xbar.devices.drift import DriftModel, ReadNoise
from xbar.devices.families import NoiseFamily
from xbar.devices.programming import ProgrammingNoise
from xbar.devices.variation import RangeVariation
from xbar.mapping.config import MappingConfig

if TYPE_CHECKING:
    from xbar.devices.measured import MeasuredCovariance


@dataclass
class DeviceConfig:
    """The mapping and noise parts of one device population (see :class:`xbar.devices.DeviceModel`)."""

    mapping: MappingConfig = field(default_factory=MappingConfig)
    programming: ProgrammingNoise | None = None
    correlation: KroneckerCovariance | MeasuredCovariance | None = None
    injection: NoiseFamily = field(default_factory=NoiseFamily)
    read_noise: ReadNoise | None = None
    drift: DriftModel | None = None
    bitflip: BitFlipModel | None = None
    bitflip_targets: tuple[str, ...] = ("weights",)
    variation: RangeVariation | None = None

    def __post_init__(self) -> None:
        for part in (self.programming, self.read_noise, self.drift):
            if part is not None:
                part.check(self.mapping)

    # ----------------------------------------------------------------- basics
    @property
    def clips(self) -> bool:
        """Noisy analog conductances are clipped at 0 (aihwkit), which breaks the closed form."""
        return self.mapping.analog and not self._analog_noise_free

    @property
    def _analog_noise_free(self) -> bool:
        return (self.programming is None or self.programming.is_zero) and (
            self.correlation is None or self.correlation.sigma == 0
        )

    @property
    def noise_free(self) -> bool:
        """Programmed weights are the target weights: no noise, no offsets, no bit flips."""
        prog = self.programming
        return (
            (prog is None or (prog.is_zero and not prog.has_offsets))
            and (self.correlation is None or (self.correlation.sigma == 0 and self.correlation.mean == 0))
            and self.bitflip is None
            and not self._varies
        )

    @property
    def _varies(self) -> bool:
        """A weight variation relative to the layer range (WVAT) is present and non-zero."""
        return self.variation is not None and not self.variation.is_zero

    @property
    def fluctuation_gain(self) -> float:
        """sqrt(sum_p sum_i 4^(iB)): weight std (in level steps) of unit-variance noise on every device."""
        cfg = self.mapping
        return math.sqrt(sum(g * g for g in cfg.slice_gains()) * cfg.planes)

    @property
    def offset_gain(self) -> float:
        """sum_p sign_p sum_i 2^(iB): weight shift (in level steps) of a unit offset on every device.

        Zero for a differential pair (and analog storage): equal offsets on both planes cancel.
        """
        cfg = self.mapping
        return 0.0 if cfg.planes == 2 else float(sum(cfg.slice_gains()))

    @property
    def devices_per_weight(self) -> int:
        """Devices that store one weight: planes x slices, or one binary cell per stored bit.

        A preset whose weights are bit patterns of a number format (bit flips on the
        weights, Emonds et al.) stores each bit on its own binary cell: 32 for float32,
        8 for int8.
        """
        return int(self.bitflip.bits) if self.stores_bit_patterns else self.mapping.devices_per_weight

    @property
    def stores_bit_patterns(self) -> bool:
        """Whether weights are held as number-format bit patterns hit by bit flips (Emonds Eq. 3)."""
        return self.bitflip is not None and "weights" in self.bitflip_targets
