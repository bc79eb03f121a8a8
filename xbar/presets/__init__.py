"""Named, validated device descriptions (TOML presets); format in docs/presets.md."""

from xbar.presets.aihwkit import from_aihwkit
from xbar.presets.overrides import apply_overrides
from xbar.presets.schema import SCHEMA, SCHEMA_VERSION, Preset
from xbar.presets.store import device_model_of, dumps, load, names, read_toml, resolve, save

__all__ = ["SCHEMA", "SCHEMA_VERSION", "Preset", "apply_overrides", "device_model_of", "dumps", "from_aihwkit", "load", "names", "read_toml", "resolve", "save"]
