"""Files that are not what was expected, full disks, killed writes and unwritable places: one line, exit 2."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import cli_refused
from xbar.checkpoints import read_manifest
from xbar.errors import InputError
from xbar.fileio import atomic_write_text, check_writable, check_writable_dir, torch_load_safe
from xbar.training.checkpoint import load_checkpoint, save_checkpoint

TRAIN = ["train", "--model", "lenet", "--data", "digits", "--preset", "fefet2", "--algo", "sgd", "--epochs", "1",
         "--quiet"]
MANIFEST = {"model": "lenet", "data": "digits", "in_channels": 1, "num_classes": 10, "image_size": 8}


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"model_options": [1, 2]}, "model_options = [1, 2]: expected an object"),
        ({"seed": "abc"}, "seed = 'abc': expected a non-negative integer"),
        ({"act_bits": 1e9}, "act_bits = 1000000000.0: expected an integer from 0 to 16"),
        ({"preset_spec": "rram"}, "preset_spec = 'rram'"),
    ],
)
def test_a_malformed_manifest_is_one_line(extra, needle, tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps({**MANIFEST, **extra}))
    with pytest.raises(InputError, match="manifest.json: "):
        read_manifest(tmp_path / "manifest.json")
    torch.save({}, tmp_path / "model.pt")
    cli_refused(capsys, ["eval", str(tmp_path), "--preset", "rram-uniform", "--mc", "2", "--no-progress"],
                needle, str(tmp_path / "manifest.json"))


def test_a_model_option_the_network_does_not_take_is_one_line(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps({**MANIFEST, "model_options": {"colour": 3}}))
    torch.save({}, tmp_path / "model.pt")
    cli_refused(capsys, ["eval", str(tmp_path), "--preset", "rram-uniform", "--mc", "2", "--no-progress"],
                "model 'lenet'", "colour")


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_during_convert_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "lenet.pt"
    monkeypatch.setattr(torch, "save", _disk_full)
    cli_refused(capsys, ["convert", "--model", "lenet", "--preset", "fefet1", "--out", str(out)],
                f"{out}: cannot be written: No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_writing_the_manifest_removes_the_state_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "lenet.pt"
    monkeypatch.setattr(Path, "write_text", _disk_full)
    cli_refused(capsys, ["convert", "--model", "lenet", "--preset", "fefet1", "--out", str(out)],
                f"{tmp_path / 'lenet.json'}: cannot be written")
    assert list(tmp_path.iterdir()) == []


def test_torch_save_failing_for_want_of_space_is_one_line(tmp_path, monkeypatch, capsys):
    """torch.save reports a full disk as a RuntimeError from its stream writer, not an OSError."""

    def stream_writer_fails(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0\n"
                           "PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", stream_writer_fails)
    out = tmp_path / "lenet.pt"
    cli_refused(capsys, ["convert", "--model", "lenet", "--preset", "fefet1", "--out", str(out)],
                f"{out}: cannot be written")


def test_a_full_disk_during_train_is_one_line(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.setattr(torch, "save", _disk_full)
    cli_refused(capsys, [*TRAIN, "--out", str(run)], "cannot be written: No space left on device", str(run))
    assert not list(run.glob(".*.tmp")) if run.exists() else True


def test_a_checkpoint_write_killed_midway_leaves_no_orphan_after_resume(tmp_path):
    """A real SIGKILL inside the write leaves ``.checkpoint.pt.*.tmp``; the next load or save removes it."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": torch.tensor(1)})
    code = (
        "import os, signal, sys\n"
        "from xbar.fileio import atomic_write\n"
        "def die(tmp):\n"
        "    tmp.write_bytes(b'partial')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"atomic_write({str(path)!r}, die, force=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    orphans = list(tmp_path.glob(".checkpoint.pt.*.tmp"))
    assert len(orphans) == 1
    assert int(load_checkpoint(path)["step"]) == 1  # the old checkpoint is intact ...
    assert not list(tmp_path.glob(".checkpoint.pt.*.tmp"))  # ... and the orphan is gone
    orphans[0].write_bytes(b"partial")
    save_checkpoint(path, {"step": torch.tensor(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_an_unwritable_out_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    with pytest.raises(InputError, match="/proc is not writable"):
        check_writable("/proc/x.json", create=False)
    with pytest.raises(InputError, match="not writable"):
        check_writable_dir("/proc/run")

    def no_work(*a, **k):
        raise AssertionError("the work started before --out was checked")

    import xbar.cli._studies as studies
    import xbar.training.run as run

    monkeypatch.setattr(studies, "load_checkpoint", no_work)
    monkeypatch.setattr(run, "train", no_work)
    cli_refused(capsys, ["eval", str(tmp_path), "--preset", "rram-uniform", "--out", "/proc/x.json"],
                "/proc/x.json", "not writable")
    cli_refused(capsys, ["bitflip", str(tmp_path), "--out", "/proc/x.json"], "not writable")
    cli_refused(capsys, [*TRAIN, "--out", "/proc/run"], "/proc/run", "not writable")
    cli_refused(capsys, ["convert", "--model", "lenet", "--preset", "fefet1", "--out", "/proc/x.pt"],
                "not writable")
    cli_refused(capsys, ["fit", str(tmp_path / "m.h5"), "--out", "/proc/p.toml"],
                "/proc/p.toml", "not writable")  # checked before reading m.h5


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


class Plain:
    pass


def test_a_checkpoint_holding_code_is_refused_in_one_line(tmp_path, capsys):
    for obj, what in ((Evil(), "posix.system"), (Plain(), "Plain"), (slice(1, 2), "slice")):
        path = tmp_path / "evil.pt"
        torch.save({"a": obj}, path)
        with pytest.raises(InputError) as info:
            torch_load_safe(path)
        msg = str(info.value)
        assert "\n" not in msg and "holds code objects" in msg and what in msg, msg
        assert len(msg) < 200 and "PyTorch 2.6" not in msg
    cli_refused(capsys, ["eval", str(path), "--model", "lenet", "--preset", "rram-uniform"],
                "holds code objects")


def test_atomic_write_of_a_text_file_on_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "write_text", _disk_full)
    with pytest.raises(InputError, match="r.json: cannot be written: No space left on device"):
        atomic_write_text(tmp_path / "r.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_garbage_is_not_a_pytorch_file(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a PyTorch file"):
        torch_load_safe(path)


def test_saved_tensors_are_byte_reproducible(tmp_path):
    """The same state saved twice gives the same bytes (no temporary name inside the archive)."""
    import hashlib

    from xbar.fileio import atomic_torch_save

    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}
    digests = {hashlib.sha256(atomic_torch_save(tmp_path / name, state).read_bytes()).hexdigest()
               for name in ("a.pt", "b.pt")}
    assert len(digests) == 1
    back = torch.load(tmp_path / "a.pt", weights_only=True)
    assert all(torch.equal(back[k], v) for k, v in state.items())
