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
