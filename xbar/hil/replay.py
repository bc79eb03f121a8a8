"""A backend that serves the read-backs of a recording, so a session can be re-evaluated exactly.

The n-th ``read(tile)`` returns the n-th recorded read of that tile (likewise for
``mvm``), bit for bit, whatever the order of the other tiles' calls. With
``strict=True`` (the default) every call is checked against the recording: the
programmed targets and shapes must be the recorded ones and every call must come
after the same ``advance()`` schedule as in the recording, so a replay cannot silently serve conductances for a
different model, preset or schedule. Every mismatch is a one-line
:class:`~xbar.errors.InputError` naming the file, the dataset and what was expected.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from xbar.errors import InputError
from xbar.hil.log import ADVANCE, MVM, OP_NAMES, PROGRAM, READ, Call, read_log
from xbar.hil.protocol import describe_tiles


class ReplayBackend:
    """Serve the session recorded in ``path`` (the ``/hil`` group of a recording)."""

    def __init__(self, path: str | os.PathLike, strict: bool = True) -> None:
        self.path = Path(path)
        self.log = read_log(self.path)
        self.strict = strict
        self.rows, self.cols, self.levels = self.log.rows, self.log.cols, self.log.levels
        self.level_conductance_uS = self.log.level_conductance_uS
        self.name = f"replay of {self.path.name} ({self.log.backend})"
        self.annotations = self.log.annotations
        self._time_s = self.log.start_time_s
        self._advanced_s = 0.0
        self._calls: dict[tuple[int, int], list[Call]] = {}
        for c in self.log.calls:
            if c.op != ADVANCE:
                self._calls.setdefault((c.op, c.tile), []).append(c)
        self._cursor: dict[tuple[int, int], int] = {}
        # in order of first use, so that program_model hands out the tiles as recorded
        self._tiles = list(dict.fromkeys(c.tile for c in self.log.calls if c.tile >= 0))

    # --------------------------------------------------------------- protocol
    def tiles(self) -> list[int]:
        return self._tiles

    @property
    def time_s(self) -> float:
        return self._time_s

    def advance(self, seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise InputError(f"{self.name}.advance: seconds = {seconds}: expected a finite number >= 0")
        self._time_s += float(seconds)
        self._advanced_s += float(seconds)

    def program(self, tile_id: int, targets: torch.Tensor) -> None:
        call, k = self._next(PROGRAM, tile_id)
        recorded = call.data[0]
        got = tuple(targets.shape)
        if got != recorded.shape:
            raise InputError(
                f"{self.path}: /hil/shape: program #{k} of tile {tile_id} has shape {list(recorded.shape)}; "
                f"the replay asked for {list(got)} (expected the recorded model and tile size)"
            )
        if self.strict:
            mine = targets.detach().to("cpu").numpy().astype(recorded.dtype)
            if not np.array_equal(mine, recorded):
                diff = float(np.abs(mine.astype(np.float64) - recorded).max())
                raise InputError(
                    f"{self.path}: /hil/values: program #{k} of tile {tile_id}: targets differ from the recorded ones "
                    f"(max |difference| {diff:.3g} levels); expected the recorded model and preset"
                )
            self._check_time(call, k, "program")
        self._done(call, k)

    def read(self, tile_id: int) -> torch.Tensor:
        call, k = self._next(READ, tile_id)
        if self.strict:
            self._check_time(call, k, "read")
        self._done(call, k)
        return torch.from_numpy(call.data[0].copy())

    def mvm(self, tile_id: int, x: torch.Tensor) -> torch.Tensor:
        call, k = self._next(MVM, tile_id)
        rx, ry = call.data
        if tuple(x.shape) != rx.shape:
            raise InputError(
                f"{self.path}: /hil/shape: mvm #{k} of tile {tile_id} had input shape {list(rx.shape)}; "
                f"the replay gave {list(x.shape)}"
            )
        if self.strict:
            if not np.array_equal(x.detach().to("cpu").numpy().astype(rx.dtype), rx):
                raise InputError(f"{self.path}: /hil/values: mvm #{k} of tile {tile_id}: input differs from the recorded one")
            self._check_time(call, k, "mvm")
        self._done(call, k)
        return torch.from_numpy(ry.copy())

    # ---------------------------------------------------------------- helpers
    def remaining(self) -> dict[str, int]:
        """Recorded calls not replayed yet, by kind (all zero after a complete replay)."""
        out = {OP_NAMES[op]: 0 for op in (PROGRAM, READ, MVM)}
        for (op, tile), calls in self._calls.items():
            out[OP_NAMES[op]] += len(calls) - self._cursor.get((op, tile), 0)
        return out

    def _next(self, op: int, tile_id: int) -> tuple[Call, int]:
        what = OP_NAMES[op]
        if isinstance(tile_id, bool) or not isinstance(tile_id, int):
            raise InputError(f"{self.path}: /hil/tile: tile id {tile_id!r}: expected an integer")
        calls = self._calls.get((op, tile_id), [])
        k = self._cursor.get((op, tile_id), 0)
        if k >= len(calls):
            if not any(t == tile_id for _, t in self._calls):
                raise InputError(
                    f"{self.path}: /hil/tile: tile {tile_id} does not occur in the recording; "
                    f"expected one of the recorded tiles {describe_tiles(self._tiles)}"
                )
            raise InputError(
                f"{self.path}: /hil/op: {what} #{k} of tile {tile_id} was not recorded "
                f"(the recording has {len(calls)}); expected no more {what}s than the recorded session"
            )
        return calls[k], k

    def _done(self, call: Call, k: int) -> None:
        """Move past ``call`` once it has been served (a refused call does not count)."""
        self._cursor[(call.op, call.tile)] = k + 1

    def _check_time(self, call: Call, k: int, what: str) -> None:
        """The call must come after the same advance() total as in the recording."""
        if call.advanced_s != self._advanced_s:
            raise InputError(
                f"{self.path}: /hil/seconds: {what} #{k} of tile {call.tile} was recorded after advancing "
                f"{call.advanced_s:g} s; the replay has advanced {self._advanced_s:g} s (expected the recorded advance() schedule)"
            )

    def __repr__(self) -> str:
        return f"ReplayBackend({str(self.path)!r}, {len(self.log.calls)} calls, {self.rows}x{self.cols})"
