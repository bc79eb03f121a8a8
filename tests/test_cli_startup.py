"""The command line starts without importing torch: ``xbar --help`` is the first thing a newcomer
runs, ``xbar presets list`` / ``show`` the second (a preset and its device parts load without it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xbar import presets


def _modules_after(code: str) -> set[str]:
    """Names in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = code + "\nimport sys; print('MODULES:', ' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.rpartition("MODULES:")[2].split())


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["convert", "--help"], ["eval", "--help"]])
def test_help_does_not_import_torch(argv):
    loaded = _modules_after(f"from xbar.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass")
    assert "xbar.cli.cmd_train" in loaded  # every command was registered
    assert "torch" not in loaded


def _run_main(argv: list[str]) -> str:
    """Code that runs ``xbar ARGV`` and fails unless it exits 0."""
    return f"from xbar.cli import main\nassert main({argv!r}) == 0"


@pytest.mark.parametrize(
    "argv",
    [["presets", "list"], ["presets", "list", "--json"]]
    + [["presets", "show", name] for name in presets.names()]
    + [["presets", "show", "pcm", "--json"], ["presets", "show", str(presets.store.shipped_dir() / "hfox-bitflip.toml")]],
)
def test_presets_list_and_show_do_not_import_torch(argv):
    loaded = _modules_after(_run_main(argv))
    assert "xbar.presets.schema" in loaded  # the presets were read and validated
    assert "torch" not in loaded


def test_device_names_import_torch_only_when_used():
    loaded = _modules_after("from xbar.devices import BitFlipModel, DeviceConfig, KroneckerCovariance, ProgrammingNoise")
    assert "torch" not in loaded
    loaded = _modules_after("from xbar.devices import DeviceModel")
    assert "torch" in loaded and "xbar.devices.model" in loaded


def test_device_names_resolve_to_their_modules():
    import xbar.devices as devices
    from xbar.devices import model

    assert all(getattr(devices, name) is not None for name in devices.__all__)
    assert devices.DeviceModel is model.DeviceModel and set(devices.__all__) <= set(dir(devices))
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        _ = devices.no_such_thing


def test_import_xbar_does_not_import_torch():
    """(That ``import xbar`` still reaches every public name is tests/test_package.py's check.)"""
    assert "torch" not in _modules_after("import xbar")
