"""Load, save and list presets (TOML files; the shipped ones live in the top-level ``presets/`` folder)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from xbar.errors import InputError
from xbar.fileio import atomic_write_text
from xbar.presets.schema import Preset

if TYPE_CHECKING:
    from xbar.devices.model import DeviceModel


def shipped_dir() -> Path:
    """The folder of the shipped presets: ``xbar/presets/shipped`` in an installed wheel (the
    top-level ``presets/`` folder, packaged there), else ``presets/`` of the source checkout
    (editable installs, ``PYTHONPATH``)."""
    here = Path(__file__).resolve().parent
    installed = here / "shipped"
    return installed if installed.is_dir() else here.parents[1] / "presets"


def _shipped() -> dict[str, Path]:
    return {p.stem: p for p in sorted(shipped_dir().glob("*.toml"))}


def names() -> list[str]:
    """Names of the presets shipped with xbar."""
    return sorted(_shipped())


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise InputError(f"{p}: no such preset file") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot be read ({exc})") from None


def resolve(
    spec: str | os.PathLike | Preset | dict[str, Any], origin: str | None = None, base_dir: str | os.PathLike | None = None
) -> Preset:
    """The validated :class:`Preset` that ``spec`` names: the one place a preset is resolved.

    ``spec`` is a shipped preset name, a ``.toml`` path, a ``Preset`` (returned as is) or a
    preset dict (``Preset.to_dict()`` or a parsed TOML document, validated like a file;
    ``origin`` names it in error messages, ``base_dir`` is where its ``[correlation].file`` lies).
    ``Preset.device_model()`` gives its device model.
    """
    if isinstance(spec, Preset):
        return spec
    if isinstance(spec, dict):
        return Preset.from_dict(spec, origin=origin or f"preset {spec.get('name', '<dict>')}", base_dir=base_dir)
    if not isinstance(spec, str | os.PathLike):
        raise InputError(
            f"preset: got {type(spec).__name__}; expected a shipped preset name, a .toml path, a Preset or a "
            "preset dict (xbar.presets.from_aihwkit reads an aihwkit noise model or RPU config)"
        )
    key = str(spec)
    shipped = _shipped()
    if key in shipped:
        path = shipped[key]
    elif key.endswith(".toml") or os.sep in key or _exists(key):
        path = Path(key)
    else:
        shown = key if len(key) <= 80 else key[:77] + "..."
        raise InputError(f"preset {shown!r}: not a shipped preset ({', '.join(sorted(shipped))}) nor a .toml file")
    return Preset.from_dict(read_toml(path), origin=str(path if key not in shipped else f"preset {key}"), base_dir=path.parent)


def device_model_of(spec: DeviceModel | str | os.PathLike | Preset | dict[str, Any]) -> DeviceModel:
    """The device model of ``spec``: a :class:`DeviceModel` as is, anything else through :func:`resolve`."""
    from xbar.devices.model import DeviceModel

    return spec if isinstance(spec, DeviceModel) else resolve(spec).device_model()


def load(name_or_path: str | os.PathLike | Preset | dict[str, Any], **overrides: Any) -> Preset:
    """:func:`resolve` with keyword overrides.

    ``load("fefet1", sigma_d=0.1, weight_bits=4, bits_per_device=2)``.
    """
    preset = resolve(name_or_path)
    return preset.with_overrides(**overrides) if overrides else preset


def _exists(path: str) -> bool:
    """Whether ``path`` is an existing file; False for names the OS refuses (too long, ...)."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def dumps(preset: Preset, relative_to: str | os.PathLike | None = None) -> str:
    """The TOML text; a covariance sidecar below ``relative_to`` is named relative to it."""
    return tomli_w.dumps(preset.to_dict(relative_to))


def save(preset: Preset, path: str | os.PathLike, force: bool = False) -> Path:
    """Write ``preset`` as TOML atomically; refuses to overwrite unless ``force``."""
    parent = Path(path).parent
    text = dumps(preset, relative_to=parent)
    Preset.from_dict(tomllib.loads(text), origin=str(path), base_dir=parent)  # what we write must load back
    return atomic_write_text(path, text, force=force)
