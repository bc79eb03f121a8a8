"""The ``xbar`` package namespace: subpackages reachable after a plain ``import xbar``."""

from __future__ import annotations

import json
import subprocess
import sys

SUBPACKAGES = ["presets", "models", "data", "devices", "tiles", "training", "evaluation", "calibration", "hil"]


def _fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter (nothing imported yet) and return the JSON it prints."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_subpackages_are_attributes_after_import_xbar() -> None:
    code = f"""
import json, sys
import xbar
before = sorted(m for m in sys.modules if m.split(".")[0] == "aihwkit" or m in ("xbar.tiles", "xbar.training"))
names = {SUBPACKAGES!r}
kinds = {{n: type(getattr(xbar, n)).__name__ + ":" + getattr(xbar, n).__name__ for n in names}}
net = xbar.models.build("lenet")
try:
    xbar.no_such_thing
    missing = "no error"
except AttributeError as exc:
    missing = str(exc)
print(json.dumps({{"before": before, "kinds": kinds, "params": sum(p.numel() for p in net.parameters()),
                   "missing": missing, "dir": sorted(set(names) - set(dir(xbar))),
                   "callables": [callable(xbar.convert), callable(xbar.sample_weights)]}}))
"""
    res = _fresh(code)
    assert res["before"] == []  # import xbar stays light: no aihwkit, no tiles, no training
    assert res["kinds"] == {n: f"module:xbar.{n}" for n in SUBPACKAGES}
    assert res["params"] > 0
    assert "no attribute 'no_such_thing'" in res["missing"]
    assert res["dir"] == [] and res["callables"] == [True, True]


def test_getting_started_snippet_runs() -> None:
    """docs/getting-started.md builds a zoo model through the package attribute."""
    res = _fresh(
        "import json, xbar\n"
        "p = xbar.presets.load('fefet1')\n"
        "m = xbar.convert(xbar.models.build('lenet'), p)\n"
        "print(json.dumps({'tiles': len(xbar.tiles.xbar_tiles(m)), 'dev': p.mapping.devices_per_weight}))\n"
    )
    assert res == {"tiles": 5, "dev": 2}


def _pyproject() -> dict:
    import tomllib
    from pathlib import Path

    return tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def test_the_wheel_lists_every_package_and_the_shipped_presets() -> None:
    """pyproject lists the packages (for the presets/ mapping): a new subpackage must be added there."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "xbar").rglob("__init__.py")}
    st = _pyproject()["tool"]["setuptools"]
    assert set(st["packages"]) == found | {"xbar.presets.shipped"}
    assert st["package-dir"] == {"xbar.presets.shipped": "presets"}
    assert st["package-data"]["xbar.presets.shipped"] == ["*.toml"]
    assert sorted(p.stem for p in (root / "presets").glob("*.toml")) == __import__("xbar").presets.names()


def test_shipped_presets_are_found_in_the_installed_layout(tmp_path) -> None:
    """As the wheel installs them (xbar/presets/shipped/*.toml), from any working directory."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    site = tmp_path / "site"
    shutil.copytree(root / "xbar", site / "xbar", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "presets", site / "xbar" / "presets" / "shipped")
    code = ("import json; from xbar import presets; from xbar.presets.store import shipped_dir; "
            "print(json.dumps([str(shipped_dir()), presets.names(), presets.load('fefet1').name]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    where, names, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert where == str(site / "xbar" / "presets" / "shipped")
    assert names == sorted(p.stem for p in (root / "presets").glob("*.toml")) and loaded == "fefet1"
