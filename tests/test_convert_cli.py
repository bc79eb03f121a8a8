"""``xbar convert``: zoo model -> analog tiles, tile map, tensors-only state + manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import xbar
from xbar import models, tiles
from xbar.cli import main


def test_convert_prints_tile_map_and_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.pt"
    assert main(["convert", "--model", "lenet", "--preset", "fefet1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("lenet -> fefet1")
    for layer in ("features.0", "features.3", "classifier.0", "classifier.2", "classifier.4"):
        assert layer in text
    assert "256x256" in text and "784x120" in text and "total" in text
    state = torch.load(out, weights_only=True)
    assert set(state) == set(models.build("lenet").state_dict())
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["model"] == "lenet" and manifest["preset"]["name"] == "fefet1"
    assert manifest["state_file"] == "x.pt" and manifest["totals"]["layers"] == 5
    # the saved state loads into a freshly converted model
    fresh = xbar.convert(models.build("lenet"), "fefet1")
    tiles.load_state(fresh, out)


def test_convert_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.pt"
    args = ["convert", "--model", "lenet", "--preset", "fefet1", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err and "--force" in err
    assert main([*args, "--force"]) == 0


def test_convert_loads_a_checkpoint_and_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    digital = models.build("mlp")
    ckpt = tmp_path / "mlp.pt"
    torch.save(digital.state_dict(), ckpt)
    out = tmp_path / "conv" / "mlp-pcm.pt"
    assert main(["convert", str(ckpt), "--model", "mlp", "--preset", "pcm", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["checkpoint"] == str(ckpt) and result["preset"] == "pcm"
    assert all(r["tile_rows"] == 512 for r in result["tile_map"])
    saved = torch.load(out, weights_only=True)
    for key, value in digital.state_dict().items():
        assert torch.equal(saved[key], value)
    # the manifest next to a converted state names its model
    assert main(["convert", str(out), "--preset", "fefet1"]) == 0
    assert capsys.readouterr().out.startswith("mlp -> fefet1")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "nope", "--preset", "fefet1"], "nope"),
        (["--model", "lenet", "--preset", "nope"], "nope"),
        (["--preset", "fefet1"], "no model"),
    ],
)
def test_convert_bad_input_is_one_line_exit_2(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_convert_rejects_a_mismatched_or_pickled_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "lenet.pt"
    torch.save(models.build("lenet").state_dict(), ckpt)
    assert main(["convert", "--model", "mlp", "--checkpoint", str(ckpt), "--preset", "fefet1"]) == 2
    assert "does not match" in capsys.readouterr().err
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": models.build("lenet")}, pickled)
    assert main(["convert", "--model", "lenet", "--checkpoint", str(pickled), "--preset", "fefet1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refusing to unpickle" in err
    junk = tmp_path / "junk.pt"
    junk.write_text("junk\n")
    assert main(["convert", "--model", "lenet", "--checkpoint", str(junk), "--preset", "fefet1"]) == 2
    assert "not a PyTorch file" in capsys.readouterr().err
    nan = tmp_path / "nan.pt"
    torch.save({k: torch.full_like(v, float("nan")) for k, v in models.build("lenet").state_dict().items()}, nan)
    assert main(["convert", "--model", "lenet", "--checkpoint", str(nan), "--preset", "fefet1"]) == 2
    assert "NaN or infinite" in capsys.readouterr().err


def test_convert_takes_a_train_run_with_its_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers import write_run

    model = models.build("lenet", in_channels=1, num_classes=10, image_size=8)
    run = write_run(tmp_path / "run", model)
    for target in (str(run), str(run / "model.pt")):
        assert main(["convert", target, "--preset", "fefet1", "--json"]) == 0
        d = json.loads(capsys.readouterr().out)
        assert d["model"] == "lenet" and d["model_options"] == {"in_channels": 1, "num_classes": 10, "image_size": 8}
