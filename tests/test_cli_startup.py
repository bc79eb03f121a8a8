"""The command line starts without importing torch: ``xbar --help`` is the first thing a newcomer runs."""

from __future__ import annotations

import subprocess
import sys

import pytest


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


def test_import_xbar_is_cheap_but_reaches_everything():
    loaded = _modules_after("import xbar")
    assert "torch" not in loaded
    assert callable(_attr("sample_weights"))


def _attr(name: str):
    import xbar

    return getattr(xbar, name)
