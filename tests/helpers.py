"""Shared helpers of the tests: small trained models on the bundled 8x8 digits, run directories."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from xbar import data, models
from xbar.training import trainer


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run with one intra-op thread (small workloads on a shared 2-core machine), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@lru_cache(maxsize=1)
def digits():
    return data.load("digits", seed=0)


def train(model: nn.Module, epochs: int = 4, seed: int = 0, lr: float = 0.05) -> nn.Module:
    """A few epochs of plain SGD on the digits training split (about a second)."""
    torch.manual_seed(seed)
    x, y = digits().train.tensors
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    with one_thread():
        for _ in range(epochs):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), 32):
                idx = perm[i : i + 32]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return model.eval()


@lru_cache(maxsize=4)
def _lenet_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    m = models.build("lenet", in_channels=1, num_classes=10, image_size=8)
    return {k: v.clone() for k, v in train(m, seed=seed).state_dict().items()}


def lenet(seed: int = 0) -> nn.Module:
    """LeNet trained on the 8x8 digits (about 90% test accuracy)."""
    m = models.build("lenet", in_channels=1, num_classes=10, image_size=8)
    m.load_state_dict(_lenet_state(seed))
    return m.eval()


class TinyBN(nn.Module):
    """Conv + BatchNorm + ReLU + Linear on 8x8 digits (for batch-norm stacking and 2D landscapes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(x.flatten(1))


def tiny_bn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return train(TinyBN(), epochs=2, seed=seed)


def write_run(directory: Path, model: nn.Module, preset: str = "rram-uniform", seed: int = 0) -> Path:
    """An ``xbar train``-style run directory: manifest.json + model.pt (plain tensors)."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, directory / "model.pt")
    manifest = {
        "format": "xbar-run",
        "model": "lenet",
        "data": "digits",
        "in_channels": 1,
        "num_classes": 10,
        "image_size": 8,
        "preset": preset,
        "seed": seed,
        "act_bits": 0,
        "status": "done",
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


class Crash(RuntimeError):
    """Raised by the trainer's kill hook under :func:`crash_after`, where the real hook sends SIGKILL."""


def crash_after(monkeypatch, steps: int) -> None:
    """Make the trainer's kill hook raise :class:`Crash` after ``steps`` optimizer steps (an in-process
    stand-in for SIGKILL: the run directory is left as a killed run leaves it). ``monkeypatch``: pytest's
    fixture, or a ``pytest.MonkeyPatch()`` where there is none (a spawned process)."""
    monkeypatch.setenv(trainer.KILL_ENV, str(steps))

    def kill(pid, sig):
        raise Crash(f"killed after {steps} steps")

    monkeypatch.setattr(trainer.os, "kill", kill)


def cli_json(capsys, argv: list[str]) -> dict:
    """Run ``xbar ARGV`` in-process; it must succeed, and its stdout is the JSON result."""
    from xbar.cli import main

    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return json.loads(cap.out)


def cli_refused(capsys, argv: list[str], *words: str, usage_ok: bool = False) -> str:
    """Run ``xbar ARGV`` in-process; it must exit 2 with one stderr line (no traceback) holding
    every one of ``words``; ``usage_ok`` also allows argparse's usage block."""
    from xbar.cli import main

    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 or (usage_ok and lines[0].startswith("usage:")), err
    for w in words:
        assert w in err, err
    return err
