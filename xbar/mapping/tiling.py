"""Crossbar tiling geometry: how a layer's weight matrix is laid onto rows x cols arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are made: presets load without it
    import torch


def crossbar_matrix(weights: torch.Tensor) -> torch.Tensor:
    """The crossbar layout of a weight tensor: rows = inputs (in*kh*kw), cols = outputs.

    Linear ``[out, in]`` and conv ``[out, in, kh, kw]`` weights both give ``[rows, cols]``.
    Works on leading batch dimensions if ``weights`` has them: pass ``[n, *w]`` with
    ``batch=True`` via :func:`crossbar_matrix_batched`.
    """
    return weights.reshape(weights.shape[0], -1).t()


def from_crossbar_matrix(matrix: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    return matrix.t().reshape(shape)


@dataclass(frozen=True)
class TileGrid:
    """How a ``rows x cols`` matrix splits into crossbar tiles."""

    rows: int
    cols: int
    tile_rows: int
    tile_cols: int

    @property
    def grid(self) -> tuple[int, int]:
        return math.ceil(self.rows / self.tile_rows), math.ceil(self.cols / self.tile_cols)

    @property
    def n_tiles(self) -> int:
        r, c = self.grid
        return r * c

    def tile_shapes(self) -> list[tuple[int, int]]:
        """Used size of each tile (the last row/column of tiles may be partly filled)."""
        nr, nc = self.grid
        out = []
        for i in range(nr):
            for j in range(nc):
                out.append(
                    (
                        min(self.tile_rows, self.rows - i * self.tile_rows),
                        min(self.tile_cols, self.cols - j * self.tile_cols),
                    )
                )
        return out

    @property
    def utilization(self) -> float:
        return self.rows * self.cols / (self.n_tiles * self.tile_rows * self.tile_cols)


def tile_grid(weights: torch.Tensor, tile_rows: int, tile_cols: int) -> TileGrid:
    import torch

    rows = int(torch.tensor(weights.shape[1:]).prod().item()) if weights.dim() > 1 else 1
    return TileGrid(rows=rows, cols=weights.shape[0], tile_rows=tile_rows, tile_cols=tile_cols)
