"""Chip-in-the-loop progressive fine-tuning (NeuRRAM Fig. 4d) on a seeded emulated chip, and its replay."""

from __future__ import annotations

import statistics

import pytest
import torch
from torch import nn

from tests.helpers import one_thread
from xbar import data, models, presets
from xbar.errors import InputError
from xbar.hil import (
    EmulatedBackend,
    RecordingBackend,
    ReplayBackend,
    evaluate,
    read_weights,
    weight_parameters,
)
from xbar.hil.finetune import FinetuneConfig, finetune, seed_statistics

# fefet1 with sigma_d = 0.3: middle levels at 1.2 level steps, a loss of several % on digits
NOISY = {"sigma_d": 0.3}
CONFIG = FinetuneConfig(epochs=6)


@pytest.fixture(autouse=True, scope="module")
def _threads():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def digits():
    return data.digits(0)


@pytest.fixture(scope="module")
def mlp(digits):
    """WVAT's MLP (64-400-200-10 on 8x8 digits), trained without device noise (so programming hurts)."""
    torch.manual_seed(0)
    m = models.build("mlp", in_channels=1, num_classes=10, image_size=8)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    loader = torch.utils.data.DataLoader(digits.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    for _ in range(30):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    return m.eval()


def test_finetuning_recovers_more_than_the_seed_to_seed_spread(mlp, digits):
    preset = presets.load("fefet1", **NOISY)
    runs = [finetune(mlp, EmulatedBackend(preset, rows=64, cols=64, seed=s), preset, digits, CONFIG, seed=s) for s in range(4)]
    st = seed_statistics(runs)
    spread = max(st["with"]["std"], st["without"]["std"])
    assert st["stored"]["mean"] - st["without"]["mean"] > spread  # programming costs accuracy ...
    assert st["gain"]["mean"] > spread  # ... and fine-tuning wins back more than chips differ
    assert min(st["gain"]["values"]) > 0  # on every chip (10 of 10 seeds in docs/hardware-in-the-loop.md)
    assert statistics.mean(r.recovered for r in runs) > 0.3
    for r in runs:  # the table has one row per layer; the last layer has nothing left to tune
        assert [row["programmed"] for row in r.rows] == [1, 2, 3]
        assert r.rows[-1]["with"] == r.rows[-1]["before_finetune"]
        assert len(r.sessions) == 3 and r.baseline is not None


def test_without_finetuning_the_loop_equals_programming_layer_by_layer(mlp, digits):
    """epochs=0: the progressive chip holds the original weights, so its final accuracy is a plain programming's."""
    preset = presets.load("fefet1")  # no read noise: a second read of a tile gives the same conductances
    r = finetune(mlp, EmulatedBackend(preset, rows=64, cols=64, seed=1), preset, digits, FinetuneConfig(epochs=0, baseline=False))
    assert r.final_without is None and r.recovered is None
    original = dict(weight_parameters(mlp))
    programmed = weight_parameters(r.model)
    assert [name for name, _ in programmed] == list(original) == [s.layers[0].name for s in r.sessions]
    for session, (name, w) in zip(r.sessions, programmed):
        assert torch.equal(w, read_weights(session, name))  # the layer runs with what the chip holds ...
        assert not torch.equal(w, original[name])  # ... which programming moved off the original weight
    assert r.final_with == evaluate(r.model, digits.test).accuracy


def test_replaying_a_finetuning_session_reproduces_it_exactly(mlp, digits, tmp_path):
    preset = presets.load("fefet1", **NOISY)
    cfg = FinetuneConfig(epochs=1)
    path = tmp_path / "ft.h5"
    with RecordingBackend(EmulatedBackend(preset, rows=64, cols=64, seed=2), path) as rec:
        live = finetune(mlp, rec, preset, digits, cfg, seed=7)
    replay = ReplayBackend(path)
    again = finetune(mlp, replay, preset, digits, cfg, seed=7)
    assert again.rows == live.rows
    strip = lambda d: {k: v for k, v in d.items() if k != "write_verify"}  # noqa: E731  (only the chip reports pulses)
    assert strip(again.to_dict()) == strip(live.to_dict())
    for a, b in zip(again.model.state_dict().values(), live.model.state_dict().values()):
        assert torch.equal(a, b)
    assert replay.remaining() == {"program": 0, "read": 0, "mvm": 0}
    assert replay.annotations["finetune"]["seed"] == 7
    # another seed trains other weights, which the strict replay refuses to program
    with pytest.raises(InputError, match="targets differ from the recorded ones"):
        finetune(mlp, ReplayBackend(path), preset, digits, cfg, seed=8)


def test_result_table_and_plot(mlp, digits, tmp_path):
    preset = presets.load("fefet1", **NOISY)
    r = finetune(mlp, EmulatedBackend(preset, rows=64, cols=64, seed=3), preset, digits, FinetuneConfig(epochs=1), seed=3)
    table = r.table()
    assert [t["layers on chip"] for t in table] == [1, 2, 3]
    assert table[-1]["with fine-tuning"] == round(100 * r.final_with, 2)
    out = r.plot(tmp_path / "ft.png")
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    d = r.to_dict()
    assert d["final_accuracy_with_finetuning"] == r.final_with and len(d["layers"]) == 3


def test_bad_config_and_data_are_input_errors(mlp, digits):
    preset = presets.load("fefet1")
    chip = EmulatedBackend(preset, rows=64, cols=64)
    with pytest.raises(InputError, match="epochs"):
        finetune(mlp, chip, preset, digits, FinetuneConfig(epochs=-1))
    with pytest.raises(InputError, match="expected a DatasetSplit"):
        finetune(mlp, chip, preset, [1, 2, 3])
