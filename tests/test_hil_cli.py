"""``xbar hil program|eval|finetune``: record, replay (same result), fit report, one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import cli_json, cli_refused, lenet, one_thread, write_run
from xbar import hil, presets
from xbar.cli import main
from xbar.cli.cmd_hil import comparison_text


@pytest.fixture(autouse=True, scope="module")
def _threads():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("hil") / "run", lenet(seed=0), preset="fefet1")




FAST = ["--limit", "120", "--no-progress", "--seed", "3"]
SAME = lambda d: {k: v for k, v in d.items() if k not in ("backend", "record", "summary", "write_verify")}  # noqa: E731


def test_program_records_replays_and_fits(run, capsys, tmp_path):
    rec, plot = tmp_path / "s.h5", tmp_path / "p.png"
    live = cli_json(capsys, ["hil", "program", str(run), "--backend", "emulated:fefet1", "--tolerance", "0.1",
                          "--record", str(rec), "--fit-report", "--plot", str(plot), "--json", *FAST])
    assert live["summary"]["write_verify"]["devices"] == live["summary"]["devices"]
    assert live["record"] == str(rec) and plot.read_bytes()[:4] == b"\x89PNG"
    assert [r["layer"] for r in live["layers"]] == [n for n, _ in hil.weight_parameters(lenet())]
    cmp = live["chip_vs_preset"]
    sig = [r for r in cmp["levels"] if r["quantity"] == "programming sigma"]
    assert len(sig) == 4 and cmp["retrain"]  # write-verify at 0.1 leaves far less than fefet1's 0.1/0.4 sigmas
    assert all(r["measured"] < r["trained"] and r["outside"] for r in sig)
    again = cli_json(capsys, ["hil", "program", str(run), "--backend", f"replay:{rec}", "--fit-report", "--json", *FAST])
    assert SAME(again) == SAME(live)
    # the recorder never overwrites without --force
    cli_refused(capsys, ["hil", "program", str(run), "--record", str(rec), *FAST], str(rec))


def test_eval_times_and_replay(run, capsys, tmp_path):
    rec = tmp_path / "e.h5"
    argv = ["hil", "eval", str(run), "--times", "0,60,3600", "--json", *FAST]
    live = cli_json(capsys, [*argv, "--record", str(rec)])
    assert [r["time_s"] for r in live["times"]] == [0.0, 60.0, 3600.0]
    assert all(0 <= r["accuracy"] <= 1 for r in live["times"])
    assert SAME(cli_json(capsys, [*argv, "--backend", f"replay:{rec}"])) == SAME(live)
    cli_refused(capsys, [*argv, "--backend", f"replay:{rec}", "--times", "0,120"], "expected the recorded advance() schedule")


def test_finetune_table_record_and_exact_replay(run, capsys, tmp_path):
    rec, plot = tmp_path / "f.h5", tmp_path / "f.png"
    argv = ["hil", "finetune", str(run), "--epochs", "1", "--json", *FAST]
    live = cli_json(capsys, [*argv, "--backend", "emulated:fefet1", "--record", str(rec), "--plot", str(plot)])
    assert [r["programmed"] for r in live["layers"]] == [1, 2, 3, 4, 5]
    assert live["final_accuracy_without_finetuning"] is not None and plot.stat().st_size > 1000
    assert SAME(cli_json(capsys, [*argv, "--backend", f"replay:{rec}"])) == SAME(live)
    text = main(["hil", "finetune", str(run), "--epochs", "0", "--no-baseline", *FAST])
    out = capsys.readouterr().out
    assert text == 0 and "with fine-tuning" in out and "layers on chip" in out


def test_arc2_backend_errors_are_one_line(run, capsys, monkeypatch):
    cli_refused(capsys, ["hil", "program", str(run), "--backend", "arc2", *FAST], "--level-conductance is required")
    monkeypatch.setitem(sys.modules, "pyarc2", None)
    cli_refused(capsys, ["hil", "program", str(run), "--backend", "arc2:0", "--level-conductance", "10,40,70,100", *FAST],
         "pyarc2 is not installed")
    cli_refused(capsys, ["hil", "program", str(run), "--backend", "arc2:x", "--level-conductance", "10,40,70,100", *FAST],
         "expected an integer instrument id")


def test_bad_input_is_one_line(run, capsys, tmp_path):
    cli_refused(capsys, ["hil", "program", str(run), "--backend", "gpu", *FAST], "--backend 'gpu'", "emulated[:PRESET]")
    cli_refused(capsys, ["hil", "program", str(run), "--fit-report", *FAST], "--fit-report", "--record")
    cli_refused(capsys, ["hil", "eval", str(run), "--times", "60,0", *FAST], "--times")
    cli_refused(capsys, ["hil", "program", str(run), "--backend", f"replay:{tmp_path / 'none.h5'}", *FAST], "none.h5")
    cli_refused(capsys, ["hil"], "expected a subcommand")
    cli_refused(capsys, ["hil", "program", str(run), "--backend", "emulated:pcm", *FAST], "expected the same levels")


def test_compare_with_preset_flags_only_what_differs(tmp_path):
    """A chip that behaves like the preset agrees with it; one with a larger sigma is flagged per level."""
    preset = presets.load("fefet1")
    target = (torch.arange(64 * 64) % 4).reshape(64, 64).float()
    verdicts = {}
    for label, chip_preset in {"same": preset, "noisier": presets.load("fefet1", sigma_d=0.15)}.items():
        path = tmp_path / f"{label}.h5"
        with hil.RecordingBackend(hil.EmulatedBackend(chip_preset, rows=64, cols=64, seed=0), path) as rec:
            for t in range(4):
                rec.program(t, target)
                rec.read(t)
        verdicts[label] = hil.compare_with_preset(path, preset)
    sig = lambda c: [r for r in c.rows if r["quantity"] == "programming sigma"]  # noqa: E731
    assert not any(r["outside"] for r in sig(verdicts["same"]))
    assert all(r["outside"] and r["measured"] > r["trained"] for r in sig(verdicts["noisier"]))
    assert verdicts["noisier"].retrain and "retrain" in comparison_text(verdicts["noisier"])
