"""xbar.training.train: run directories, checkpoints, exact resume, converted (aihwkit) models."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import Crash, crash_after
from xbar.errors import InputError
from xbar.training import train
from xbar.training import trainer as trainer_mod

FAST = dict(lr=0.05, batch_size=128, progress=False)


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
    crash_after(monkeypatch, 17)  # 12 steps per epoch: dies in epoch 2, last checkpoint at step 15
    with pytest.raises(Crash):
        train("lenet", "digits", "fefet2", algo, out=tmp_path / "b", **kw)
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert (ck["epoch"], ck["batch"], ck["global_step"]) == (1, 3, 15)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["status"] == "failed"
    monkeypatch.delenv(trainer_mod.KILL_ENV)
    _, hist = train("lenet", "digits", "fefet2", algo, out=tmp_path / "b", resume=True, **kw)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda line: {k: v for k, v in json.loads(line).items() if k != "time_s"}  # noqa: E731
    assert [strip(x) for x in la] == [strip(x) for x in lb] and len(hist) == 2


def test_a_version_1_checkpoint_resumes_with_replayed_schedulers(tmp_path, monkeypatch):
    """Checkpoints written before the trainer kept torch schedulers (version 1, no scheduler
    state) still resume: the schedulers are replayed to the checkpoint's epoch, so the rates of
    the remaining epochs, and the weights, are those of the uninterrupted run."""
    kw = dict(epochs=5, seed=5, checkpoint_every=5, swa_start=0.6, **FAST)
    train("lenet", "digits", "fefet2", "wvat", out=tmp_path / "a", **kw)
    crash_after(monkeypatch, 17)  # 12 steps per epoch: dies in epoch 2, last checkpoint at step 15
    with pytest.raises(Crash):
        train("lenet", "digits", "fefet2", "wvat", out=tmp_path / "b", **kw)
    path = tmp_path / "b" / "checkpoint.pt"
    ck = torch.load(path, weights_only=True)
    assert (ck["epoch"], ck.pop("schedulers") is not None) == (1, True)
    ck["version"] = 1
    torch.save(ck, path)
    monkeypatch.delenv(trainer_mod.KILL_ENV)
    train("lenet", "digits", "fefet2", "wvat", out=tmp_path / "b", resume=True, **kw)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    lrs = [[json.loads(x)["lr"] for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in "ab"]
    assert lrs[0] == lrs[1] and len(set(lrs[0])) == 4  # cosine over 3 epochs, then swa_lr twice


class _Augmented(torch.utils.data.Dataset):
    """Digits with random augmentation drawn from the global generators (torch and random), like
    torchvision's RandomCrop/RandomHorizontalFlip: a stand-in for CIFAR, which is not available offline."""

    def __init__(self, base: torch.utils.data.TensorDataset, n: int) -> None:
        self.x, self.y = (t[:n] for t in base.tensors)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        import random

        x = self.x[i]
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        shift = random.randint(-1, 1)
        return torch.roll(x, shift, dims=-2) + 0.05 * torch.randn_like(x), self.y[i]


@pytest.fixture
def augmented_digits(monkeypatch):
    """Registers data set ``digits-aug``: 320 augmented training images, the digits test set."""
    from dataclasses import replace

    from xbar import data
    from xbar.data import registry

    def load(root, seed):
        split = data.load("digits", seed=seed)
        return replace(split, name="digits-aug", train=_Augmented(split.train, 320))

    monkeypatch.setitem(registry._LOADERS, "digits-aug", load)
    return "digits-aug"


