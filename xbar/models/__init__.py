"""Model zoo of the papers' networks (LeNet, MLP, 6-layer CNN, VGG-5/8/11, ResNet-18/20),
and the user's own networks by spec (``torchvision:NAME``, ``FILE.py:FACTORY``,
``package.module:FACTORY``, an ``nn.Module``): :func:`resolve` and :func:`build`.

The zoo networks are built only from ``nn.Conv2d``, ``nn.Linear``, batch norm, pooling and ``nn.ReLU``
modules, so that every weight layer converts to an analog tile.
"""

from xbar.models.cnn import CNN6
from xbar.models.lenet import LeNet
from xbar.models.mlp import MLP
from xbar.models.registry import ModelSpec, names, spec
from xbar.models.resnet import ResNet, resnet18, resnet20
from xbar.models.source import ModelSource, build
from xbar.models.source import parse as resolve
from xbar.models.vgg import VGG, vgg5, vgg8, vgg11

__all__ = [
    "CNN6",
    "LeNet",
    "MLP",
    "ModelSource",
    "ModelSpec",
    "ResNet",
    "VGG",
    "build",
    "names",
    "resolve",
    "resnet18",
    "resnet20",
    "spec",
    "vgg5",
    "vgg8",
    "vgg11",
]
