"""Quantization, bit slicing and recombination (TRICE Eq. 11-14) and tiling geometry."""

from __future__ import annotations

import itertools

import pytest
import torch

from xbar.mapping import MappingConfig, quantize, quantize_ste, recombine, slice_weights, tile_grid
from xbar.mapping.slicing import level_sign

CONFIGS = [
    MappingConfig(weight_bits=h, bits_per_device=b, sign=sign, scale=scale)
    for (h, b), sign, scale in itertools.product(
        [(4, 2), (6, 2), (4, 1), (8, 4), (6, 3), (4, 4)],
        ["magnitude", "differential", "offset"],
        ["per-tensor", "per-channel"],
    )
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"H{c.weight_bits}B{c.bits_per_device}-{c.sign}-{c.scale}")
def test_recombination_is_exact_without_noise(cfg: MappingConfig) -> None:
    w = torch.randn(6, 5, 3, 3, generator=torch.Generator().manual_seed(0))
    lv = slice_weights(w, cfg)
    q, s = quantize(w, cfg)
    assert lv.levels.shape == (cfg.planes, cfg.slices, *w.shape)
    assert lv.levels.min() >= 0 and lv.levels.max() <= cfg.levels - 1
    assert torch.equal(lv.levels, lv.levels.round())
    back = recombine(lv.levels, level_sign(w), lv.scale, cfg)
    assert torch.equal(back, q * s)
    # quantization error at most half a step
    assert ((w - q * s).abs() <= s / 2 + 1e-6).all()


def test_eq12_bit_slices_by_hand() -> None:
    """Code 13 = 0b1101 with B = 2 is g0 = 0b01 = 1, g1 = 0b11 = 3 (Eq. 12)."""
    cfg = MappingConfig(weight_bits=4, bits_per_device=2)
    w = torch.tensor([13.0, -6.0, 15.0, 0.0])
    lv = slice_weights(w, cfg)
    assert lv.levels[0, :, 0].tolist() == [1.0, 3.0]
    assert lv.levels[0, :, 1].tolist() == [2.0, 1.0]  # |-6| = 0b0110
    assert float(lv.scale.flatten()[0]) == 1.0  # max|W| = 15 = 2^4 - 1


def test_differential_planes_hold_positive_and_negative_parts() -> None:
    cfg = MappingConfig(weight_bits=4, bits_per_device=2, sign="differential")
    lv = slice_weights(torch.tensor([15.0, -15.0, 5.0]), cfg)
    assert lv.levels[1, :, 0].tolist() == [0.0, 0.0]
    assert lv.levels[0, :, 1].tolist() == [0.0, 0.0]
    assert lv.levels[0, :, 2].tolist() == [1.0, 1.0]


def test_per_channel_scale_uses_each_output_channel() -> None:
    w = torch.stack([torch.linspace(-1, 1, 9), torch.linspace(-4, 4, 9)])
    _, s = quantize(w, MappingConfig(scale="per-channel"))
    assert s.flatten().tolist() == pytest.approx([1 / 15, 4 / 15])


def test_batched_recombination_broadcasts_over_instances() -> None:
    cfg = MappingConfig(weight_bits=6, bits_per_device=2, sign="differential")
    w = torch.randn(4, 7)
    lv = slice_weights(w, cfg)
    stacked = lv.levels.expand(3, *lv.levels.shape)
    out = recombine(stacked, level_sign(w), lv.scale, cfg)
    assert out.shape == (3, 4, 7)
    assert torch.equal(out[2], recombine(lv.levels, level_sign(w), lv.scale, cfg))


def test_analog_mapping_is_identity() -> None:
    cfg = MappingConfig(weight_bits=0, sign="differential")
    w = torch.randn(5, 3)
    lv = slice_weights(w, cfg)
    assert lv.levels.max() <= cfg.conductance_max_uS + 1e-4
    assert torch.allclose(recombine(lv.levels, None, lv.scale, cfg), w, atol=1e-6)


def test_straight_through_quantization_gradient() -> None:
    w = torch.randn(8, 8, requires_grad=True)
    y = quantize_ste(w, MappingConfig(weight_bits=4)).sum()
    y.backward()
    assert torch.equal(w.grad, torch.ones_like(w))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weight_bits": 5, "bits_per_device": 2}, "not a multiple"),
        ({"weight_bits": 4, "bits_per_device": 5}, "bits_per_device = 5"),
        ({"sign": "twos"}, "sign = 'twos'"),
        ({"scale": "per-row"}, "scale = 'per-row'"),
        ({"tile_rows": 0}, "tile size"),
        ({"weight_bits": 17}, "weight_bits = 17"),
    ],
)
def test_bad_mapping_is_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MappingConfig(**kwargs)


def test_tile_grid_geometry() -> None:
    g = tile_grid(torch.zeros(100, 64, 3, 3), 256, 64)
    assert (g.rows, g.cols) == (576, 100)
    assert g.grid == (3, 2)
    assert g.n_tiles == 6
    assert sum(r * c for r, c in g.tile_shapes()) == 576 * 100
    assert g.utilization == pytest.approx(576 * 100 / (6 * 256 * 64))
