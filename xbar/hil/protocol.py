"""The crossbar backend protocol: what xbar needs from a chip (emulated, replayed or real).

Units. Every value that crosses the protocol is in the *level units* of the preset
the chip is described by: one step between adjacent nominal conductance levels of a
device, level 0 at 0 (for analog storage, ``levels == 0``, the unit is microsiemens).
That is the unit of the preset's sigmas, so an emulated chip and a preset speak
the same language, and a recording can be fitted without knowing the instrument.
A driver for a real chip converts with its nominal level conductances, the same
affine map the calibration reader uses (``level = (G - G_0) / step``,
``step = (G_{L-1} - G_0) / (L - 1)``), and publishes them as
``level_conductance_uS`` so that recordings can also store microsiemens.

Geometry. A chip has tiles (crossbar arrays) of ``rows x cols`` devices, named by
integer ids from :meth:`CrossbarBackend.tiles`. ``program(tile, targets)`` takes a
block ``[r, c]`` with ``r <= rows``, ``c <= cols`` placed at the tile's top-left
corner (devices outside it are left alone), and ``read(tile)`` returns the block
programmed last, same shape. Rows are crossbar inputs, columns outputs
(``xbar.mapping.crossbar_matrix``).

Time. ``time_s`` is the chip's clock in seconds and ``advance(seconds)`` moves it on
(a real driver sleeps, or waits for a bake, and reads its own clock); drift is a
function of the time since each tile was programmed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from xbar.errors import InputError


@runtime_checkable
class CrossbarBackend(Protocol):
    """A crossbar chip in level units (see the module docstring).

    Attributes:
        rows, cols: devices per tile (crossbar inputs x outputs).
        levels: nominal levels per device, 2^B (0: continuous, analog storage in uS).
        level_conductance_uS: nominal conductance of each level, or None when the
            backend has no conductance scale (emulated chips, level units only).
        name: a short description written into recordings.
    """

    rows: int
    cols: int
    levels: int
    level_conductance_uS: tuple[float, ...] | None
    name: str

    def tiles(self) -> Sequence[int]:
        """Ids of the tiles this chip offers."""
        ...

    @property
    def time_s(self) -> float:
        """The chip's clock, seconds."""
        ...

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass (drift acts on the programmed devices)."""
        ...

    def program(self, tile_id: int, targets: torch.Tensor) -> None:
        """Program the block ``targets [r, c]`` (level units) at the top-left of ``tile_id``."""
        ...

    def read(self, tile_id: int) -> torch.Tensor:
        """Read the block programmed last on ``tile_id`` back, ``[r, c]`` level units."""
        ...


@runtime_checkable
class SupportsMVM(Protocol):
    """Optional capability: a matrix-vector product computed by the chip."""

    def mvm(self, tile_id: int, x: torch.Tensor) -> torch.Tensor:
        """``x [b, r] @ G [r, c] -> [b, c]`` through the block programmed last on ``tile_id``."""
        ...


def check_block(backend: CrossbarBackend, tile_id: int, targets: torch.Tensor, origin: str) -> None:
    """Raise InputError unless ``targets`` is a finite 2-D block that fits a tile of ``backend``."""
    check_tile(backend, tile_id, origin)
    if targets.dim() != 2:
        raise InputError(f"{origin}: tile {tile_id}: targets have shape {list(targets.shape)}; expected [rows, cols]")
    r, c = targets.shape
    if not (1 <= r <= backend.rows and 1 <= c <= backend.cols):
        raise InputError(
            f"{origin}: tile {tile_id}: targets of shape [{r}, {c}] do not fit a "
            f"{backend.rows}x{backend.cols} tile; expected 1..{backend.rows} rows and 1..{backend.cols} cols"
        )
    if not bool(torch.isfinite(targets).all()):
        raise InputError(f"{origin}: tile {tile_id}: targets contain NaN or Inf; expected finite levels")


def check_tile(backend: CrossbarBackend, tile_id: int, origin: str) -> None:
    """Raise InputError unless ``tile_id`` is one of ``backend.tiles()``."""
    tiles = backend.tiles()
    if isinstance(tile_id, bool) or not isinstance(tile_id, int) or tile_id not in tiles:
        raise InputError(f"{origin}: tile id {tile_id!r}: expected an integer in {describe_tiles(tiles)}")


def describe_tiles(tiles: Sequence[int]) -> str:
    """``range(0, 64)`` -> ``[0, 64)``; other sequences are listed briefly."""
    if isinstance(tiles, range) and tiles.step == 1:
        return f"[{tiles.start}, {tiles.stop})"
    items = list(tiles)
    return "{" + ", ".join(map(str, items[:8])) + (", ...}" if len(items) > 8 else "}")


def levels_to_uS(levels: torch.Tensor, level_conductance_uS: Sequence[float]) -> torch.Tensor:
    """Level units -> microsiemens through the nominal end levels (inverse of the reader's map)."""
    g0, g1 = float(level_conductance_uS[0]), float(level_conductance_uS[-1])
    step = (g1 - g0) / (len(level_conductance_uS) - 1)
    return levels.double() * step + g0


def check_levels(name: str, tile_id: int, target: torch.Tensor, levels: int) -> None:
    """Target levels must be integers 0 to ``levels - 1`` (discrete devices) or conductances >= 0 uS
    (``levels`` = 0: analog devices); InputError naming backend ``name`` and the tile otherwise."""
    if levels:
        ok = (target == target.round()) & (target >= 0) & (target <= levels - 1)
        if not bool(ok.all()):
            bad = float(target[~ok].flatten()[0])
            raise InputError(f"{name}: tile {tile_id}: target level {bad}: expected integers 0 to {levels - 1}")
    elif bool((target < 0).any()):
        raise InputError(f"{name}: tile {tile_id}: negative target conductance: expected >= 0 uS")


def nominal_conductances(values: Sequence[float] | None, levels: int, name: str) -> tuple[float, ...] | None:
    """Validated nominal conductances of the levels, uS (None stays None): ``levels`` finite,
    non-negative, strictly increasing values; InputError naming backend ``name`` otherwise."""
    if values is None:
        return None
    v = tuple(float(x) for x in values)
    if not levels or len(v) != levels or any(not math.isfinite(x) or x < 0 for x in v) or any(b <= a for a, b in zip(v, v[1:])):
        raise InputError(
            f"{name}: level_conductance_uS = {list(v)}: expected {levels or 'discrete'} "
            "finite, non-negative, strictly increasing conductances (one per level of the preset)"
        )
    return v


def zero_level(nominal: Sequence[float] | None) -> float | None:
    """0 uS in level units, ``-G_0 / step`` (None without a conductance scale)."""
    if nominal is None:
        return None
    return -nominal[0] * (len(nominal) - 1) / (nominal[-1] - nominal[0])

