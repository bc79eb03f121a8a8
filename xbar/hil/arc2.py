"""A backend for the ArC TWO instrument (ArC Instruments) through its Python library ``pyarc2``.

ArC TWO drives one crossbar (by default 32 x 32 devices) on 64 channels: word lines
(rows) and bit lines (columns) are channels, named in :class:`Arc2Wiring` (the
standard 32 x 32 card: rows on channels 0-15 and 32-47, columns on 16-31 and 48-63,
as in ``pyarc2.Instrument.read_slice``'s documentation). The array is cut into tiles
of ``tile_rows x tile_cols`` devices (default: the whole array is one tile).

* ``read(tile)``: ``read_all(vread, BiasOrder.Rows)`` when the tile is the whole array
  on the standard wiring, else ``read_slice(row_channel, vread)`` per row; conductance
  ``G = |I / vread|`` (as the ArC2Control import does), then level units through the
  nominal level conductances, ``level = (G - G_0) / step`` (``xbar.hil.protocol``).
* ``program(tile, targets)``: incremental pulse-and-verify (:class:`PulseVerify`). Every
  round reads the tile; each device outside the tolerance gets one pulse towards its
  target: SET (positive) if it reads low, RESET (negative) if it reads high, the
  amplitude growing by ``voltage_step`` with every consecutive pulse in the same
  direction (reset when the direction changes), up to the maximum; devices of one row
  with the same amplitude share a ``pulse_slice_masked`` call, and ``execute()`` sends
  the round. A device is done once it has read within the tolerance, or when it has
  used ``max_pulses`` pulses (then it counts as unconverged); a device that reads
  within the tolerance before any pulse gets none. The report (:class:`~xbar.hil.WriteVerifyReport`) has the form
  of the emulated write-verify; its errors come from the last verify read, and
  ``programmed_error_rms`` is that same value (an instrument does not know more).

``pyarc2`` is an optional dependency (``pip install 'xbar[arc2]'``) imported only when
an :class:`Arc2Backend` is made. This driver has been tested against
:mod:`xbar.hil.arc2_standin` (a software stand-in with pyarc2's call signatures), not
on an instrument.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xbar.errors import InputError
from xbar.hil.emulated import WriteVerifyReport
from xbar.hil.protocol import check_block, check_levels, check_tile, nominal_conductances
from xbar.presets import device_model_of

STANDARD_ROWS = tuple(range(0, 16)) + tuple(range(32, 48))
STANDARD_COLS = tuple(range(16, 32)) + tuple(range(48, 64))


@dataclass(frozen=True)
class Arc2Wiring:
    """Which ArC TWO channel drives each row (word line) and column (bit line) of the array."""

    row_channels: tuple[int, ...] = STANDARD_ROWS
    col_channels: tuple[int, ...] = STANDARD_COLS

    def check(self) -> None:
        chans = list(self.row_channels) + list(self.col_channels)
        if not self.row_channels or not self.col_channels or len(set(chans)) != len(chans) or not all(0 <= c < 64 for c in chans):
            raise InputError(
                f"Arc2Wiring: rows {list(self.row_channels)}, cols {list(self.col_channels)}: "
                "expected distinct channels in 0..63, at least one row and one column"
            )

    @property
    def standard(self) -> bool:
        return self.row_channels == STANDARD_ROWS and self.col_channels == STANDARD_COLS


@dataclass(frozen=True)
class PulseVerify:
    """Incremental pulse-and-verify programming (voltages in V, width in ns, tolerance in level units).

    Args:
        read_voltage: read-out voltage of every verify and ``read``.
        set_voltage, set_voltage_max: first and largest SET amplitude (> 0).
        reset_voltage, reset_voltage_max: first and largest RESET amplitude (< 0).
        voltage_step: added to the amplitude with each consecutive pulse in one direction.
        pulse_width_ns: width of every programming pulse.
        tolerance: a device passes when its read is within this many level steps of the target.
        max_pulses: pulse budget per device and programming.
    """

    read_voltage: float = 0.2
    set_voltage: float = 1.0
    set_voltage_max: float = 2.0
    reset_voltage: float = -1.0
    reset_voltage_max: float = -2.0
    voltage_step: float = 0.05
    pulse_width_ns: int = 1000
    tolerance: float = 0.25
    max_pulses: int = 50

    def check(self) -> None:
        ok = (
            self.read_voltage != 0
            and math.isfinite(self.read_voltage)
            and 0 < self.set_voltage <= self.set_voltage_max
            and self.reset_voltage_max <= self.reset_voltage < 0
            and self.voltage_step >= 0
            and self.pulse_width_ns >= 1
            and self.tolerance > 0
            and self.max_pulses >= 1
        )
        if not ok:
            raise InputError(
                f"PulseVerify: {self}: expected read_voltage != 0, 0 < set_voltage <= set_voltage_max, "
                "reset_voltage_max <= reset_voltage < 0, voltage_step >= 0, pulse_width_ns >= 1, "
                "tolerance > 0 level units and max_pulses >= 1"
            )

    def amplitude(self, direction: torch.Tensor, streak: torch.Tensor) -> torch.Tensor:
        """Pulse voltage of each device: +1 (SET) / -1 (RESET) direction, ``streak`` pulses in a row so far."""
        up = (self.set_voltage + self.voltage_step * (streak - 1)).clamp(max=self.set_voltage_max)
        down = (self.reset_voltage - self.voltage_step * (streak - 1)).clamp(min=self.reset_voltage_max)
        return torch.where(direction > 0, up, down)


def load_pyarc2():
    """The ``pyarc2`` module, or a one-line InputError saying it is missing."""
    try:
        import pyarc2
    except ImportError:
        raise InputError(
            "pyarc2 is not installed: the ArC TWO backend needs it (pip install 'xbar[arc2]', i.e. pyarc2==0.6.0)"
        ) from None
    return pyarc2


class Arc2Backend:
    """An ArC TWO crossbar as an xbar backend (see the module docstring).

    Args:
        preset: the preset whose levels the chip stores (its ``mapping.levels``).
        level_conductance_uS: nominal conductance of each level (one per level, increasing).
        port: the instrument id (default: the first of ``pyarc2.find_ids()``).
        firmware: path of the ArC TWO firmware file (from ArC2Control's installation).
        pulse: the pulse-and-verify settings.
        wiring: the channel of every row and column.
        tile_rows, tile_cols: tile size; the array holds ``(rows // tile_rows) x (cols // tile_cols)`` tiles.
        library: the ``pyarc2`` module (default: imported now); tests pass
            :class:`xbar.hil.arc2_standin.StandInPyarc2`.
    """

    def __init__(
        self,
        preset,
        level_conductance_uS: Sequence[float],
        port: int | None = None,
        firmware: str | os.PathLike | None = None,
        pulse: PulseVerify | None = None,
        wiring: Arc2Wiring | None = None,
        tile_rows: int | None = None,
        tile_cols: int | None = None,
        library=None,
    ) -> None:
        self.pulse = pulse or PulseVerify()
        self.pulse.check()
        self.wiring = wiring or Arc2Wiring()
        self.wiring.check()
        self.levels = device_model_of(preset).mapping.levels
        if not self.levels:
            raise InputError("Arc2Backend: the preset stores analog conductances; expected discrete levels (weight_bits >= 1)")
        g = nominal_conductances(level_conductance_uS, self.levels, "Arc2Backend")
        self.level_conductance_uS = g
        self._g0, self._step = g[0], (g[-1] - g[0]) / (len(g) - 1)
        n_rows, n_cols = len(self.wiring.row_channels), len(self.wiring.col_channels)
        self.rows = int(tile_rows or n_rows)
        self.cols = int(tile_cols or n_cols)
        if not (1 <= self.rows <= n_rows and 1 <= self.cols <= n_cols):
            raise InputError(f"Arc2Backend: tile {self.rows}x{self.cols}: expected at most the {n_rows}x{n_cols} array")
        self._grid = (n_rows // self.rows, n_cols // self.cols)

        lib = library if library is not None else load_pyarc2()
        ids = list(lib.find_ids())
        if not ids:
            raise InputError("no ArC TWO instrument found: pyarc2.find_ids() is empty; expected one connected over USB")
        if port is None:
            port = ids[0]
        if port not in ids:
            raise InputError(f"ArC TWO port {port}: not among the connected instruments {ids}")
        if firmware is None or not Path(firmware).is_file():
            raise InputError(
                f"ArC TWO firmware {firmware}: no such file; expected the path of the instrument's firmware (.bin, shipped with ArC2Control)"
            )
        try:
            self.instrument = lib.Instrument(int(port), str(firmware))
        except lib.ArC2Error as exc:
            raise InputError(f"ArC TWO port {port}: cannot connect ({exc})") from None
        self.lib = lib
        self.port = int(port)
        self.name = f"ArC TWO {port}"
        self.reports: dict[int, WriteVerifyReport] = {}
        self._shape: dict[int, tuple[int, int]] = {}
        self._t0 = time.monotonic()

    # --------------------------------------------------------------- protocol
    def tiles(self) -> range:
        return range(self._grid[0] * self._grid[1])

    @property
    def time_s(self) -> float:
        return time.monotonic() - self._t0

    def advance(self, seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise InputError(f"{self.name}.advance: seconds = {seconds}: expected a finite number >= 0")
        time.sleep(seconds)

    def program(self, tile_id: int, targets: torch.Tensor) -> None:
        check_block(self, tile_id, targets, self.name)
        target = targets.detach().to("cpu", torch.float64)
        check_levels(self.name, tile_id, target, self.levels)
        r, c = target.shape
        pv = self.pulse
        pulses = torch.zeros(r, c, dtype=torch.int64)
        streak = torch.zeros(r, c, dtype=torch.int64)  # signed: consecutive SET (+) / RESET (-) pulses
        now = self._read_block(tile_id, r, c)
        done = torch.zeros(r, c, dtype=torch.bool)
        while True:
            error = now - target
            done |= error.abs() <= pv.tolerance  # a device that passed once is done (as the emulated write-verify)
            pending = ~done & (pulses < pv.max_pulses)
            if not bool(pending.any()):
                break
            direction = torch.where(error < 0, 1, -1)
            same = torch.sign(streak) == direction
            streak = torch.where(pending, torch.where(same, streak + direction, direction), streak)
            volts = pv.amplitude(direction, streak.abs()).to(torch.float64)
            self._pulse_round(tile_id, pending, volts)
            pulses += pending.to(torch.int64)
            now = self._read_block(tile_id, r, c)
        error = now - target
        self._shape[tile_id] = (r, c)
        rms = float(error.pow(2).mean().sqrt())
        self.reports[tile_id] = WriteVerifyReport(
            tile_id=tile_id,
            devices=r * c,
            pulses_total=int(pulses.sum()),
            pulses_max=int(pulses.max()),
            unconverged=int((~done).sum()),
            error_rms=rms,
            error_max_abs=float(error.abs().max()),
            programmed_error_rms=rms,
        )

    def read(self, tile_id: int) -> torch.Tensor:
        check_tile(self, tile_id, self.name)
        if tile_id not in self._shape:
            raise InputError(f"{self.name}: tile {tile_id} has not been programmed; expected program() before read()")
        return self._read_block(tile_id, *self._shape[tile_id]).to(torch.float32)

    def close(self) -> None:
        """Leave the channels at 0 V (``finalise_operation(IdleMode.SoftGnd)``)."""
        idle = getattr(self.lib, "IdleMode", None)
        if idle is not None:
            self.instrument.finalise_operation(idle.SoftGnd)

    # ----------------------------------------------------------------- helpers
    def _origin(self, tile_id: int) -> tuple[int, int]:
        tr, tc = divmod(tile_id, self._grid[1])
        return tr * self.rows, tc * self.cols

    def _read_block(self, tile_id: int, r: int, c: int) -> torch.Tensor:
        """Level units ``[r, c]`` of the block at the tile's top-left, float64."""
        r0, c0 = self._origin(tile_id)
        w = self.wiring
        vread = self.pulse.read_voltage
        if w.standard and r == len(w.row_channels) and c == len(w.col_channels):
            currents = np.asarray(self.instrument.read_all(vread, self.lib.BiasOrder.Rows), dtype=np.float64)
        else:
            cols = np.asarray(w.col_channels[c0 : c0 + c])
            currents = np.stack(
                [np.asarray(self.instrument.read_slice(ch, vread), dtype=np.float64)[cols] for ch in w.row_channels[r0 : r0 + r]]
            )
        g_uS = np.abs(currents / vread) * 1e6
        return (torch.from_numpy(g_uS) - self._g0) / self._step

    def _pulse_round(self, tile_id: int, pending: torch.Tensor, volts: torch.Tensor) -> None:
        """One pulse on every pending device; one masked slice pulse per (row, amplitude)."""
        r0, c0 = self._origin(tile_id)
        rows_idx, cols_idx = pending.nonzero(as_tuple=True)
        amps = volts[rows_idx, cols_idx]
        keys = torch.stack([rows_idx.to(torch.float64), amps], 1)
        groups, inverse = torch.unique(keys, dim=0, return_inverse=True)
        col_chans = np.asarray(self.wiring.col_channels)
        for g, (row, amp) in enumerate(groups.tolist()):
            members = cols_idx[inverse == g].numpy() + c0
            self.instrument.pulse_slice_masked(
                self.wiring.row_channels[r0 + int(row)], float(amp), int(self.pulse.pulse_width_ns), col_chans[members]
            )
        self.instrument.execute()
        self.instrument.wait()

    def __repr__(self) -> str:
        return f"Arc2Backend(port={self.port}, tiles={len(self.tiles())} of {self.rows}x{self.cols}, {self.pulse})"
