"""``xbar presets list|show``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xbar import presets
from xbar.cli import main


def test_presets_list_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["name", "storage", "dev/w"]
    for name in presets.names():
        assert any(line.startswith(name + " ") for line in out.splitlines())
    assert main(["presets", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == presets.names()
    fefet = next(r for r in rows if r["name"] == "fefet1")
    assert fefet["devices_per_weight"] == 2 and fefet["effects"] == ["programming"]
    flips = next(r for r in rows if r["name"] == "hfox-bitflip")  # float32 bit by bit on binary cells
    assert flips["devices_per_weight"] == 32 and flips["storage"].startswith("float32 bit patterns")


def test_presets_show_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets", "show", "pcm"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pcm: Phase-change memory")
    assert "source: aihwkit 1.1.0 PCMLikeNoiseModel" in out
    assert "2 device(s) per weight" in out
    assert "[drift]" in out and "nu_mean_log" in out and "[-0.0155, 0.0244]" in out
    assert main(["presets", "show", "fefet1"]) == 0
    assert "4 levels per device" in capsys.readouterr().out
    assert main(["presets", "show", "hfox-bitflip"]) == 0
    assert "32 device(s) per weight, 2 levels per device" in capsys.readouterr().out


def test_presets_show_json_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = presets.save(presets.load("fefet1", sigma_d=0.2, name="mine"), tmp_path / "mine.toml")
    assert main(["presets", "show", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "mine" and data["preset"]["programming"]["sigma_d"] == 0.2
    assert data["devices_per_weight"] == 2 and data["levels_per_device"] == 4


def test_presets_show_unknown_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets", "show", "no-such-preset"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such-preset" in err and "Traceback" not in err
    assert main(["presets"]) == 2
