"""``xbar demo``: the newcomer's first command runs end to end and never clobbers a stranger's files."""

from __future__ import annotations

import json

import pytest

from xbar.cli import main
from xbar.demo import MARKER, DemoConfig, run, table

pytestmark = pytest.mark.slow


def test_short_demo_writes_runs_results_and_plot(tmp_path, capsys):
    out = tmp_path / "demo"
    cfg = DemoConfig(out=out, epochs=2, mc=4, trice_n_train=4, trice_kpp_images=200, progress=False)
    result = run(cfg, say=lambda _m: None)
    assert set(result["training"]) == {"sgd", "noise", "trice"}
    for name, stats in result["training"].items():
        assert 0.0 <= stats["kpp1"] <= stats["mean"] <= 1.0, name
        assert stats["n"] == 4
        assert (out / name / "model.pt").is_file() and (out / name / "manifest.json").is_file()
    assert result["training"]["noise"]["hyper"] == {"family": "gaussian"}
    from xbar import presets

    assert set(result["presets"]) == set(presets.names())
    assert all(s["devices"] > 0 and s["tiles"] > 0 for s in result["presets"].values())
    assert json.loads((out / MARKER).read_text()) == json.loads(json.dumps(result))
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a rerun replaces the demo's own directory without --force
    assert main(["demo", "--out", str(out), "--epochs", "2", "--mc", "2", "--no-presets", "--json",
                 "--no-progress"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["mc"] == 2 and again["presets"] == {}


def test_demo_refuses_a_directory_it_did_not_write(tmp_path, capsys):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "results.txt").write_text("precious")
    assert main(["demo", "--out", str(keep)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not written by xbar demo" in err[0] and "--force" in err[0]
    assert (keep / "results.txt").read_text() == "precious"


def test_table_formats_percentages_and_open_intervals():
    row = {"clean": 0.98, "stored": 0.97, "mean": 0.9, "std": 0.05, "kpp1": 0.75, "kpp1_interval": [None, 0.8]}
    text = table([("trice", row)], "model")
    assert "98.0%" in text and "97.0%" in text and "75.0%" in text and "[-, 80.0%]" in text


@pytest.mark.parametrize("preset", ["hfox-bitflip", "pcm"])
def test_demo_refuses_a_preset_without_level_sigma(tmp_path, capsys, preset):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", preset, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sigma-d does not apply" in err[0] and "fefet2" in err[0]
    assert not out.exists()  # refused before anything was written
