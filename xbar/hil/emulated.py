"""An emulated crossbar chip whose devices follow a preset's :class:`DeviceModel`.

Programming noise (per-level sigma and mean, correlated field, clipping of analog
conductances), drift and read noise come from the preset's device model parts in
``xbar.devices``, so the chip shows the statistics the preset describes and that
training and Monte Carlo assume. Bit flips act on stored digital bit patterns, not
on conductances, and are not emulated here.

Write-verify (``tolerance`` in level units): after the first pulse every device is
read back; devices whose read-back error exceeds the tolerance are programmed again
(a fresh draw of the programming noise) and read again, until every device has
passed once or has used ``max_pulses`` pulses. The verify reads see read noise, like
on a chip, so a device that passed may sit slightly outside the tolerance.

A conductance cannot be negative: when the chip publishes ``level_conductance_uS``,
programmed states and reads are clipped at 0 uS (the level ``-G_0 / step``), so a level
at 0 uS reads exactly 0 for about half its devices, as a real sense amplifier would
report. The calibration fitters treat those values as censored. Without a conductance
scale the chip has no physical zero and nothing is clipped (besides the device
model's own clipping of analog conductances).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from xbar.devices import DeviceModel
from xbar.errors import InputError
from xbar.hil.protocol import (
    check_block,
    check_levels,
    check_tile,
    nominal_conductances,
    zero_level,
)
from xbar.presets import device_model_of


@dataclass(frozen=True)
class WriteVerifyReport:
    """Outcome of programming one tile (level units).

    ``error_*`` come from the last verify read of every device (what a chip reports);
    without write-verify they are those of the true programmed state, as is
    ``programmed_error_rms`` always (only an emulator knows it). ``unconverged`` counts
    devices that never passed verification within their pulse budget.
    """

    tile_id: int
    devices: int
    pulses_total: int
    pulses_max: int
    unconverged: int
    error_rms: float
    error_max_abs: float
    programmed_error_rms: float

    @property
    def pulses_mean(self) -> float:
        return self.pulses_total / max(self.devices, 1)


def summarize(reports: Sequence[WriteVerifyReport]) -> dict[str, float]:
    """Totals over tiles: devices, pulses, unconverged devices and error statistics."""
    n = sum(r.devices for r in reports)
    if n == 0:
        return {"tiles": 0, "devices": 0}
    return {
        "tiles": len(reports),
        "devices": n,
        "pulses_total": sum(r.pulses_total for r in reports),
        "pulses_mean": sum(r.pulses_total for r in reports) / n,
        "pulses_max": max(r.pulses_max for r in reports),
        "unconverged": sum(r.unconverged for r in reports),
        "error_rms": math.sqrt(sum(r.error_rms**2 * r.devices for r in reports) / n),
        "error_max_abs": max(r.error_max_abs for r in reports),
        "programmed_error_rms": math.sqrt(sum(r.programmed_error_rms**2 * r.devices for r in reports) / n),
    }


@dataclass
class _Tile:
    target: torch.Tensor
    programmed: torch.Tensor
    nu: torch.Tensor | None
    programmed_at_s: float


class EmulatedBackend:
    """A chip of ``n_tiles`` tiles of ``rows x cols`` devices behaving like ``preset``.

    Args:
        preset: a Preset, shipped preset name, preset file or DeviceModel.
        rows, cols: tile size; default the preset's ``tile_rows x tile_cols``.
        seed: seeds the chip's one generator; the same seed and the same sequence of
            calls give the same conductances.
        tolerance: write-verify tolerance in level units; None programs one pulse.
        max_pulses: write-verify budget, programming pulses per device (first included).
        n_tiles: how many tiles the chip has.
        level_conductance_uS: nominal conductance of each level, published so that
            recordings store microsiemens like a real chip (the protocol stays in level units).
    """

    def __init__(
        self,
        preset,
        rows: int | None = None,
        cols: int | None = None,
        seed: int = 0,
        tolerance: float | None = None,
        max_pulses: int = 20,
        n_tiles: int = 4096,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        level_conductance_uS: Sequence[float] | None = None,
    ) -> None:
        self.model: DeviceModel = device_model_of(preset)
        cfg = self.model.mapping
        self.rows = int(rows if rows is not None else cfg.tile_rows)
        self.cols = int(cols if cols is not None else cfg.tile_cols)
        if self.rows < 1 or self.cols < 1:
            raise InputError(f"EmulatedBackend: tile size {self.rows}x{self.cols}: expected positive rows and cols")
        if tolerance is not None and not tolerance > 0:
            raise InputError(f"EmulatedBackend: tolerance = {tolerance}: expected > 0 level units (or None)")
        if max_pulses < 1:
            raise InputError(f"EmulatedBackend: max_pulses = {max_pulses}: expected >= 1")
        if n_tiles < 1:
            raise InputError(f"EmulatedBackend: n_tiles = {n_tiles}: expected >= 1")
        self.levels = cfg.levels
        self.level_conductance_uS = nominal_conductances(level_conductance_uS, self.levels, "EmulatedBackend")
        self.zero_level = zero_level(self.level_conductance_uS)
        self.tolerance = tolerance
        self.max_pulses = int(max_pulses)
        self.seed = int(seed)
        self.dtype = dtype
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.preset_name = _label(preset)
        self.name = f"emulated {self.preset_name}"
        self.reports: dict[int, WriteVerifyReport] = {}
        self._n_tiles = int(n_tiles)
        self._tiles: dict[int, _Tile] = {}
        self._time_s = 0.0

    # --------------------------------------------------------------- protocol
    def tiles(self) -> range:
        return range(self._n_tiles)

    @property
    def time_s(self) -> float:
        return self._time_s

    def advance(self, seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise InputError(f"{self.name}.advance: seconds = {seconds}: expected a finite number >= 0")
        self._time_s += float(seconds)

    def program(self, tile_id: int, targets: torch.Tensor) -> None:
        check_block(self, tile_id, targets, self.name)
        target = targets.detach().to(device=self.device, dtype=self.dtype, copy=True)
        check_levels(self.name, tile_id, target, self.levels)
        programmed, nu = self._pulse(target)
        pulses = torch.ones_like(target, dtype=torch.int32)
        if self.tolerance is not None:
            pending = torch.ones_like(target, dtype=torch.bool)
            for k in range(self.max_pulses):
                error = self._sense(target, programmed, nu, 0.0) - target
                pending &= error.abs() > self.tolerance  # a device that passed once is done
                if k == self.max_pulses - 1 or not bool(pending.any()):
                    break
                again, nu_again = self._pulse(target)
                programmed = torch.where(pending, again, programmed)
                if nu is not None:
                    nu = torch.where(pending, nu_again, nu)
                pulses += pending.to(torch.int32)
            unconverged = int(pending.sum())
        else:
            error = programmed - target
            unconverged = 0
        true_error = programmed - target
        self._tiles[tile_id] = _Tile(target, programmed, nu, self._time_s)
        self.reports[tile_id] = WriteVerifyReport(
            tile_id=tile_id,
            devices=target.numel(),
            pulses_total=int(pulses.sum()),
            pulses_max=int(pulses.max()),
            unconverged=unconverged,
            error_rms=float(error.double().pow(2).mean().sqrt()),
            error_max_abs=float(error.abs().max()),
            programmed_error_rms=float(true_error.double().pow(2).mean().sqrt()),
        )

    def read(self, tile_id: int) -> torch.Tensor:
        tile = self._tile(tile_id)
        return self._sense(tile.target, tile.programmed, tile.nu, self._time_s - tile.programmed_at_s)

    def mvm(self, tile_id: int, x: torch.Tensor) -> torch.Tensor:
        """``x [b, r] @ G [r, c]`` with the conductances of one fresh read (read noise per call)."""
        rows = self._tile(tile_id).target.shape[0]
        if x.dim() != 2 or x.shape[1] != rows:
            raise InputError(f"{self.name}.mvm: tile {tile_id}: x has shape {list(x.shape)}; expected [batch, {rows}]")
        g = self.read(tile_id)
        return x.to(device=g.device, dtype=g.dtype) @ g

    # ---------------------------------------------------------------- physics
    def _pulse(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One programming pulse on every device: programmed levels and drift exponents."""
        m = self.model
        field = None
        if m.correlation is not None and m.correlation.sigma > 0:
            r, c = target.shape
            field = m.correlation.sample(r, c, 1, self.rows, self.cols, self.generator, self.device, self.dtype)[0]
        programmed, nu = m.program_levels(target, self.generator, field)
        return self._clip(programmed), nu

    def _clip(self, levels: torch.Tensor) -> torch.Tensor:
        """Clip at 0 uS (no negative conductances) when the chip has a conductance scale."""
        return levels if self.zero_level is None else levels.clamp_(min=self.zero_level)

    def _sense(self, target: torch.Tensor, programmed: torch.Tensor, nu: torch.Tensor | None, t: float) -> torch.Tensor:
        """One read ``t`` seconds after programming: drift, then fresh read noise."""
        return self._clip(self.model.read_levels(target, programmed, nu, t, self.generator)[0].clone())

    def _tile(self, tile_id: int) -> _Tile:
        check_tile(self, tile_id, self.name)
        if tile_id not in self._tiles:
            raise InputError(f"{self.name}: tile {tile_id} has not been programmed; expected program() before read()")
        return self._tiles[tile_id]

    def __repr__(self) -> str:
        wv = f", tolerance={self.tolerance}, max_pulses={self.max_pulses}" if self.tolerance else ""
        return f"EmulatedBackend({self.preset_name!r}, rows={self.rows}, cols={self.cols}, seed={self.seed}{wv})"


def _label(preset) -> str:
    """A short name for the preset argument (Preset name, name or path, or 'DeviceModel')."""
    if isinstance(preset, DeviceModel):
        return "DeviceModel"
    return str(getattr(preset, "name", preset))
