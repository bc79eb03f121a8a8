"""Bit flips on stored bit patterns (Emonds Eq. 3), checked statistically with fixed seeds."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from tests.conftest import gpu_waits
from xbar.devices import bitflip
from xbar.devices.bitflip import (
    BitFlipModel,
    decode,
    encode,
    expected_flips,
    flip_bits,
    flip_counts,
    flip_stored,
)

FLOATS = ["float16", "bfloat16", "float32", "float64"]
DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def randn(n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, generator=gen(seed), dtype=torch.float64).to(dtype)


def within(k: int, n: int, p: float, z: float = 5.0) -> bool:
    """k within z binomial standard deviations of n p."""
    return abs(k - n * p) <= z * math.sqrt(n * p * (1 - p)) + 1e-9


# --------------------------------------------------------------------------- the model


def test_mask_bits_named_and_ranges():
    m = BitFlipModel(0.1, 0.1, "float32", "sign")
    assert m.bits == 32 and m.mask_bits() == [31]
    assert BitFlipModel(0, 0, "float32", "exponent").mask_bits() == list(range(23, 31))
    assert BitFlipModel(0, 0, "float32", "mantissa").mask_bits() == list(range(23))
    assert BitFlipModel(0, 0, "float16", "exponent").mask_bits() == list(range(10, 15))
    assert BitFlipModel(0, 0, "bfloat16", "exponent").mask_bits() == list(range(7, 15))
    assert BitFlipModel(0, 0, "float64", "exponent").mask_bits() == list(range(52, 63))
    assert BitFlipModel(0, 0, "int8").mask_bits() == list(range(8))
    assert BitFlipModel(0, 0, "int8", "sign").mask_bits() == [7]
    m = BitFlipModel(0, 0, "float32", [[0, 2], (5, 5), (1, 3)])
    assert m.mask == ((0, 2), (5, 5), (1, 3))  # lists become a hashable tuple
    assert m.mask_bits() == [0, 1, 2, 3, 5]
    assert BitFlipModel(0, 0, "float32", ()).mask_bits() == []
    hash(m)


def test_thermometer_masks_follow_fig4():
    # legend number n = first noisy bit counted from the MSB
    assert BitFlipModel.thermometer("float32", 0).mask_bits() == list(range(32))
    assert BitFlipModel.thermometer("float32", 1).mask_bits() == list(range(31))
    t9 = BitFlipModel.thermometer("float32", 9, p_0to1=1e-3)
    assert t9.mask_bits() == BitFlipModel(0, 0, "float32", "mantissa").mask_bits()
    assert t9.p_0to1 == t9.p_1to0 == 1e-3
    assert BitFlipModel.thermometer("int8", 8).mask_bits() == []
    assert BitFlipModel.thermometer("float16", 6, 0.1, 0.2).mask_bits() == list(range(10))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"p_0to1": -0.1, "p_1to0": 0.0}, "p_0to1"),
        ({"p_0to1": 0.0, "p_1to0": 1.5}, "p_1to0"),
        ({"p_0to1": float("nan"), "p_1to0": 0.0}, "p_0to1"),
        ({"p_0to1": True, "p_1to0": 0.0}, "p_0to1"),
        ({"p_0to1": 0.0, "p_1to0": 0.0, "storage": "int4"}, "storage"),
        ({"p_0to1": 0.0, "p_1to0": 0.0, "storage": "int8", "mask": "exponent"}, "mask"),
        ({"p_0to1": 0.0, "p_1to0": 0.0, "mask": "lsb"}, "mask"),
        ({"p_0to1": 0.0, "p_1to0": 0.0, "mask": ((0, 32),)}, "mask"),
        ({"p_0to1": 0.0, "p_1to0": 0.0, "mask": ((3, 1),)}, "mask"),
        ({"p_0to1": 0.0, "p_1to0": 0.0, "mask": 5}, "mask"),
    ],
)
def test_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field) as exc:
        BitFlipModel(**kwargs)
    assert "\n" not in str(exc.value) and "expected" in str(exc.value)


def test_thermometer_validation_and_integer_input():
    with pytest.raises(ValueError, match="n_protected"):
        BitFlipModel.thermometer("float16", 17)
    with pytest.raises(ValueError, match="dtype"):
        flip_bits(torch.arange(4), BitFlipModel(0.1, 0.1))


def test_expected_flips_formula():
    m = BitFlipModel(1e-3, 4e-3, "float32", "mantissa")
    assert expected_flips(1000, m) == pytest.approx(1000 * 23 * (0.5e-3 + 2e-3))
    assert expected_flips(1000, m, ones_fraction=1.0) == pytest.approx(1000 * 23 * 4e-3)


# --------------------------------------------------------------------------- Eq. 3 semantics


def test_eq3_deterministic_limits():
    """p = 1 makes the fliptensors all ones: Eq. 3 sets, clears or inverts the masked bits."""
    x = randn(1000)
    pat = x.view(torch.int32)
    mask = ((0, 3), (28, 31))
    mbits = sum((1 << b) if b < 31 else -(1 << 31) for lo, hi in mask for b in range(lo, hi + 1))
    mask_t = torch.tensor(mbits, dtype=torch.int32)
    for method in ("sparse", "dense"):
        set_ = flip_stored(pat, BitFlipModel(1.0, 0.0, "float32", mask), gen(0), method)
        clear = flip_stored(pat, BitFlipModel(0.0, 1.0, "float32", mask), gen(0), method)
        inv = flip_stored(pat, BitFlipModel(1.0, 1.0, "float32", mask), gen(0), method)
        assert torch.equal(set_, pat | mask_t)
        assert torch.equal(clear, pat & ~mask_t)
        assert torch.equal(inv, pat ^ mask_t)


@pytest.mark.parametrize("storage", FLOATS)
def test_float_round_trip_at_zero_noise(storage):
    dt = DTYPES[storage]
    x = randn(4096, dtype=dt).reshape(64, 64).t()  # non-contiguous on purpose
    y = flip_bits(x, BitFlipModel(0.0, 0.0, storage))
    assert y.dtype == dt and y.shape == x.shape and torch.equal(y, x)
    # a noisy model with an empty mask is exact as well
    assert torch.equal(flip_bits(x, BitFlipModel(0.5, 0.5, storage, ())), x)


def test_storage_cast_and_int8_round_trip():
    x = randn(1000)
    y16 = flip_bits(x, BitFlipModel(0.0, 0.0, "float16"))
    assert y16.dtype == torch.float32 and torch.equal(y16, x.half().float())
    assert torch.equal(flip_bits(x, BitFlipModel(0.0, 0.0, "float64")), x)
    y8 = flip_bits(x, BitFlipModel(0.0, 0.0, "int8"))
    scale = x.abs().max() / 127
    assert (y8 - x).abs().max() <= scale / 2 + 1e-6


# --------------------------------------------------------------------------- flip statistics


def test_directional_and_per_bit_rates_sparse():
    p1, p2 = 2e-3, 5e-3
    mask = ((0, 9), (23, 31))
    m = BitFlipModel(p1, p2, "float32", mask)
    x = randn(200_000, seed=1)
    y = flip_bits(x, m, gen(11))  # auto -> sparse at these p
    c = flip_counts(x, y, m)
    masked = set(m.mask_bits())
    n0 = sum(c["zeros"][b] for b in masked)
    n1 = sum(c["ones"][b] for b in masked)
    assert within(c["total_0to1"], n0, p1)
    assert within(c["total_1to0"], n1, p2)
    alpha = 1e-3 / (2 * len(masked))  # Bonferroni over bits and directions
    for b in range(32):
        if b not in masked:
            assert c["0to1"][b] == 0 and c["1to0"][b] == 0, f"unmasked bit {b} flipped"
            continue
        for k, n, p in ((c["0to1"][b], c["zeros"][b], p1), (c["1to0"][b], c["ones"][b], p2)):
            if n:
                assert stats.binomtest(k, n, p).pvalue > alpha, (b, k, n, p)


@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_flip_bits_counts_wider_storage_than_values(method):
    """float64 storage read back into float32 rounds the low 29 mantissa bits away, and the
    rounding can carry into bits that were 1: counted from the values, a 0 -> 1 only model
    would show 1 -> 0 flips. Counted from the stored patterns, 0 -> 1 flips are
    Binomial(zero slots, p1) and there is no 1 -> 0 flip."""
    p1 = 1e-3 if method == "sparse" else 0.1
    m = BitFlipModel(p1, 0.0, "float64", "mantissa")
    x = randn(20_000, seed=12)  # float32 values
    y, c = flip_bits(x, m, gen(13), method=method, counts=True)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert c["total_1to0"] == 0
    assert within(c["total_0to1"], sum(c["zeros"][b] for b in m.mask_bits()), p1)
    with pytest.raises(ValueError, match="counts=True"):
        flip_counts(x, y, m)  # the read-back values no longer hold the stored bits


def test_sparse_and_dense_have_the_same_distribution():
    p1, p2 = 0.02, 0.01
    m = BitFlipModel(p1, p2, "float32", ((0, 15), (24, 31)))
    x = randn(50_000, seed=2)
    cs = flip_counts(x, flip_bits(x, m, gen(3), method="sparse"), m)
    cd = flip_counts(x, flip_bits(x, m, gen(4), method="dense"), m)
    # totals: the difference of two independent binomials with equal n and p
    for key, n, p in (
        ("total_0to1", sum(cs["zeros"]), p1),
        ("total_1to0", sum(cs["ones"]), p2),
    ):
        sd = math.sqrt(2 * n * p * (1 - p))
        assert abs(cs[key] - cd[key]) <= 5 * sd, key
    # per bit and direction: chi-square homogeneity over columns with enough counts
    table = np.array([cs["0to1"] + cs["1to0"], cd["0to1"] + cd["1to0"]])
    table = table[:, table.sum(axis=0) >= 20]
    assert table.shape[1] >= 30
    assert stats.chi2_contingency(table).pvalue > 1e-4


def test_sparse_handles_duplicates_exactly_at_large_p():
    """Forced sparse path at p = 0.3: without exact duplicate handling the rate would be
    1 - exp(-0.3) = 0.259, not 0.3."""
    m = BitFlipModel(0.3, 0.3, "int8")
    codes = torch.randint(-127, 128, (20_000,), generator=gen(5), dtype=torch.int8)
    y = flip_stored(codes, m, gen(6), method="sparse")
    c = flip_counts(codes, y, m)
    n = 20_000 * 8
    assert within(c["total_0to1"] + c["total_1to0"], n, 0.3)


def test_dense_path_rates():
    m = BitFlipModel(0.25, 0.1, "float16")
    x = randn(20_000, seed=7, dtype=torch.float16)
    c = flip_counts(x, flip_bits(x, m, gen(8)), m)  # auto -> dense
    assert within(c["total_0to1"], sum(c["zeros"]), 0.25)
    assert within(c["total_1to0"], sum(c["ones"]), 0.1)


def test_tiny_p_runs_sparse_on_ten_million(monkeypatch):
    def no_dense(*a, **k):
        raise AssertionError("dense fliptensors drawn at p = 1e-8")

    monkeypatch.setattr(bitflip, "_dense_fliptensor", no_dense)
    m = BitFlipModel(1e-8, 1e-8, "float32")
    x = torch.randn(10_000_000, generator=gen(9))
    y = flip_bits(x, m, gen(10))
    xi, yi = x.view(torch.int32), y.view(torch.int32)
    diff = (xi ^ yi)[xi != yi].to(torch.int64) & 0xFFFFFFFF
    n_flipped = sum(bin(int(v)).count("1") for v in diff)
    # expected 3.2 (= expected_flips); P(Poisson(3.2) > 20) < 1e-9
    assert expected_flips(x.numel(), m) == pytest.approx(3.2)
    assert n_flipped <= 20  # (P(0 flips) = exp(-3.2) = 4%, so no lower bound)


# --------------------------------------------------------------------------- what flips do to values


def test_sign_mask_only_negates():
    x = randn(10_000, seed=12)
    y = flip_bits(x, BitFlipModel(0.5, 0.5, "float32", "sign"), gen(13))
    changed = y != x
    assert torch.equal(y[changed], -x[changed])
    assert within(int(changed.sum()), 10_000, 0.5)
    assert torch.equal(flip_bits(x, BitFlipModel(1.0, 1.0, "float32", "sign")), -x)


def test_exponent_mask_scales_by_powers_of_two_or_leaves_normal_range():
    x = randn(50_000, seed=14)
    y = flip_bits(x, BitFlipModel(0.05, 0.05, "float32", "exponent"), gen(15))
    xi, yi = x.view(torch.int32), y.view(torch.int32)
    keep = ~torch.tensor(0x7F800000, dtype=torch.int32)
    assert torch.equal(xi & keep, yi & keep)  # sign and mantissa untouched
    ex = ((xi >> 23) & 0xFF).to(torch.float64)
    ey = ((yi >> 23) & 0xFF).to(torch.float64)
    normal = (ey > 0) & (ey < 255) & (ex > 0)
    x64, y64 = x.double(), y.view(torch.float32).double()
    assert torch.equal(y64[normal], x64[normal] * torch.exp2(ey[normal] - ex[normal]))
    special = ~normal
    assert ((~torch.isfinite(y64[special])) | (y64[special].abs() < 2.0**-126)).all()
    assert (~torch.isfinite(y)).any(), "inf/nan from an all-ones exponent are kept"
    assert (y != x).float().mean() > 0.2


def test_mantissa_mask_keeps_relative_error_below_one():
    x = randn(50_000, seed=16)
    y = flip_bits(x, BitFlipModel(0.2, 0.2, "float32", "mantissa"), gen(17))
    assert (y != x).float().mean() > 0.9
    assert torch.isfinite(y).all()
    assert ((y.double() - x.double()).abs() <= x.double().abs()).all()
    assert torch.equal(torch.sign(y), torch.sign(x))


def test_int8_flips_move_by_powers_of_two_of_the_scale():
    x = randn(20_000, seed=18)
    m = BitFlipModel(0.01, 0.01, "int8")
    q, scale = encode(x, m)
    y = flip_bits(x, m, gen(19))
    qy, _ = encode(y, m, scale=scale)
    assert torch.allclose(decode(qy, m, scale, torch.float32), y)
    xor = (q ^ qy).to(torch.int64) & 0xFF
    delta = qy.to(torch.int64) - q.to(torch.int64)
    single = (xor != 0) & ((xor & (xor - 1)) == 0)
    assert single.sum() > 500
    k = torch.log2(xor[single].double()).round().to(torch.int64)
    mag = torch.where(k < 7, 2**k, torch.full_like(k, 128))
    assert torch.equal(delta[single].abs(), mag)
    assert torch.allclose((y - q.float() * scale)[single].abs(), mag.float() * scale)


def test_int8_sign_bit_is_twos_complement():
    x = torch.tensor([5.0, -3.0, 127.0, 0.0, -127.0])
    y = flip_bits(x, BitFlipModel(1.0, 1.0, "int8", "sign"))  # scale = 127/127 = 1
    assert y.tolist() == [5 - 128, -3 + 128, 127 - 128, -128, -127 + 128]


def test_int8_is_far_less_damaging_than_float32():
    """The paper's Sec. 6.2: bit flips in integers only add or subtract powers of two."""
    w = randn(100_000, seed=20) * 0.05
    p = 1e-3
    e32 = (flip_bits(w, BitFlipModel(p, p, "float32"), gen(21)) - w).double().abs()
    ref8 = flip_bits(w, BitFlipModel(0.0, 0.0, "int8"))
    e8 = (flip_bits(w, BitFlipModel(p, p, "int8"), gen(22)) - ref8).double().abs()
    mae32 = torch.nan_to_num(e32, nan=math.inf).clamp(max=1e30).mean()
    assert e8.mean() * 1e6 < mae32
    assert e8.max() <= 255 * w.abs().max() / 127 + 1e-9


