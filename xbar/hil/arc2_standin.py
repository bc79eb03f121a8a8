"""A software stand-in for ``pyarc2`` (ArC TWO's Python library): a test double, not a driver.

:class:`StandInPyarc2` offers the names :class:`~xbar.hil.arc2.Arc2Backend` uses from
the ``pyarc2`` module (``find_ids``, ``Instrument``, ``BiasOrder``, ``IdleMode``,
``ArC2Error``), and :class:`StandInInstrument` reproduces the documented call
signatures of ``pyarc2.Instrument`` 0.6.0 (``Instrument(port, firmware, init=True)``,
``read_one(low, high, vread)``, ``read_slice(chan, vread)``,
``read_slice_masked(chan, mask, vread)``, ``read_all(vread, order)``,
``pulse_one(low, high, voltage, nanos)``, ``pulse_slice_masked(chan, voltage, nanos, mask)``,
``pulseread_one(low, high, vpulse, nanos, vread)``, ``execute()``, ``wait()``,
``ground_all()``, ``float_all()``, ``finalise_operation(mode, control)``): pulses are
queued and take effect at ``execute()``, reads flush and return currents in amperes
(float32), slices as 64-element arrays indexed by channel (NaN where no device is
read). Behind the channels sits an emulated device population:

* state: each device's conductance in level units of the preset (pristine devices
  start at level 0 with one draw of the programming noise);
* a pulse of ``voltage`` V and ``nanos`` ns moves a device by
  ``sign(V) * gain * max(|V| - threshold, 0) * nanos / 1000`` level steps towards the
  landing point, where it lands with the preset's programming noise of that level
  (``DeviceModel.program_levels``, the physics of :class:`~xbar.hil.EmulatedBackend`),
  limited to the physical range [0 uS, the top level + half a step];
* a read returns ``I = G * vread`` with fresh read noise of the preset
  (``DeviceModel.read_levels``).

The true states (``state``) and the pulses each device received (``pulse_count``)
are public so that tests can check what the driver did.
"""

from __future__ import annotations

import functools
from enum import Enum

import numpy as np
import torch

from xbar.hil.arc2 import STANDARD_COLS, STANDARD_ROWS
from xbar.hil.protocol import levels_to_uS, zero_level
from xbar.presets import device_model_of


class ArC2Error(Exception):
    """As ``pyarc2.ArC2Error``."""


class BiasOrder(Enum):
    Rows = 0
    Cols = 1


class IdleMode(Enum):
    Float = 0b01
    SoftGnd = 0b10
    HardGnd = 0b11


class StandInPyarc2:
    """A module-like stand-in for ``pyarc2`` with one emulated 32 x 32 crossbar per instrument id.

    Args:
        preset: the device physics (programming and read noise per level).
        level_conductance_uS: nominal conductance of each level (as given to the driver).
        seed: seeds the population's one generator.
        ids: instrument ids ``find_ids()`` reports (``()``: no instrument connected).
        gain: level steps moved per volt above threshold for a 1 us pulse.
        threshold: pulse amplitude (V) below which a device does not move.
    """

    ArC2Error = ArC2Error
    BiasOrder = BiasOrder
    IdleMode = IdleMode

    def __init__(self, preset, level_conductance_uS, seed: int = 0, ids=(0,), gain: float = 1.0, threshold: float = 0.8) -> None:
        self.model = device_model_of(preset)
        self.level_conductance_uS = tuple(float(v) for v in level_conductance_uS)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.ids = list(ids)
        self.gain, self.threshold = float(gain), float(threshold)
        self.instruments: dict[int, StandInInstrument] = {}
        self.Instrument = functools.partial(StandInInstrument, self)

    def find_ids(self) -> list[int]:
        return list(self.ids)


