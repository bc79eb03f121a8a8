"""The package layers (pyproject ``[tool.importlinter]``): each package imports only from those below it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root`` with that tree's pyproject."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_package_keeps_its_layers():
    run = _lint(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr


def test_an_upward_import_breaks_the_contract(tmp_path):
    """Evaluation importing training (the cycle once there) is reported, naming both packages."""
    shutil.copytree(ROOT / "xbar", tmp_path / "xbar", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    kpp = tmp_path / "xbar" / "evaluation" / "kpp.py"
    kpp.write_text(kpp.read_text() + "\nfrom xbar.training import trainer  # noqa\n")
    run = _lint(tmp_path)
    assert run.returncode != 0
    assert "xbar.evaluation.kpp -> xbar.training.trainer" in run.stdout
