"""Model registry: names of the papers' networks and one ``build`` entry point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from inspect import signature

from torch import nn

from xbar.errors import InputError
from xbar.models.cnn import CNN6
from xbar.models.lenet import LeNet
from xbar.models.mlp import MLP
from xbar.models.resnet import resnet18, resnet20
from xbar.models.vgg import vgg5, vgg8, vgg11


@dataclass(frozen=True)
class ModelSpec:
    """A registered network: its builder, natural input and the paper that uses it."""

    name: str
    builder: Callable[..., nn.Module]
    in_channels: int
    num_classes: int
    image_size: int
    paper: str


_SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("lenet", LeNet, 1, 10, 28, "TRICE"),
        ModelSpec("mlp", MLP, 1, 10, 28, "WVAT"),
        ModelSpec("cnn6", CNN6, 3, 10, 32, "DAT"),
        ModelSpec("cnn6_bn", partial(CNN6, batch_norm=True), 3, 10, 32, "DAT"),
        ModelSpec("vgg5", vgg5, 3, 10, 32, "WVAT"),
        ModelSpec("vgg8", vgg8, 3, 10, 32, "TRICE"),
        ModelSpec("vgg11", vgg11, 3, 10, 32, "Emonds et al."),
        ModelSpec("resnet18", resnet18, 3, 10, 32, "TRICE, DAT"),
        ModelSpec("resnet20", resnet20, 3, 10, 32, "WVAT"),
    )
}


def names() -> list[str]:
    """Registered model names, smallest networks first."""
    return list(_SPECS)


def spec(name: str) -> ModelSpec:
    """The registry entry of ``name``; ``InputError`` listing the known names if unknown."""
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        raise InputError(f"model {name!r}: expected one of {', '.join(_SPECS)}") from None


def build(
    name: str,
    in_channels: int | None = None,
    num_classes: int | None = None,
    image_size: int | None = None,
    **options: object,
) -> nn.Module:
    """A freshly initialised network ``name``; unset sizes take the model's natural input.

    ``options`` go to the builder (e.g. ``batch_norm=False`` for the VGGs).
    """
    s = spec(name)
    accepted = set(signature(s.builder).parameters) - {"in_channels", "num_classes", "image_size"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        allowed = f"one of {', '.join(sorted(accepted))}" if accepted else "no options"
        raise InputError(f"model {name!r}: unknown option {unknown[0]!r}: expected {allowed}")
    return s.builder(
        in_channels=s.in_channels if in_channels is None else in_channels,
        num_classes=s.num_classes if num_classes is None else num_classes,
        image_size=s.image_size if image_size is None else image_size,
        **options,
    )