# --------------------------------------------------------------------------- reproducibility, devices


@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_same_seed_same_output(method):
    x = randn(10_000, seed=23)
    m = BitFlipModel(0.01, 0.02, "float32")
    a = flip_bits(x, m, gen(42), method=method)
    b = flip_bits(x, m, gen(42), method=method)
    c = flip_bits(x, m, gen(43), method=method)
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    assert not torch.equal(a.view(torch.int32), c.view(torch.int32))


def test_default_generator_and_multidim_shape():
    x = randn(600, seed=24).reshape(2, 3, 100)
    torch.manual_seed(0)
    y = flip_bits(x, BitFlipModel(0.01, 0.01, "bfloat16"))
    assert y.shape == x.shape and y.dtype == x.dtype
    stored = flip_bits(x, BitFlipModel(0.0, 0.0, "bfloat16"))
    changed = int((y != stored).sum())  # 16 bits an element, each flipping with 0.01
    assert within(changed, x.numel(), 1 - 0.99**16)
    torch.manual_seed(0)
    assert torch.equal(flip_bits(x, BitFlipModel(0.01, 0.01, "bfloat16")), y)  # the global stream


def test_flip_counts_on_patterns_and_shape_check():
    m = BitFlipModel(0.0, 0.0, "int8")
    a = torch.tensor([0b0000_0001, -128], dtype=torch.int8)
    b = torch.tensor([0b0000_0010, 0], dtype=torch.int8)
    c = flip_counts(a, b, m)
    assert c["0to1"] == [0, 1, 0, 0, 0, 0, 0, 0]
    assert c["1to0"] == [1, 0, 0, 0, 0, 0, 0, 1]
    assert c["ones"][7] == 1 and c["zeros"][7] == 1
    with pytest.raises(ValueError, match="after"):
        flip_counts(a, b[:1], m)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_cuda(method):
    x = randn(100_000, seed=25).cuda()
    m = BitFlipModel(0.01, 0.03, "float32", "mantissa")
    y = flip_bits(x, m, gen(26, "cuda"), method=method)
    assert y.is_cuda and y.dtype == x.dtype
    assert torch.equal(y, flip_bits(x, m, gen(26, "cuda"), method=method))
    c = flip_counts(x.cpu(), y.cpu(), m)
    assert within(c["total_0to1"], sum(c["zeros"][:23]), 0.01)
    assert within(c["total_1to0"], sum(c["ones"][:23]), 0.03)
    q = flip_bits(x.half(), BitFlipModel(1e-4, 1e-4, "int8"))  # no generator: drawn on the CPU
    assert q.is_cuda and q.dtype == torch.float16
    # symmetric p: each of the 8 bits of an element flips with 1e-4 whatever its value
    stored = flip_bits(x.half(), BitFlipModel(0.0, 0.0, "int8"))
    changed = int((q != stored).sum())
    assert within(changed, x.numel(), 1 - (1 - 1e-4) ** 8)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sparse_flips_wait_for_the_gpu_only_to_read_sizes():
    """A training step flips every layer's weights: each wait for the GPU stalls it.

    The sparse path waits five times at most (two Binomial counts, the sizes of the
    two sets of distinct slots and of the touched elements), never to copy its
    small tables from the host.
    """
    x = randn(100_000, seed=27).cuda()
    m = BitFlipModel(1e-4, 1e-4, "float32")
    g = gen(28, "cuda")
    flip_bits(x, m, g)  # first call: the device tables are made
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            flip_bits(x, m, g)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    waits = gpu_waits(caught)
    assert 1 <= len(waits) <= 5, waits


