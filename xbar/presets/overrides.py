"""``SECTION.FIELD=VALUE`` overrides of a preset (the command line's ``--set``).

Each value is read as a TOML value (``0.3``, ``[1.0, 2.0]``, ``true``, ``"x"``); a bare
word that is not TOML is taken as a string (``injection.family=gaussian``). The changed
preset is validated exactly like a preset file, so a bad field or value gives the same
one-line message a file would.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from typing import Any

from xbar.errors import InputError
from xbar.presets.schema import SECTIONS, Preset

FORM = "SECTION.FIELD=VALUE (e.g. programming.sigma_d=0.3)"


def parse_value(text: str) -> Any:
    """A TOML value, or the text itself when it is not one (a bare word)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str, origin: str = "--set") -> tuple[str, str, Any]:
    """``(section, field, value)`` of one ``SECTION.FIELD=VALUE``."""
    key, sep, text = item.partition("=")
    section, dot, field = key.strip().partition(".")
    if not sep or not dot or not section or not field or not text.strip():
        raise InputError(f"{origin} {item!r}: expected {FORM}")
    if section not in SECTIONS:
        raise InputError(
            f"{origin} {item!r}: unknown section [{section}]; expected one of {', '.join(SECTIONS)}"
        )
    return section, field.strip(), parse_value(text.strip())


def apply_overrides(preset: Preset, items: Iterable[str], origin: str = "--set") -> Preset:
    """``preset`` with every ``SECTION.FIELD=VALUE`` of ``items`` applied, then validated.

    A section the preset lacks is created (and must then be complete).
    """
    items = list(items)
    if not items:
        return preset
    data = preset.to_dict()
    for item in items:
        section, field, value = parse_override(item, origin)
        table = data.setdefault(section, {})
        if not isinstance(table, dict):  # pragma: no cover - to_dict writes tables
            raise InputError(f"{origin} {item!r}: [{section}] is not a table")
        table[field] = value
    return Preset.from_dict(data, origin=f"{origin} on preset {preset.name}")
