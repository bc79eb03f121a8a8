"""The physical crossbar tiling of a converted model (one aihwkit tile per layer, many crossbars).

Each layer's weight matrix (rows = inputs ``in*kh*kw``, cols = outputs) is cut
into ``tile_rows x tile_cols`` crossbars (``xbar.mapping.tile_grid``). Every
device of a weight (sign planes x bit slices) sits at the same position of its
own crossbar, as the device model's correlated noise assumes, so a layer needs
``grid tiles x devices per weight`` crossbar arrays. Devices per weight come from
``DeviceModel.devices_per_weight``: sign planes x bit slices, or one binary cell per
stored bit when the weights are number-format bit patterns (32 for float32).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from xbar.mapping import tile_grid
from xbar.tiles.control import xbar_layers
from xbar.tiles.layers import XbarConv2d


def tile_map(model: nn.Module) -> list[dict[str, Any]]:
    """One dict per analog layer: name, kind, weight shape, matrix and tile sizes, grid, devices."""
    out = []
    for name, layer in xbar_layers(model):
        tile = layer.analog_module
        dm = tile.tile.device_model
        cfg = dm.mapping
        weight = tile.tile.weight
        grid = tile_grid(weight, cfg.tile_rows, cfg.tile_cols)
        nr, nc = grid.grid
        weights = grid.rows * grid.cols
        per_weight = dm.devices_per_weight
        out.append(
            {
                "name": name,
                "kind": "conv2d" if isinstance(layer, XbarConv2d) else "linear",
                "weight_shape": list(layer.weight_shape),
                "rows": grid.rows,
                "cols": grid.cols,
                "tile_rows": cfg.tile_rows,
                "tile_cols": cfg.tile_cols,
                "grid": [nr, nc],
                "tiles": nr * nc,
                "devices_per_weight": per_weight,
                "arrays": nr * nc * per_weight,
                "weights": weights,
                "devices": weights * per_weight,
                "utilization": round(grid.utilization, 6),
            }
        )
    return out


def tile_map_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Layers, weights, tiles, arrays and devices summed over a :func:`tile_map`."""
    cells = sum(r["tiles"] * r["tile_rows"] * r["tile_cols"] for r in rows)
    weights = sum(r["weights"] for r in rows)
    return {
        "layers": len(rows),
        "weights": weights,
        "tiles": sum(r["tiles"] for r in rows),
        "arrays": sum(r["arrays"] for r in rows),
        "devices": sum(r["devices"] for r in rows),
        "utilization": round(weights / cells, 6) if cells else 0.0,
    }


def format_tile_map(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table of a :func:`tile_map` with a totals line."""
    head = ["layer", "kind", "weight shape", "matrix", "crossbar", "grid", "arrays", "dev/w", "devices", "util"]
    body = []
    for r in rows:
        body.append(
            [
                r["name"] or "(model)",
                r["kind"],
                "x".join(str(d) for d in r["weight_shape"]),
                f"{r['rows']}x{r['cols']}",
                f"{r['tile_rows']}x{r['tile_cols']}",
                f"{r['grid'][0]}x{r['grid'][1]}",
                str(r["arrays"]),
                str(r["devices_per_weight"]),
                f"{r['devices']:,}",
                f"{100 * r['utilization']:.1f}%",
            ]
        )
    t = tile_map_totals(rows)
    body.append(
        ["total", "", f"{t['weights']:,} w", "", "", f"{t['tiles']} tiles", str(t["arrays"]), "", f"{t['devices']:,}", f"{100 * t['utilization']:.1f}%"]
    )
    widths = [max(len(head[i]), *(len(b[i]) for b in body)) for i in range(len(head))]
    right = {6, 7, 8, 9}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), rule, *(line(b) for b in body[:-1]), rule, line(body[-1])])