@pytest.mark.parametrize("convert", [False, True], ids=["plain", "converted"])
def test_resume_mid_epoch_is_exact_with_random_augmentation(tmp_path, monkeypatch, augmented_digits, convert):
    """Augmentation draws are keyed by (seed, epoch, position) and the global random state
    (which a converted model's tiles inject from) is checkpointed: resuming replays them."""
    kw = dict(epochs=2, seed=2, checkpoint_every=3, lr=0.05, batch_size=64, progress=False, convert=convert)
    train("lenet", augmented_digits, "fefet2", "noise", out=tmp_path / "a", **kw)
    crash_after(monkeypatch, 8)  # 5 steps per epoch: dies in epoch 2, last checkpoint at step 6
    with pytest.raises(Crash):
        train("lenet", augmented_digits, "fefet2", "noise", out=tmp_path / "b", **kw)
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert (ck["epoch"], ck["batch"], ck["global_step"]) == (1, 1, 6)
    monkeypatch.delenv(trainer_mod.KILL_ENV)
    torch.manual_seed(123)  # whatever the global state before the resume
    train("lenet", augmented_digits, "fefet2", "noise", out=tmp_path / "b", resume=True, **kw)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_failed_start_leaves_nothing_and_a_late_failure_keeps_the_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    kw = dict(epochs=2, seed=0, checkpoint_every=0, **FAST)
    crash_after(monkeypatch, 3)  # before the first checkpoint (the end of epoch 1)
    with pytest.raises(Crash):
        train("lenet", "digits", "fefet2", "sgd", out=out, **kw)
    assert not out.exists()
    crash_after(monkeypatch, 14)  # in epoch 2: the epoch-1 checkpoint stays, the manifest says so
    with pytest.raises(Crash):
        train("lenet", "digits", "fefet2", "sgd", out=out, **kw)  # no force needed: nothing was left
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "failed" and "Crash" in man["error"] and (out / "checkpoint.pt").exists()
    with pytest.raises(InputError, match="--force"):
        train("lenet", "digits", "fefet2", "sgd", out=out, **kw)
    monkeypatch.delenv(trainer_mod.KILL_ENV)
    train("lenet", "digits", "fefet2", "sgd", out=out, resume=True, **kw)
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "done" and "error" not in man and "pid" not in man


def test_diverged_training_is_one_input_error(tmp_path):
    from xbar.training.trainer import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch 1 step \d+ \(loss .*\); lower --lr") as info:
        train("lenet", "digits", "fefet2", "noise", epochs=1, out=tmp_path / "run", **{**FAST, "lr": 1e6})
    assert isinstance(info.value, InputError) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_weight_bits_default_to_trices_per_network_values():
    from xbar import presets
    from xbar.training.run import _with_weight_bits

    fefet2, pcm = presets.load("fefet2"), presets.load("pcm")
    assert [_with_weight_bits(fefet2, m, None)[1] for m in ("lenet", "vgg8", "resnet18", "mlp")] == [4, 6, 6, 4]
    six, bits = _with_weight_bits(fefet2, "vgg8", None)
    assert six.mapping.weight_bits == 6 and six.mapping.bits_per_device == 2 and six.name == "fefet2"
    assert _with_weight_bits(pcm, "vgg8", None)[1] == 0  # an analog preset stays analog
    assert _with_weight_bits(fefet2, "vgg8", 4)[0].mapping.weight_bits == 4


def test_run_directory_contents(tmp_path):
    out = tmp_path / "run"
    model, hist = train("lenet", "digits", "rram-uniform", "sgd", epochs=2, seed=0, out=out, eval_mc=5, **FAST)
    man = json.loads((out / "manifest.json").read_text())
    for key in ("model", "data", "in_channels", "num_classes", "image_size", "preset", "algo", "seed", "hyper", "metrics"):
        assert key in man
    assert (man["model"], man["data"], man["preset"], man["algo"], man["image_size"]) == ("lenet", "digits", "rram-uniform", "sgd", 8)
    assert man["status"] == "done" and man["hyper"]["lr"] == 0.05 and man["act_bits"] == 4
    assert man["weight_bits"] == man["hyper"]["weight_bits"] == man["preset_spec"]["mapping"]["weight_bits"] == 4
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


@pytest.mark.parametrize("was_training", [True, False])
def test_the_monte_carlo_study_restores_the_training_mode_when_it_fails(monkeypatch, was_training):
    """``_mc`` (the per-epoch/TRICE Monte Carlo) hands the model back in the mode it got it, even
    when the study raises, and the study's error reaches the caller."""
    from xbar import presets
    from xbar.training import run

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).train(was_training)

    def failing_study(m, *args, **kwargs):
        assert m is model
        m.train(not was_training)  # a study switches the mode ...
        raise RuntimeError("study failed")  # ... and dies before switching it back

    monkeypatch.setattr(run, "study_monte_carlo", failing_study)
    x, y = torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(RuntimeError, match="study failed"):
        run._mc(model, "mlp", None, presets.load("fefet2"), 0, x, y, 3, 0)
    assert model.training is was_training
