"""Named, validated device descriptions (TOML presets); format in docs/presets.md."""

from xbar.presets.aihwkit import from_aihwkit
from xbar.presets.overrides import apply_overrides
from xbar.presets.schema import SCHEMA, SCHEMA_VERSION, Preset
from xbar.presets.store import dumps, load, names, read_toml, save

__all__ = ["SCHEMA", "SCHEMA_VERSION", "Preset", "apply_overrides", "dumps", "from_aihwkit", "load", "names", "read_toml", "save"]
