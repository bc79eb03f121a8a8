"""``xbar train``: bad arguments exit 2 with one line; a killed run resumes to the same weights."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from xbar.cli import main

BASE = ["train", "--model", "lenet", "--data", "digits", "--preset", "fefet2", "--quiet"]


def _cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "import sys; from xbar.cli import main; sys.exit(main())", *args]
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (BASE + ["--algo", "adam", "--out", "{d}"], "--algo"),
        (BASE + ["--algo", "sgd", "--out", "{d}", "--epochs", "0"], "--epochs"),
        (BASE + ["--algo", "sgd", "--out", "{d}", "--lr", "-1"], "--lr"),
        (BASE + ["--algo", "sam", "--out", "{d}", "--hp", "rho=abc"], "rho"),
        (BASE + ["--algo", "sam", "--out", "{d}", "--hp", "alpha=1"], "alpha"),
        (BASE + ["--algo", "sam", "--out", "{d}", "--hp", "noequals"], "KEY=VALUE"),
        (BASE + ["--algo", "sam"], "--out"),
        (["train", "--data", "digits", "--preset", "fefet2", "--algo", "sgd", "--out", "{d}"], "--model"),
        (["train", "--model", "nonet", "--data", "digits", "--preset", "fefet2", "--algo", "sgd", "--out", "{d}"], "nonet"),
        (["train", "--model", "lenet", "--data", "digits", "--preset", "nopreset", "--algo", "sgd", "--out", "{d}"], "nopreset"),
        (BASE + ["--algo", "sgd", "--out", "{d}", "--resume"], "resume"),
        (BASE + ["--algo", "sgd", "--out", "{d}", "--bogus"], "--bogus"),
        # numeric hyper-parameters: finite and in range, checked before anything runs
        (BASE + ["--algo", "trice", "--out", "{d}", "--hp", "th=inf"], "th = inf"),
        (BASE + ["--algo", "trice", "--out", "{d}", "--hp", "th=-50"], "th = -50"),
        (BASE + ["--algo", "noise", "--out", "{d}", "--hp", "threshold=inf"], "threshold = inf"),
        (BASE + ["--algo", "noise", "--out", "{d}", "--hp", "family=right-truncated", "--hp", "threshold=-10"],
         "threshold = -10"),
        (BASE + ["--algo", "noise", "--out", "{d}", "--hp", "sigma_scale=nan"], "sigma_scale = nan"),
        (BASE + ["--algo", "noise", "--out", "{d}", "--hp", "sigma_scale=-1"], "sigma_scale"),
        (BASE + ["--algo", "wvat", "--out", "{d}", "--hp", "gamma=-1"], "gamma"),
        (BASE + ["--algo", "sgd", "--out", "{d}", "--hp", "momentum=inf"], "momentum = inf"),
        (BASE + ["--algo", "sgd", "--out", "{d}", "--device", "foo"], "device = 'foo'"),
        (BASE + ["--algo", "sgd", "--out", "{d}", "--weight-bits", "17"], "weight_bits"),
        (BASE + ["--algo", "sgd", "--out", "{d}", "--weight-bits", "3"], "weight_bits"),
        (["train", "--model", "lenet", "--data", "nodata", "--preset", "fefet2", "--algo", "sgd", "--out", "{d}"],
         "nodata"),
        # a diverging run stops with one line, not an IndexError deep inside the device tables
        (BASE + ["--algo", "noise", "--out", "{d}", "--epochs", "1", "--lr", "1e6"], "training diverged at epoch 1"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, needle):
    d = str(tmp_path / "run")
    code = main([a.format(d=d) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err and "Traceback" not in err
    assert not os.path.exists(d)  # a refused or failed start leaves no run directory behind


def test_run_killed_before_its_first_checkpoint_can_be_started_again_without_force(tmp_path):
    args = [*BASE, "--algo", "sgd", "--epochs", "1", "--checkpoint-every", "0", "--out", str(tmp_path / "run")]
    killed = _cli(*args, env={"XBAR_TRAIN_KILL_AFTER_STEPS": "2"})
    assert killed.returncode == -signal.SIGKILL
    man = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert man["status"] == "running" and not (tmp_path / "run" / "checkpoint.pt").exists()
    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "done"


def test_weight_bits_is_recorded_in_the_preset_spec_that_studies_use(tmp_path):
    from xbar.checkpoints import load_model
    from xbar.cli._studies import resolve_preset

    d = tmp_path / "run"
    assert main([*BASE, "--algo", "sgd", "--epochs", "1", "--weight-bits", "6", "--out", str(d)]) == 0
    man = json.loads((d / "manifest.json").read_text())
    assert man["hyper"]["weight_bits"] == 6 and man["preset_spec"]["mapping"]["weight_bits"] == 6
    assert man["preset"] == "fefet2"
    _, info = load_model(d)
    preset = resolve_preset(argparse.Namespace(checkpoint=str(d), preset=None), info)
    assert preset.mapping.weight_bits == 6 and preset.name == "fefet2"
    assert main(["train", "--out", str(d), "--resume", "--quiet"]) == 0  # the recorded spec resumes as it is


def test_existing_run_directory_needs_force(tmp_path, capsys):
    d = tmp_path / "run"
    d.mkdir()
    (d / "manifest.json").write_text("{}")
    assert main(BASE + ["--algo", "sgd", "--out", str(d), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--force" in err


def test_killed_run_resumes_to_the_same_final_weights(tmp_path):
    args = BASE + ["--algo", "wvat", "--epochs", "2", "--batch-size", "128", "--lr", "0.05",
                   "--checkpoint-every", "5", "--seed", "4", "--hp", "swa_start=0.5"]
    full = _cli(*args, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    killed = _cli(*args, "--out", str(tmp_path / "killed"), env={"XBAR_TRAIN_KILL_AFTER_STEPS": "18"})
    assert killed.returncode == -signal.SIGKILL  # died mid-epoch 2 (12 steps per epoch)
    assert not (tmp_path / "killed" / "model.pt").exists()
    resumed = _cli("train", "--out", str(tmp_path / "killed"), "--resume", "--quiet", "--json")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    out = json.loads(resumed.stdout)
    assert out["metrics"]["epochs_done"] == 2
    ma = json.loads((tmp_path / "full" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert ma["metrics"]["test_acc"] == mb["metrics"]["test_acc"]