def test_shipping_plan_splits_back_into_its_parts():
    """A sparse plan travels to a GPU as one tensor (``bitflip._ship``); splitting it gives the parts."""
    touched = torch.tensor([3, 9, 12])
    rows = [torch.arange(k, k + 7) for k in range(0, 50, 10)]
    parts = [touched, *rows]
    back = bitflip._split(torch.cat(parts), touched.numel(), len(rows))
    assert len(back) == len(parts)
    for a, b in zip(back, parts):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert bitflip._ship(parts, torch.device("cpu")) is parts  # already there: no copy


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("storage", ["float32", "int8"])
def test_cuda_flips_from_a_cpu_generator_equal_the_cpu_and_never_wait(storage):
    """Drawn and worked out on the CPU, sparse flips of a GPU tensor are the CPU's bit for bit and
    reach the GPU without the host waiting for it (no generator: the CPU's default one)."""
    x = randn(100_000, seed=29)
    m = BitFlipModel(1e-4, 1e-4, storage)
    ref = flip_bits(x, m, gen(30))
    xc = x.cuda()
    torch.testing.assert_close(flip_bits(xc, m, gen(30)).cpu(), ref, rtol=0, atol=0, equal_nan=True)
    flip_bits(xc, m)  # warm-up: pinned buffers
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            flip_bits(xc, m, gen(31))
            flip_bits(xc, m)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    waits = gpu_waits(caught)
    assert not waits, waits