class StandInInstrument:
    """``pyarc2.Instrument`` in software (see the module docstring); made by ``StandInPyarc2.Instrument(port, firmware)``."""

    def __init__(self, lib: StandInPyarc2, port: int, firmware: str, init: bool = True) -> None:
        if port not in lib.ids:
            raise ArC2Error(f"Invalid ArC2 device id: {port}")
        self.lib, self.port, self.firmware = lib, port, firmware
        self.rows, self.cols = STANDARD_ROWS, STANDARD_COLS
        self._row_of = {ch: i for i, ch in enumerate(self.rows)}
        self._col_of = {ch: j for j, ch in enumerate(self.cols)}
        m = lib.model
        levels = m.mapping.levels
        self._top = levels - 1 + 0.5
        g = lib.level_conductance_uS
        self._zero = zero_level(g)  # 0 uS in level units
        zeros = torch.zeros(len(self.rows), len(self.cols), dtype=torch.float64)
        self.state = self._land(zeros)
        self.pulse_count = torch.zeros(zeros.shape, dtype=torch.int64)
        self.queue: list[tuple[torch.Tensor, float, int]] = []
        self.executed = 0
        lib.instruments[port] = self

    # ----------------------------------------------------------- physics
    def _nearest(self, x: torch.Tensor) -> torch.Tensor:
        return x.round().clamp(0, self.lib.model.mapping.levels - 1)

    def _land(self, intended: torch.Tensor) -> torch.Tensor:
        """Land at ``intended`` with the programming noise of the nearest level, within the physical range."""
        near = self._nearest(intended)
        noisy, _ = self.lib.model.program_levels(near, self.lib.generator)
        return (intended + (noisy - near)).clamp(self._zero, self._top)

    def _currents(self, vread: float) -> torch.Tensor:
        """Currents (A) of every device at ``vread``, one fresh read."""
        read, _ = self.lib.model.read_levels(self._nearest(self.state), self.state, None, 0.0, self.lib.generator)
        g_uS = levels_to_uS(read.clamp(min=self._zero), self.lib.level_conductance_uS).clamp(min=0.0)
        return g_uS * 1e-6 * vread

    def _apply(self, mask: torch.Tensor, voltage: float, nanos: int) -> None:
        move = np.sign(voltage) * self.lib.gain * max(abs(voltage) - self.lib.threshold, 0.0) * nanos / 1000.0
        landed = self._land(self.state + move)
        self.state = torch.where(mask, landed, self.state)
        self.pulse_count += mask.to(torch.int64)

    def _line(self, chan: int) -> tuple[str, int]:
        if chan in self._row_of:
            return "row", self._row_of[chan]
        if chan in self._col_of:
            return "col", self._col_of[chan]
        raise ArC2Error(f"channel {chan} is not connected to the array")

    def _mask(self, chan: int, highs) -> torch.Tensor:
        kind, i = self._line(chan)
        m = torch.zeros(self.state.shape, dtype=torch.bool)
        other = self._col_of if kind == "row" else self._row_of
        idx = [other[int(h)] for h in np.asarray(highs, dtype=np.uint64) if int(h) in other]
        if kind == "row":
            m[i, idx] = True
        else:
            m[idx, i] = True
        return m

    def _slice(self, chan: int, vread: float, highs=None) -> np.ndarray:
        kind, i = self._line(chan)
        cur = self._currents(vread)
        line = cur[i, :] if kind == "row" else cur[:, i]
        other = self.cols if kind == "row" else self.rows
        keep = None if highs is None else {int(h) for h in np.asarray(highs, dtype=np.uint64)}
        out = np.full(64, np.nan, dtype=np.float32)
        for j, ch in enumerate(other):
            if keep is None or ch in keep:
                out[ch] = np.float32(line[j])
        return out

    # ---------------------------------------------------- pyarc2 methods
    def read_one(self, low: int, high: int, vread: float) -> float:
        kind, i = self._line(low)
        _, j = self._line(high)
        r, c = (i, j) if kind == "row" else (j, i)
        return float(np.float32(self._currents(vread)[r, c]))

    def read_slice(self, chan: int, vread: float) -> np.ndarray:
        return self._slice(chan, vread)

    def read_slice_masked(self, chan: int, mask, vread: float) -> np.ndarray:
        return self._slice(chan, vread, mask)

    def read_all(self, vread: float, order: BiasOrder) -> np.ndarray:
        cur = self._currents(vread).numpy().astype(np.float32)
        return cur if order == BiasOrder.Rows else cur.copy()

    def pulse_one(self, low: int, high: int, voltage: float, nanos: int) -> StandInInstrument:
        self.queue.append((self._mask(low, [high]), float(voltage), int(nanos)))
        return self

    def pulse_slice_masked(self, chan: int, voltage: float, nanos: int, mask) -> StandInInstrument:
        self.queue.append((self._mask(chan, mask), float(voltage), int(nanos)))
        return self

    def pulseread_one(self, low: int, high: int, vpulse: float, nanos: int, vread: float) -> float:
        self.pulse_one(low, high, vpulse, nanos).execute()
        return self.read_one(low, high, vread)

    def execute(self) -> StandInInstrument:
        for mask, voltage, nanos in self.queue:
            self._apply(mask, voltage, nanos)
        self.queue.clear()
        self.executed += 1
        return self

    def wait(self) -> None:
        return None

    def busy(self) -> bool:
        return False

    def ground_all(self) -> StandInInstrument:
        return self

    def float_all(self) -> StandInInstrument:
        return self

    def finalise_operation(self, mode: IdleMode | None = None, control=None) -> None:
        self.idle = mode
