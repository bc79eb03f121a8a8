"""Plain-text tables of study results for the command line and the examples (no torch import)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["format_table"]


def format_table(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    """Plain-text table of ``rows`` (floats in 3 significant digits, None as "-")."""

    def fmt(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.3g}" if (abs(v) >= 1e-3 or v == 0) and abs(v) < 1e4 else f"{v:.2e}"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(fmt(u) for u in v) + "]"
        return str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[j]) for row in cells)) if cells else len(c) for j, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
