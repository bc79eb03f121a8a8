"""Bit-flip sweeps (Emonds): observed flips match p, independence of batching, storage formats, masks, tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import gpu_waits
from tests.helpers import digits, lenet, one_thread
from xbar.cli.cmd_bitflip import parse_mask
from xbar.cli.tables import format_table
from xbar.devices.bitflip import BitFlipModel, Flipper, dense_regime, encode, mix64
from xbar.devices.seeding import GOLDEN, splitmix64
from xbar.evaluation import (
    BitflipEngine,
    bitflip_sweep,
    directional,
    midpoint_table,
    p_grid,
)
from xbar.evaluation import flips as flips_module
from xbar.evaluation.batched import default_layers
from xbar.evaluation.flips import ActivationStreams
from xbar.evaluation.streams import ACTIVATION, instance_seeds


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
    with pytest.raises(ValueError, match="mask"):
        parse_mask("exponent", "int8")  # a mask the storage does not have


@pytest.mark.parametrize("p", [2e-3, 0.1])  # the sparse and the dense (counter-based) path
@pytest.mark.parametrize("target", ["weights", "activations", "biases"])
def test_observed_flips_match_p(target, p):
    """With p1 = p2 = p every bit slot changes with probability p whatever it holds, so an instance's
    flips are Binomial(slots, p) and their total over the instances Binomial(instances x slots, p):
    5 standard deviations is a false-failure rate of 6e-7 per comparison."""
    assert dense_regime(p, p) == (p > 0.05)
    r = bitflip_sweep(lenet(), digits(), "float32", p=[p], repeats=6, targets=[target], seed=1,
                      limit=64, progress=False, fit=False)
    flips = r.flips[target]
    slots = r.slots[target]
    assert slots > 0
    sd = math.sqrt(slots * p * (1 - p))
    assert np.all(np.abs(flips - p * slots) < 5 * sd), (flips, p * slots)
    total, expected = flips.sum(), p * slots * flips.size
    assert abs(total - expected) < 5 * sd * math.sqrt(flips.size), (total, expected)
    assert np.all(flips > 0)


def test_counter_hash_is_splitmix64():
    """The tensor path (counter-based flips) and the Python-int path (seeds) give the same bits."""
    z = np.array([0, 1, 12345, 2**63 - 1, 2**64 - 5], dtype=np.uint64)
    got = mix64(torch.tensor(z.view(np.int64)) + GOLDEN).numpy().view(np.uint64)
    assert [int(v) for v in got] == [splitmix64(int(v)) for v in z]


def test_instance_seeds_are_splitmix64_for_one_or_many_instances():
    """SplitMix64's known first outputs (seed 0: 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4), and
    one seed per index whether the indices come one at a time (Python ints) or many at once (a tensor)."""
    assert splitmix64(0) == 0xE220A8397B1DCDAF
    assert splitmix64(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4
    many = instance_seeds(7, range(100), 3, -2, 2**62)
    assert many == [s for i in range(100) for s in instance_seeds(7, [i], 3, -2, 2**62)]
    assert len(set(many)) == 100 and all(0 <= s < 2**63 for s in many)


def _popcount_rows(a: torch.Tensor, b: torch.Tensor, bits: int) -> torch.Tensor:
    d = (a ^ b).long()
    return sum(((d >> i) & 1).reshape(d.shape[0], -1).sum(1) for i in range(bits))


@pytest.mark.parametrize("block_flips", [64, flips_module.BLOCK_FLIPS])  # several blocks, or one
def test_activation_flips_depend_only_on_the_image(monkeypatch, block_flips):
    """An instance's activation flips are those of the virtual [images, E] tensor, whatever the batches
    (and however many images follow): sparse and dense instances in one pass."""
    monkeypatch.setattr(flips_module, "BLOCK_FLIPS", block_flips)
    f = Flipper("float16", "all")
    E, N, probs = 30, 50, [0.02, 0.2, 0.0, 1e-3]
    x = torch.randint(-(2**15), 2**15, (len(probs), N, E), generator=torch.Generator().manual_seed(0),
                      dtype=torch.int16)

    def run(cuts, known=True):
        st = ActivationStreams(f, 9, [3, 8, 1, 4], probs, probs, (ACTIVATION, 0, 0), E, cuts if known else ())
        out, counts = x.clone(), torch.zeros(len(probs), dtype=torch.int64)
        for a, b in zip(cuts[:-1], cuts[1:]):
            rows = out[:, a:b].reshape(len(probs), -1).contiguous()
            st.flip(rows, a, b - a, counts)
            out[:, a:b] = rows.view(len(probs), b - a, E)
        return out, counts

    whole, counts = run([0, N])
    assert not torch.equal(whole[0], x[0]) and torch.equal(whole[2], x[2])
    torch.testing.assert_close(counts, _popcount_rows(whole, x, 16), rtol=0, atol=0)
    for cuts, known in (([0, 7, 20, 21, 50], True), ([0, 13, 50], False)):
        parts, c = run(cuts, known)
        assert torch.equal(parts, whole) and torch.equal(c, counts)
    fewer, _ = run([0, 20])
    assert torch.equal(fewer[:, :20], whole[:, :20])


@pytest.mark.parametrize("storage", ["float32", "int8"])
def test_batch_size_does_not_change_a_sweep(storage):
    """Bit-identical sweeps for data batches of 50, 75 or 150 images. (Batches of a handful of rows take
    another CPU GEMM path whose last-bit rounding differs, and Eq. 3's outcome depends on the stored bits,
    so the sizes keep every batch large; the drawn fliptensors never depend on the batches.)"""
    model, split = lenet(), digits()
    kw = dict(p=[1e-3, 0.1], repeats=2, targets=["weights", "activations"], seed=5, limit=150,
              progress=False, fit=False)
    runs = [bitflip_sweep(model, split, storage, batch_size=b, **kw) for b in (50, 75, 150)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.accuracy, runs[0].accuracy)
        np.testing.assert_allclose(r.loss, runs[0].loss, rtol=1e-9)  # float64 sums in another order
        for t in ("weights", "activations"):
            np.testing.assert_array_equal(r.flips[t], runs[0].flips[t])
    assert runs[0].flips["activations"][1].min() > 10 * runs[0].flips["activations"][0].max()


@pytest.mark.parametrize("storage", ["float32", "float16"])
def test_engine_undoes_its_weight_flips(storage):
    """Stored weights are flipped in place and restored before the next batch of instances."""
    kw = dict(targets=["weights", "biases", "activations"], seed=2, limit=60, batch_size=32)
    with BitflipEngine(lenet(), digits(), storage, **kw) as e, BitflipEngine(lenet(), digits(), storage, **kw) as fresh:
        first = e.run([0, 1], [1e-2, 0.2])
        e.run([5], [0.3])
        again = e.run([0, 1], [1e-2, 0.2])
        base = e.run([-1], [0.0])
        ref = fresh.run([-1], [0.0])
    for key in first:
        np.testing.assert_array_equal(again[key], first[key])
        np.testing.assert_array_equal(base[key], ref[key])
    assert base["flips_weights"][0] == 0 and first["flips_weights"].min() > 0


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


def test_directional_pairs():
    assert directional(1e-3) == (1e-3, 1e-3)
    assert directional(1e-3, 0.0) == (1e-3, 0.0) and directional(1e-3, math.inf) == (0.0, 1e-3)
    assert directional(0.2, 4.0) == (0.05, 0.2) and directional(0.2, 0.25) == (0.2, 0.05)
    with pytest.raises(ValueError, match="p10_ratio"):
        directional(1e-3, -1.0)


@pytest.mark.parametrize("p", [2e-3, 0.1])  # sparse and dense
@pytest.mark.parametrize("ratio", [0.0, math.inf])
def test_directional_sweep_flips_only_one_way(p, ratio):
    """With 0 -> 1 flips only (ratio 0) every stored weight bit that is 0 flips with probability p and
    no 1 does, so an instance's weight flips are Binomial(zero bits, p) (ratio inf: the ones); 5 standard
    deviations is a false-failure rate of 6e-7 per comparison. The symmetric expectation p x slots is
    about half as large for int8 weights near 0 (mostly 0 bits in two's complement, mostly 1 below 0)."""
    model, split = lenet(), digits()
    r = bitflip_sweep(model, split, "int8", p=[p], repeats=4, targets=["weights"], seed=2, limit=32,
                      p10_ratio=ratio, progress=False, fit=False)
    m = BitFlipModel(0.0, 0.0, "int8")
    ones = zeros = 0
    for name in default_layers(model):
        w = dict(model.named_modules())[name].weight.detach()
        pat = encode(w, m)[0].reshape(-1).long()
        n1 = int(sum(((pat >> b) & 1).sum() for b in range(8)))
        ones, zeros = ones + n1, zeros + pat.numel() * 8 - n1
    assert ones + zeros == r.slots["weights"]
    n = zeros if ratio == 0 else ones
    sd = math.sqrt(n * p * (1 - p))
    assert np.all(np.abs(r.flips["weights"] - n * p) < 5 * sd), (r.flips["weights"], n * p)
    assert r.to_dict()["p10_ratio"] == (0.0 if ratio == 0 else "inf")
    assert r.table()[0]["expected_flips_weights"] is None
    assert r.table()[0]["p_0to1"] == (p if ratio == 0 else 0.0)


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
    # two points per decade, so points lie on the slope and the midpoint is identified
    kw = dict(p_min=1e-6, p_max=1e-1, points_per_decade=2, repeats=2, targets=["activations"], limit=150, progress=False)
    f32 = bitflip_sweep(model, split, "float32", **kw)
    i8 = bitflip_sweep(model, split, "int8", **kw)
    assert f32.accuracy.shape == (11, 2)
    for r in (f32, i8):
        assert r.fit is not None and r.fit.converged, r.fit.reason
        lo, hi = r.fit.midpoint_p_interval
        assert math.log10(hi / lo) < 0.5  # the interval is narrower than one grid step
    assert f32.accuracy[-1].mean() < 0.3  # p = 0.1 destroys a float network
    rows = midpoint_table({"float32": f32, "int8": i8}, reference="float32")
    assert rows[0]["improvement"] == pytest.approx(1.0)
    assert rows[1]["converged"] and rows[1]["improvement"] > 1.0  # quantization helps (Emonds Table 4)
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


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_study_flips_the_cpu_slots_without_waiting_for_the_gpu():
    """On CUDA the weight flips are the CPU's, bit for bit (same slots, same stored bits), the
    activation flips come from the CPU's slots, and sparse flips add no wait for the GPU: a run
    at p = 1e-4 waits as often as one at p = 0."""
    import warnings

    kw = dict(targets=["weights", "biases", "activations"], seed=4, limit=128, batch_size=64)
    ids, probs = list(range(32)), [1e-4, 3e-4] * 16
    with BitflipEngine(lenet(), digits(), "float32", **kw) as cpu:
        ref = cpu.run(ids, probs)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with BitflipEngine(lenet(), digits(), "float32", device="cuda", **kw) as gpu:
            got = gpu.run(ids, probs)
            np.testing.assert_array_equal(got["flips_weights"], ref["flips_weights"])
            np.testing.assert_array_equal(got["flips_biases"], ref["flips_biases"])
            # The same activation slots: the activations differ from the CPU's only where rounding
            # differs (low bits, and ReLU outputs on either side of zero), so only slots on those
            # bits count differently. Independent slots would give count differences d_i with
            # E[d_i^2] = c_i + c'_i, i.e. R = sum d^2 / sum (c + c') ~ chi2(32) / 32, below 0.5 with
            # probability 0.006 (scipy.stats.chi2.cdf(16, 32)); shared slots keep R far below it.
            a, b = got["flips_activations"].astype(float), ref["flips_activations"].astype(float)
            ratio = ((a - b) ** 2).sum() / (a + b).sum()
            assert ratio < 0.5, (ratio, a, b)

            def waits(p: float) -> int:
                torch.cuda.synchronize()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        gpu.run([2], [p])
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                return len(gpu_waits(caught))

            waits(1e-4)  # warm-up: pinned buffers, device tables
            assert waits(1e-4) <= waits(0.0)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
