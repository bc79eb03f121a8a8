"""The user's own networks and data: model specs (torchvision:NAME, FILE.py:FACTORY, module:FACTORY,
nn.Module) and data specs (npz:FILE, imagefolder:DIR, Python datasets) through train, eval and convert."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import Crash, cli_json, cli_refused, crash_after
from xbar import data, models
from xbar.checkpoints import SourceChangedWarning, load_model
from xbar.cli import main
from xbar.errors import InputError
from xbar.training import train
from xbar.training import trainer as trainer_mod

NET = '''
from torch import nn


def make(num_classes, in_channels=1):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, num_classes))


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3 * 8 * 8, num_classes)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def broken(num_classes):
    raise RuntimeError("layer width must be even")


def not_a_module(num_classes):
    return 42


def ten_classes():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
'''
FAST = ["--preset", "fefet2", "--algo", "sgd", "--epochs", "1", "--batch-size", "16", "--lr", "0.05", "--quiet"]
EVAL = ["--mc", "3", "--no-progress", "--json"]


@pytest.fixture
def net(tmp_path) -> Path:
    path = tmp_path / "code" / "net.py"
    path.parent.mkdir()
    path.write_text(NET)
    return path


def _images(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """8x8 uint8 images whose class is which horizontal band is bright, with noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 60, size=(n, 8, 8)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 2 * c : 2 * c + 2] += 180
    return x, y.astype(np.int64)


@pytest.fixture
def npz(tmp_path) -> Path:
    """48 training and 24 test images, 1x8x8, 3 classes."""
    path = tmp_path / "bands.npz"
    x_train, y_train = _images(48, 3, 0)
    x_test, y_test = _images(24, 3, 1)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


# ------------------------------------------------------------------ end to end, CLI
def test_user_factory_trains_evaluates_and_resumes_through_the_cli(tmp_path, net, npz, capsys, monkeypatch):
    run = tmp_path / "run"
    spec = f"{net}:make"
    monkeypatch.chdir(tmp_path)  # relative paths on the command line
    rel = os.path.relpath(net, tmp_path)
    crash_after(monkeypatch, 2)  # dies after 2 of 3 steps, checkpointed every step
    with pytest.raises(Crash):
        main(["train", "--model", f"{rel}:make", "--data", "npz:bands.npz", *FAST, "--checkpoint-every", "1",
              "--out", str(run)])
    monkeypatch.delenv(trainer_mod.KILL_ENV)
    man = json.loads((run / "manifest.json").read_text())
    assert man["model"] == spec and man["data"] == f"npz:{npz}"  # absolute: the run works from any directory
    assert man["model_spec"]["sha256"] == hashlib.sha256(net.read_bytes()).hexdigest()
    assert man["data_spec"]["sha256"] == hashlib.sha256(npz.read_bytes()).hexdigest()
    assert (man["in_channels"], man["num_classes"], man["image_size"]) == (1, 3, 8)
    # --resume rebuilds the model from the manifest alone
    monkeypatch.chdir(net.parent)
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0, capsys.readouterr().err
    man = json.loads((run / "manifest.json").read_text())
    assert man["status"] == "done" and man["metrics"]["epochs_done"] == 1
    model, info = load_model(run)
    saved = torch.load(run / "model.pt", weights_only=True)
    assert info["model"] == spec and all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    result = cli_json(capsys, ["eval", str(run), *EVAL])
    assert result["n"] == 3 and result["model"] == spec and result["data"] == f"npz:{npz}"


def test_torchvision_model_takes_channels_and_classes_from_the_data(tmp_path, npz, capsys):
    run = tmp_path / "tv"
    assert main(["train", "--model", "torchvision:resnet18", "--data", f"npz:{npz}", *FAST, "--out", str(run)]) == 0
    saved = torch.load(run / "model.pt", weights_only=True)
    assert saved["conv1.weight"].shape == (64, 1, 7, 7) and saved["fc.weight"].shape == (3, 512)
    assert json.loads((run / "manifest.json").read_text())["model_spec"]["kind"] == "torchvision"
    result = cli_json(capsys, ["eval", str(run), *EVAL])
    assert result["model"] == "torchvision:resnet18" and result["n"] == 3


