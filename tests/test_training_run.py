"""xbar.training.train: run directories, checkpoints, exact resume, converted (aihwkit) models."""

from __future__ import annotations

import json

import pytest
import torch

from xbar.errors import InputError
from xbar.training import train
from xbar.training import trainer as trainer_mod

FAST = dict(lr=0.05, batch_size=128, progress=False)


class Crash(RuntimeError):
    pass


def _crash(monkeypatch, steps: int) -> None:
    """Make the trainer's kill hook raise after ``steps`` optimizer steps (in-process stand-in for SIGKILL)."""
    monkeypatch.setenv(trainer_mod.KILL_ENV, str(steps))

    def kill(pid, sig):
        raise Crash(f"killed after {steps} steps")

    monkeypatch.setattr(trainer_mod.os, "kill", kill)


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)


@pytest.mark.parametrize(
    "algo, hyper",
    [
        ("noise", {}),
        ("dat-fast", {"alpha": 50.0, "layers": "all"}),
        ("wvat", {"swa_start": 0.5}),
        ("trice", {"n_train": 8, "kpp_images": 100, "warm": 0}),
    ],
)
def test_resume_after_crash_mid_epoch_gives_the_same_weights(tmp_path, monkeypatch, algo, hyper):
    kw = dict(epochs=2, seed=3, checkpoint_every=5, **FAST, **hyper)
    train("lenet", "digits", "fefet2", algo, out=tmp_path / "a", **kw)
    _crash(monkeypatch, 17)  # 12 steps per epoch: dies in epoch 2, last checkpoint at step 15
    with pytest.raises(Crash):
        train("lenet", "digits", "fefet2", algo, out=tmp_path / "b", **kw)
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert (ck["epoch"], ck["batch"], ck["global_step"]) == (1, 3, 15)
    monkeypatch.delenv(trainer_mod.KILL_ENV)
    _, hist = train("lenet", "digits", "fefet2", algo, out=tmp_path / "b", resume=True, **kw)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda line: {k: v for k, v in json.loads(line).items() if k != "time_s"}  # noqa: E731
    assert [strip(x) for x in la] == [strip(x) for x in lb] and len(hist) == 2


def test_run_directory_contents(tmp_path):
    out = tmp_path / "run"
    model, hist = train("lenet", "digits", "rram-uniform", "sgd", epochs=2, seed=0, out=out, eval_mc=5, **FAST)
    man = json.loads((out / "manifest.json").read_text())
    for key in ("model", "data", "in_channels", "num_classes", "image_size", "preset", "algo", "seed", "hyper", "metrics"):
        assert key in man
    assert (man["model"], man["data"], man["preset"], man["algo"], man["image_size"]) == ("lenet", "digits", "rram-uniform", "sgd", 8)
    assert man["status"] == "done" and man["hyper"]["lr"] == 0.05 and man["act_bits"] == 4
    assert {"test_acc", "test_kpp"} <= set(man["metrics"])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and "test_kpp" in lines[0]
    ck = torch.load(out / "checkpoint.pt", weights_only=True)  # plain tensors only
    assert ck["format"] == "xbar-train-checkpoint" and ck["epoch"] == 2
    from xbar.models import build

    state = torch.load(out / "model.pt", weights_only=True)
    fresh = build("lenet", 1, 10, 8)
    fresh.load_state_dict(state)  # the digital architecture of xbar.models.build
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(InputError, match="already exists"):
        train("lenet", "digits", "rram-uniform", "sgd", epochs=1, out=out, **FAST)
    train("lenet", "digits", "rram-uniform", "sgd", epochs=1, out=out, force=True, **FAST)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    with pytest.raises(InputError, match="seed"):
        train("lenet", "digits", "rram-uniform", "sgd", epochs=1, seed=5, out=out, resume=True, **FAST)
    from xbar import presets

    noisier = presets.load("rram-uniform", sigma_d=0.3)  # same name, other noise
    with pytest.raises(InputError, match="preset_spec"):
        train("lenet", "digits", noisier, "sgd", epochs=1, out=out, resume=True, **FAST)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(algo="adam"), "algo"),
        (dict(epochs=0), "epochs"),
        (dict(rho=-1.0), "rho"),
        (dict(bogus=1), "bogus"),
        (dict(lr=-0.1), "lr"),
        (dict(algo="trice", warm=-1), "warm"),
    ],
)
def test_bad_hyper_parameters_raise_input_error(bad, match):
    kw = dict(model_name="lenet", data_name="digits", preset="fefet2", algo="sam", epochs=1)
    kw.update(bad)
    with pytest.raises(InputError, match=match):
        train(**kw)


@pytest.mark.parametrize("algo", ["sam", "dat-fast", "wvat"])
def test_converted_model_trains_like_the_plain_one(algo):
    """Weight-space perturbations act the same on xbar tiles as on the plain network."""
    from xbar.training import digital_copy
    from xbar.training.run import build_network

    kw = dict(epochs=1, seed=1, **FAST)
    plain, _ = train("lenet", "digits", "fefet2", algo, **kw)
    analog, _ = train("lenet", "digits", "fefet2", algo, convert=True, **kw)
    from xbar import data

    exported = digital_copy(analog, build_network("lenet", data.load("digits"))).state_dict()
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(exported[k], v, rtol=0, atol=1e-6)


def test_converted_model_uses_analog_sgd_and_its_post_update_hooks(monkeypatch):
    from xbar.tiles import XbarInferenceTile

    calls = []
    orig = XbarInferenceTile.post_update_step

    def spy(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(XbarInferenceTile, "post_update_step", spy)
    model, _ = train("lenet", "digits", "fefet2", "noise", epochs=1, seed=0, convert=True, **FAST)
    assert len(calls) == 12 * 5  # every step, every tile
    from xbar import tiles

    inj = tiles.get_injection(model)
    assert all(i.enabled and i.sigma_scale == 1.0 for i in inj)
