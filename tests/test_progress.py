"""What a run shows while it works: a line per epoch on stderr (also in a log), progress at a
modest rate when stderr is a file, and nothing but JSON with ``--quiet --json``."""

from __future__ import annotations

import json
import re
import time

from xbar import progress
from xbar.cli import main
from xbar.training import train

FAST = dict(lr=0.05, batch_size=256, checkpoint_every=0)


def test_every_epoch_leaves_one_line_on_stderr_when_it_is_not_a_terminal(capsys):
    train("mlp", "digits", "rram-uniform", "sgd", epochs=2, seed=0, eval_mc=4, **FAST)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2, err
    for e, line in enumerate(lines, 1):
        assert re.match(rf"epoch {e}/2  loss \d\.\d{{4}}  train acc \d\.\d{{4}}  test acc \d\.\d{{4}}  "
                        r"test KPP\(1%\) \d\.\d{4}  \d+\.\d s$", line), line
    assert "\r" not in err  # readable in a log file


def test_quiet_json_prints_json_only(tmp_path, capsys):
    code = main(["train", "--model", "mlp", "--data", "digits", "--preset", "rram-uniform", "--algo", "sgd",
                 "--epochs", "1", "--batch-size", "256", "--out", str(tmp_path / "run"), "--quiet", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    assert err == ""
    assert json.loads(out)["metrics"]["epochs_done"] == 1


def test_progress_in_a_log_is_a_line_per_interval(monkeypatch, capsys):
    """Not a terminal: nothing for work shorter than the interval; longer work gets one
    newline-terminated line per interval (plus the last one), never a carriage return."""
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 60.0)
    with progress.progress_bar(50, "quick", unit="inst") as bar:
        for _ in range(50):
            bar.update(1)
    assert capsys.readouterr().err == ""

    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.2)
    with progress.progress_bar(10, "slow", unit="inst") as bar:
        for _ in range(10):
            time.sleep(0.1)
            bar.update(1)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and err.endswith("\n")
    assert all(line.startswith("slow:") for line in lines)
    assert 2 <= len(lines) <= 7, err  # 1 s of work at one line per 0.2 s, the first after 0.2 s
    assert "10/10" in lines[-1]


def test_disabled_progress_is_silent(capsys):
    with progress.progress_bar(5, "off", enabled=False) as bar:
        bar.update(5)
    assert capsys.readouterr().err == ""