def test_changed_source_warns_in_eval_and_stops_resume(tmp_path, net, npz, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", f"{net}:make", "--data", f"npz:{npz}", *FAST, "--out", str(run)]) == 0
    net.write_text(NET + "\n# edited\n")
    with pytest.warns(SourceChangedWarning, match="has changed"):
        load_model(run)
    assert main(["eval", str(run), "--mc", "2", "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)
    assert "warning" in captured.err and "has changed" in captured.err and str(net) in captured.err
    cli_refused(capsys, ["train", "--out", str(run), "--resume", "--quiet"], "has changed")


def test_eval_reads_the_pair_written_by_convert(tmp_path, net, npz, capsys):
    out = tmp_path / "conv" / "net.pt"
    assert main(["convert", f"{net}:make", "--data", f"npz:{npz}", "--preset", "fefet2", "--out", str(out)]) == 0
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["model_spec"]["sha256"] == hashlib.sha256(net.read_bytes()).hexdigest()
    capsys.readouterr()
    by_state, by_manifest = cli_json(capsys, ["eval", str(out), *EVAL]), cli_json(capsys, ["eval", str(out.with_suffix(".json")), *EVAL])
    assert by_state["per_instance"] == by_manifest["per_instance"]
    assert by_state["preset"] == "fefet2" and by_state["data"] == f"npz:{npz}"


# ------------------------------------------------------------------------- bad specs
@pytest.mark.parametrize(
    "model, needle",
    [
        ("{dir}/missing.py:make", "no such Python file"),
        ("{net}:nothere", "has no 'nothere'; it defines Net, broken, make, not_a_module, ten_classes"),
        ("{net}:not_a_module", "returned int; expected a torch nn.Module"),
        ("{net}:ten_classes", "the data has 3 classes"),
        ("{net}:broken", "broken(num_classes=3) raised RuntimeError: layer width must be even"),
        ("torchvision:nonet", "not a torchvision classification model"),
        ("no_such_package.nets:make", "importing module no_such_package.nets raised ModuleNotFoundError"),
    ],
    ids=["missing-file", "missing-factory", "not-a-module", "wrong-class-count", "raises", "torchvision", "module"],
)
def test_bad_model_specs_exit_2_with_one_line_and_write_nothing(tmp_path, net, npz, capsys, model, needle):
    spec = model.format(dir=tmp_path, net=net)
    run, out = tmp_path / "run", tmp_path / "conv.pt"
    cli_refused(capsys, ["train", "--model", spec, "--data", f"npz:{npz}", *FAST, "--out", str(run)], needle)
    cli_refused(capsys, ["convert", spec, "--data", f"npz:{npz}", "--preset", "fefet2", "--out", str(out)], needle)
    assert not run.exists() and not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"x_train": np.zeros((4, 8, 8)), "y_train": np.zeros(4, int), "x_test": np.zeros((2, 8, 8))}, "y_test: missing"),
        ({"x_train": np.zeros((4, 8, 6)), "y_train": np.zeros(4, int), "x_test": np.zeros((2, 8, 6)),
          "y_test": np.zeros(2, int)}, "expected square images"),
        ({"x_train": np.zeros((4, 8, 8)), "y_train": np.zeros(3, int), "x_test": np.zeros((2, 8, 8)),
          "y_test": np.zeros(2, int)}, "one label per image"),
        ({"x_train": np.array([None] * 4, dtype=object), "y_train": np.zeros(4, int),
          "x_test": np.zeros((2, 8, 8)), "y_test": np.zeros(2, int)}, "not a readable .npz of plain arrays"),
    ],
    ids=["missing-array", "not-square", "label-count", "pickled-objects"],
)
def test_bad_npz_files_are_refused_with_one_line(tmp_path, capsys, arrays, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    run = tmp_path / "run"
    cli_refused(capsys, ["train", "--model", "mlp", "--data", f"npz:{path}", *FAST, "--out", str(run)], needle)
    assert not run.exists()


def test_bad_data_specs_and_options_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    for args, needle in [
        (["--data", f"npz:{tmp_path}/none.npz"], "no such file"),
        (["--data", f"imagefolder:{tmp_path}"], "no train/ folder"),
        (["--data", "csv:x.csv"], "unknown kind 'csv'"),
        (["--data", "digits", "--normalize", "0.5"], "normalize = '0.5'"),
        (["--data", "cifar10", "--data-split", "random"], "fixed train/test split"),
    ]:
        cli_refused(capsys, ["train", "--model", "mlp", *args, *FAST, "--out", str(run)], needle)
        assert not run.exists()


# ------------------------------------------------------------------------------- data
def test_npz_layouts_and_normalisation(tmp_path):
    x, y = _images(12, 3, 0)
    nhwc, flat = tmp_path / "nhwc.npz", tmp_path / "flat.npz"
    np.savez(nhwc, x_train=x[..., None], y_train=y, x_test=x[:6, ..., None], y_test=y[:6])
    np.savez(flat, x_train=x.reshape(12, 64).astype(np.float32) / 255, y_train=y, x_test=x[:6].reshape(6, 64) / 255.0,
             y_test=y[:6])
    a, b = data.load(f"npz:{nhwc}"), data.load(f"npz:{flat}")
    for s in (a, b):
        assert (s.in_channels, s.num_classes, s.image_size, len(s.train), len(s.test)) == (1, 3, 8, 12, 6)
    expected = torch.from_numpy(x[:, None].astype(np.float32) / 255)
    assert torch.allclose(a.train.tensors[0], expected) and torch.allclose(b.train.tensors[0], expected)
    c = data.load(f"npz:{nhwc}", normalize="0.5/0.25")
    assert torch.allclose(c.train.tensors[0], (expected - 0.5) / 0.25)
    assert torch.equal(c.train.tensors[1], torch.from_numpy(y))


def test_imagefolder_reads_train_and_test_folders_and_trains(tmp_path, net, capsys):
    from PIL import Image

    root = tmp_path / "folders"
    x, y = _images(18, 3, 2)
    for i, (img, label) in enumerate(zip(x, y)):
        part = "test" if i % 2 == 0 and label != 2 else "train"  # the test part lacks class "c"
        folder = root / part / "abc"[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(folder / f"{i}.png")
    split = data.load(f"imagefolder:{root}")
    assert (split.in_channels, split.num_classes, split.image_size) == (1, 3, 8)
    assert split.train.classes == ["a", "b", "c"]
    first = split.test.samples[0]
    assert Path(first[0]).parent.name == "abc"[first[1]]  # same label numbers as train, though test lacks "c"
    image, label = split.train[0]
    assert image.shape == (1, 8, 8) and 0 <= float(image.min()) and float(image.max()) <= 1
    path = Path(split.train.samples[0][0])
    assert torch.allclose(image[0], torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255))
    run = tmp_path / "run"
    assert main(["train", "--model", f"{net}:make", "--data", f"imagefolder:{root}", *FAST, "--out", str(run)]) == 0
    result = cli_json(capsys, ["eval", str(run), *EVAL])
    assert result["num_images"] == len(split.test)


def test_paper_protocol_unstratified_split_with_pixels_over_255(tmp_path, capsys):
    """mnist5k split 4000/1000 by one random permutation (not per class), pixels / 255, no mean/std."""
    a = data.load("mnist5k", seed=3, split="random", normalize="none")
    b = data.load("mnist5k", seed=3)
    xa, ya = a.train.tensors
    assert len(a.train) == 4000 and len(a.test) == 1000
    assert float(xa.min()) == 0.0 and float(xa.max()) == 1.0  # pixels / 255
    counts = torch.bincount(ya, minlength=10)
    assert counts.sum() == 4000 and (counts != 400).any()  # unstratified: class counts vary
    assert (torch.bincount(b.train.tensors[1], minlength=10) == 400).all()
    assert torch.equal(data.load("mnist5k", seed=3, split="random", normalize="none").train.tensors[1], ya)
    # the options are recorded and a study reads the same test part back
    run = tmp_path / "run"
    args = ["train", "--model", "mlp", "--data", "digits", *FAST, "--out", str(run), "--split-seed", "7",
            "--data-split", "random", "--train-fraction", "0.5", "--normalize", "none", "--batch-size", "256"]
    assert main(args) == 0
    spec = json.loads((run / "manifest.json").read_text())["data_spec"]
    assert spec == {"kind": "name", "spec": "digits", "split_seed": 7, "split": "random", "train_fraction": 0.5,
                    "normalize": "none"}
    assert cli_json(capsys, ["eval", str(run), *EVAL])["num_images"] == 1797 - 898


# ----------------------------------------------------------------------------- Python
def test_python_instances_and_datasets(tmp_path, net, npz, capsys):
    instance = models.build(f"{net}:Net", num_classes=3)
    before = {k: v.clone() for k, v in instance.state_dict().items()}
    split = data.load(f"npz:{npz}")
    run = tmp_path / "run"
    trained, _ = train(instance, (split.train, split.test), "fefet2", "sgd", epochs=1, lr=0.05, batch_size=16,
                       progress=False, out=run)
    assert trained is not instance and all(torch.equal(v, before[k]) for k, v in instance.state_dict().items())
    man = json.loads((run / "manifest.json").read_text())
    assert man["model"] == f"{net}:Net" and man["data_spec"] == {"kind": "python", "name": "custom"}
    cli_refused(capsys, ["eval", str(run), "--mc", "2", "--no-progress"], "came from Python datasets; pass --data")
    result = cli_json(capsys, ["eval", str(run), "--data", f"npz:{npz}", *EVAL])  # the class is rebuilt from net.py
    assert result["model"] == f"{net}:Net"
    with pytest.raises(InputError, match="apply to data specs"):
        train(instance, split, "fefet2", "sgd", epochs=1, normalize="none", out=tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_module_factory_spec_and_option_passing(monkeypatch, net):
    monkeypatch.syspath_prepend(str(net.parent))
    source = models.resolve("net:make")
    assert source.kind == "module" and source.to_dict()["sha256"] == hashlib.sha256(net.read_bytes()).hexdigest()
    model = source.build(in_channels=2, num_classes=5, image_size=8)
    assert model[0].in_channels == 2 and model[-1].out_features == 5
    lenet = models.build("xbar.models.lenet:LeNet", in_channels=1, num_classes=4, image_size=8)
    assert lenet.classifier[-1].out_features == 4
