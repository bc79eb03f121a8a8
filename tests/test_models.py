"""Model zoo: registry, output shapes at natural input sizes, parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xbar.models as models
from xbar.errors import InputError

EXPECTED = {"lenet", "mlp", "cnn6", "vgg5", "vgg8", "vgg11", "resnet18", "resnet20"}


def test_names_cover_the_papers_networks() -> None:
    assert EXPECTED <= set(models.names())


@pytest.mark.parametrize("name", models.names())
def test_output_shape_at_natural_size(name: str) -> None:
    torch.manual_seed(0)
    spec = models.spec(name)
    net = models.build(name, num_classes=7).eval()
    x = torch.randn(2, spec.in_channels, spec.image_size, spec.image_size)
    with torch.no_grad():
        assert net(x).shape == (2, 7)


@pytest.mark.parametrize("name", models.names())
def test_only_tile_friendly_modules(name: str) -> None:
    allowed = (
        nn.Conv2d,
        nn.Linear,
        nn.BatchNorm2d,
        nn.MaxPool2d,
        nn.AdaptiveAvgPool2d,
        nn.ReLU,
        nn.Flatten,
        nn.Identity,
        nn.Sequential,
    )
    net = models.build(name)
    for module in net.modules():
        if module is net or type(module).__module__.startswith("xbar."):
            continue
        assert isinstance(module, allowed), type(module)
        if isinstance(module, nn.ReLU):
            assert not module.inplace
    assert models.spec(name).paper
    assert type(net).__doc__ or net.__class__.__init__.__doc__


def test_mlp_parameter_count() -> None:
    net = models.build("mlp")
    count = sum(p.numel() for p in net.parameters())
    assert count == 784 * 400 + 400 + 400 * 200 + 200 + 200 * 10 + 10


def test_lenet_at_28_and_8() -> None:
    net28 = models.build("lenet")
    assert net28(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    net8 = models.build("lenet", image_size=8)
    out = net8(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert sum(isinstance(m, nn.Conv2d) for m in net8.modules()) == 2
    assert sum(isinstance(m, nn.Linear) for m in net8.modules()) == 3


def test_channels_and_classes_configurable() -> None:
    net = models.build("resnet20", in_channels=1, num_classes=100)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 100)
    net = models.build("mlp", in_channels=3, image_size=8)
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_vgg_batch_norm_switch() -> None:
    with_bn = models.build("vgg5")
    without = models.build("vgg5", batch_norm=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())


def test_unknown_model_lists_names() -> None:
    with pytest.raises(InputError, match=r"model 'foo': expected one of lenet, mlp"):
        models.build("foo")


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"in_channels": 0}, "in_channels"),
        ({"image_size": 16}, "image_size"),
        ({"dropout": 0.5}, "unknown option 'dropout'"),
    ],
)
def test_bad_sizes_and_options(kwargs: dict, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        models.build("vgg11", **kwargs)
