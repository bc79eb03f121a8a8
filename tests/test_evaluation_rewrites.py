"""The study engines' model rewrites change speed only: outputs are bit-for-bit the model's."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xbar import models
from xbar.evaluation.batched import StackedModel
from xbar.evaluation.rewrites import PoolThenReLU, StridedMaxPool2d, pool_before_relu, swap_pools
from xbar.mapping import quantize_activations


def _exact(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("size", [(12, 12), (13, 14), (9, 17)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_strided_pool_equals_max_pool2d(k, size, dtype):
    g = torch.Generator().manual_seed(k)
    x = torch.randn(3, 5, *size, generator=g, dtype=dtype)
    x[0, 0, 0, 0] = float("nan")
    x[1, 2, 1, :] = float("-inf")
    x[2, 1] = 0.0  # ties
    _exact(StridedMaxPool2d(k)(x), F.max_pool2d(x, k))


def test_swap_pools_takes_only_exact_equivalents():
    net = nn.Sequential(
        nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2), nn.MaxPool2d(2, padding=1), nn.MaxPool2d(2, ceil_mode=True),
        nn.MaxPool2d(5), nn.MaxPool2d((2, 2), stride=(2, 2)),
    )
    hooked = nn.MaxPool2d(2)
    hooked.register_forward_hook(lambda m, i, o: None)
    net.append(hooked)
    assert swap_pools(net) == 2
    assert [type(m) is StridedMaxPool2d for m in net] == [True, False, False, False, False, True, False]


def _lenet() -> nn.Module:
    torch.manual_seed(0)
    return models.build("lenet").eval()


@pytest.mark.parametrize("bits", [0, 4])
@pytest.mark.parametrize("swap", [False, True])
def test_relu_after_pool_gives_the_same_outputs(bits, swap):
    """LeNet as built against its rewritten copy, with and without TRICE's 4-bit activations,
    on 28x28 (the windows tile every map) and 30x30 (the second pool crops a row: the
    quantized ReLU must keep its order there, since its scale is the sample's maximum)."""
    model = _lenet()
    quantize_activations(model, bits)
    fast = copy.deepcopy(model)
    if swap:
        assert swap_pools(fast) == 2
    assert pool_before_relu(fast) == 2
    assert [type(m) for m in fast.features] == [nn.Conv2d, nn.Identity, PoolThenReLU] * 2
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for side in (28, 30):
            x = torch.rand(64, 1, side, side, generator=g)
            if side == 30:
                model.classifier[0] = fast.classifier[0] = nn.Linear(16 * 7 * 7, 120)
            _exact(fast(x), model(x))


def test_cropping_map_keeps_the_order_when_quantized():
    """On a 6x6 map pooled by 4 the cropped border holds each sample's maximum: quantizing
    after the pool would change the scale, so the rewrite falls back to the original order."""
    relu = nn.ReLU()
    quantize_activations(nn.Sequential(relu), 2)
    block = PoolThenReLU(nn.MaxPool2d(4), relu)
    x = torch.rand(8, 3, 6, 6)
    x[..., 5, 5] = 10.0
    ref = F.max_pool2d(relu(x), 4)
    _exact(block(x), ref)
    assert not torch.equal(relu(F.max_pool2d(x, 4)), ref)  # the order matters here


def test_observed_and_hooked_relus_are_left_alone():
    model = _lenet()
    model.features[4].register_forward_hook(lambda m, i, o: None)
    fast = copy.deepcopy(model)
    assert pool_before_relu(fast, keep={"features.1"}) == 0
    assert type(fast.features[1]) is nn.ReLU and type(fast.features[4]) is nn.ReLU
    sm = StackedModel(_lenet(), observed=["features.2"])
    assert type(sm.model.features[1]) is nn.ReLU
    assert type(sm.model.features[4]) is nn.Identity


def test_stacked_model_uses_the_rewrites_and_matches_the_model():
    model = _lenet()
    quantize_activations(model, 4)
    sm = StackedModel(model)
    assert isinstance(sm.model.features[2], PoolThenReLU)
    assert isinstance(sm.model.features[2].pool, StridedMaxPool2d)
    x = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _exact(sm.forward(x, 1)[0], model(x))


class _ReadsTheReLU(nn.Module):
    """A user's network that runs its Sequential child by child and keeps the ReLU's output."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

    def forward(self, x):
        conv, relu, pool = self.features
        r = relu(conv(x))
        return pool(r).flatten(1).sum(1) + r.flatten(1).sum(1)


def test_only_sequentials_that_run_whole_are_reordered():
    user = _ReadsTheReLU()
    assert pool_before_relu(user) == 0  # its forward reads the ReLU's output itself
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    ref = copy.deepcopy(seq)
    assert pool_before_relu(seq) == 1  # the model itself: nothing else calls its children
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _exact(seq(x), ref(x))
        sm = StackedModel(user)
        _exact(sm.forward(x, 1)[0], user(x))


def test_vgg_with_batch_norm_keeps_its_outputs():
    """VGG-8 (conv, batch norm, ReLU, pool) with TRICE's 6-bit activations: every ReLU before a
    pool is reordered and the engine's outputs are the model's, bit for bit."""
    torch.manual_seed(4)
    model = models.build("vgg8", in_channels=3, num_classes=10, image_size=16).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    quantize_activations(model, 6)
    sm = StackedModel(model)
    assert sum(isinstance(m, PoolThenReLU) for m in sm.model.modules()) == 3
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _exact(sm.forward(x, 1)[0], model(x))
