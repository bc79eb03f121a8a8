"""Bit-flip sweeps (Emonds): observed flips match p, storage formats, masks, tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.test_evaluation_helpers import digits, lenet, one_thread
from xbar.devices.bitflip import BitFlipModel
from xbar.evaluation import bitflip_sweep, format_table, midpoint_table, p_grid, parse_mask
from xbar.evaluation.bitflip_study import _store


@pytest.fixture(autouse=True, scope="module")
def _threads():
    with one_thread():
        yield


def test_p_grid():
    g = p_grid(1e-8, 1e-1, 1)
    np.testing.assert_allclose(g, 10.0 ** np.arange(-8, 0))
    assert p_grid(1e-8, 1e-1, 2).size == 15
    with pytest.raises(ValueError):
        p_grid(1e-1, 1e-8)


def test_parse_mask_forms():
    assert parse_mask("exponent", "float32") == "exponent"
    assert parse_mask("msb:1", "float32") == ((0, 30),)  # all but the sign bit (Fig. 4 case 1)
    assert parse_mask("msb:9", "float32") == ((0, 22),)  # mantissa only (Fig. 4 case 9)
    assert parse_mask("0-3+7-7", "int8") == ((0, 3), (7, 7))
    assert parse_mask("none", "float16") == ()
    with pytest.raises(ValueError):
        parse_mask("bits", "float32")


@pytest.mark.parametrize("target", ["weights", "activations", "biases"])
def test_observed_flips_match_p(target):
    p = 2e-3
    r = bitflip_sweep(lenet(), digits(), "float32", p=[p], repeats=6, targets=[target], seed=1,
                      limit=64, progress=False, fit=False)
    flips = r.flips[target]
    slots = r.slots[target]
    assert slots > 0
    total, expected = flips.sum(), p * slots * flips.size
    assert abs(total - expected) < 5 * math.sqrt(expected), (total, expected)
    assert np.all(flips > 0)


def test_no_flips_at_p_zero_and_float32_storage_is_exact():
    model, split = lenet(), digits()
    r = bitflip_sweep(model, split, "float32", p=[0.0], repeats=2, targets=["weights", "activations"],
                      progress=False, fit=False)
    x, y = split.test.tensors
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).double().mean().item()
    assert r.baseline["accuracy"] == pytest.approx(clean, abs=1e-12)
    np.testing.assert_array_equal(r.accuracy, clean)
    assert r.flips["weights"].sum() == 0 and r.flips["activations"].sum() == 0


def test_int8_storage_is_post_training_quantization():
    model, split = lenet(), digits()
    r = bitflip_sweep(model, split, "int8", p=[0.0], repeats=1, targets=["weights", "biases", "activations"],
                      progress=False, fit=False)
    x, y = split.test.tensors
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).double().mean().item()
    assert abs(r.baseline["accuracy"] - clean) < 0.03


def test_store_respects_the_mask_and_counts_bits(gen):
    x = torch.randn(1000, generator=gen)
    sign_only = BitFlipModel(0.5, 0.5, "float32", "sign")
    y, flips = _store(x, sign_only, torch.Generator().manual_seed(0))
    torch.testing.assert_close(y.abs(), x.abs(), rtol=0, atol=0)
    assert flips == int((torch.sign(y) != torch.sign(x)).sum())
    int8 = BitFlipModel(0.0, 0.0, "int8", "all")
    y, flips = _store(x, int8, torch.Generator().manual_seed(0))
    assert flips == 0 and (y - x).abs().max() <= x.abs().max() / 127 / 2 + 1e-6


def test_batching_does_not_change_a_sweep():
    model, split = lenet(), digits()
    kw = dict(p=[1e-4, 1e-2], repeats=3, targets=["weights", "activations"], seed=3, limit=100,
              progress=False, fit=False, batch_size=50)
    a = bitflip_sweep(model, split, "float16", batch_instances=1, **kw)
    b = bitflip_sweep(model, split, "float16", batch_instances=4, **kw)
    np.testing.assert_array_equal(a.accuracy, b.accuracy)
    np.testing.assert_array_equal(a.flips["activations"], b.flips["activations"])


def test_sweep_fit_table_and_plot(tmp_path):
    model, split = lenet(), digits()
    kw = dict(p_min=1e-6, p_max=1e-1, points_per_decade=1, repeats=2, targets=["activations"], limit=150, progress=False)
    f32 = bitflip_sweep(model, split, "float32", **kw)
    i8 = bitflip_sweep(model, split, "int8", **kw)
    assert f32.accuracy.shape == (6, 2)
    assert f32.fit is not None and f32.fit.converged, f32.fit.reason
    assert f32.accuracy[-1].mean() < 0.3  # p = 0.1 destroys a float network
    rows = midpoint_table({"float32": f32, "int8": i8}, reference="float32")
    assert rows[0]["improvement"] == pytest.approx(1.0)
    if rows[1]["converged"]:
        assert rows[1]["improvement"] > 1.0  # quantization helps (Emonds Table 4)
    text = format_table(rows, ["label", "midpoint_p", "improvement"])
    assert "float32" in text and "int8" in text
    d = json.loads(json.dumps(f32.to_dict()))
    assert {"storage", "mask", "mask_bits", "targets", "p", "accuracy", "flips", "slots", "fit", "table", "baseline"} <= set(d)
    assert f32.plot(tmp_path / "bf.png").exists()


def test_bad_arguments():
    with pytest.raises(ValueError, match="targets"):
        bitflip_sweep(lenet(), digits(), targets=["gradients"], p=[0.1], progress=False)
    with pytest.raises(ValueError, match="storage"):
        bitflip_sweep(lenet(), digits(), storage="float8", p=[0.1], progress=False)
    with pytest.raises(ValueError, match="activation site"):
        bitflip_sweep(lenet(), digits(), activation_sites=["nope"], p=[0.1], progress=False)
