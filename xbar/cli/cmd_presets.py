"""``xbar presets list|show``: the shipped device presets and what is in one."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from xbar.cli.common import emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the shipped device presets or show one")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    ls = actions.add_parser("list", help="the shipped presets, one line each")
    ls.add_argument("--json", action="store_true", help="print the machine-readable result on stdout")
    ls.set_defaults(func=run_list)
    show = actions.add_parser("show", help="the sections and fields of a preset")
    show.add_argument("preset", metavar="NAME_OR_PATH", help="shipped preset name or preset TOML file")
    show.add_argument("--json", action="store_true", help="print the machine-readable result on stdout")
    show.set_defaults(func=run_show)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_usage(sys.stderr)
    print("xbar presets: error: expected an action: list or show NAME", file=sys.stderr)
    return 2


def storage(preset) -> str:
    """One phrase for how a preset stores weights, e.g. ``4-bit on 2-bit devices, magnitude``.

    Presets with bit flips on the weights store number-format bit patterns, one bit per
    binary cell (``float32 bit patterns, 1 bit per binary cell``).
    """
    flip = preset.bitflip
    if flip is not None and "weights" in preset.bitflip_targets:
        return f"{flip.storage} bit patterns, 1 bit per binary cell"
    mapping = preset.mapping
    if mapping.analog:
        return f"analog (g_max {mapping.conductance_max_uS:g} uS), {mapping.sign}"
    return f"{mapping.weight_bits}-bit on {mapping.bits_per_device}-bit devices, {mapping.sign}"


def _effects(data: dict[str, Any]) -> list[str]:
    return [s for s in ("programming", "correlation", "read_noise", "drift", "bitflip", "weight_variation") if s in data]


def summary(name: str) -> dict[str, Any]:
    from xbar import presets

    p = presets.resolve(name)
    return {
        "name": p.name,
        "description": p.description,
        "source": p.source,
        "storage": storage(p),
        "devices_per_weight": p.devices_per_weight,
        "effects": _effects(p.to_dict()),
    }


def run_list(args: argparse.Namespace) -> int:
    from xbar import presets

    rows = [summary(n) for n in presets.names()]
    head = ["name", "storage", "dev/w", "effects", "description"]
    body = [
        [r["name"], r["storage"], str(r["devices_per_weight"]), ",".join(r["effects"]) or "none", _clip(r["description"], 70)]
        for r in rows
    ]
    emit(rows, args.json, _table(head, body))
    return 0


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def run_show(args: argparse.Namespace) -> int:
    from xbar import presets

    p = presets.resolve(args.preset)
    data = p.to_dict()
    m = p.mapping
    result = {
        "name": p.name,
        "description": p.description,
        "source": p.source,
        "storage": storage(p),
        "devices_per_weight": p.devices_per_weight,
        "levels_per_device": 2 if p.stores_bit_patterns else m.levels,
        "preset": data,
    }
    body = []
    for section, table in data.items():
        if not isinstance(table, dict):
            continue
        first = True
        for key, value in table.items():
            body.append([f"[{section}]" if first else "", key, _value(value)])
            first = False
    lines = [
        f"{p.name}: {p.description}" if p.description else p.name,
        f"source: {p.source or '(none)'}",
        f"storage: {storage(p)}; {p.devices_per_weight} device(s) per weight"
        + (f", {result['levels_per_device']} levels per device" if result["levels_per_device"] else ""),
        "",
        _table(["section", "field", "value"], body),
    ]
    emit(result, args.json, "\n".join(lines))
    return 0


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def _table(head: list[str], body: list[list[str]]) -> str:
    widths = [max(len(head[i]), *(len(r[i]) for r in body)) if body else len(head[i]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *(line(r) for r in body)])
