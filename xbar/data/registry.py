"""Dataset registry: names, data specs (``npz:FILE``, ``imagefolder:DIR``) and one ``load`` entry point."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from xbar.data import bundled, sources, torchvision_sets
from xbar.data.split import DatasetSplit
from xbar.errors import InputError

# name -> loader taking (root, seed, **options); options are split, train_fraction, normalize
_LOADERS: dict[str, Callable[..., DatasetSplit]] = {
    "mnist5k": lambda root, seed, **opts: bundled.mnist5k(seed, **opts),
    "digits": lambda root, seed, **opts: bundled.digits(seed, **opts),
    "mnist": lambda root, seed, **opts: torchvision_sets.mnist(root, **opts),
    "cifar10": lambda root, seed, **opts: torchvision_sets.cifar10(root, **opts),
    "cifar100": lambda root, seed, **opts: torchvision_sets.cifar100(root, **opts),
}
#: Sets whose train/test parts are fixed files (no split options).
FIXED_SPLIT = ("mnist", "cifar10", "cifar100")
#: (in_channels, num_classes, image_size) of the named data sets.
SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist5k": (1, 10, 28),
    "mnist": (1, 10, 28),
    "digits": (1, 10, 8),
    "cifar10": (3, 10, 32),
    "cifar100": (3, 100, 32),
}


def names() -> list[str]:
    """Known dataset names; ``mnist5k`` and ``digits`` work offline with no files."""
    return list(_LOADERS)


def load(
    name: str | os.PathLike,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    *,
    split: str | None = None,
    train_fraction: float | None = None,
    normalize: Any = None,
) -> DatasetSplit:
    """The train/test split of data spec ``name`` (a name, ``npz:FILE`` or ``imagefolder:DIR``).

    ``seed`` fixes the split of the bundled sets (``mnist5k``, ``digits``), which
    ``split`` (stratified or random) and ``train_fraction`` describe; the other sets
    have fixed splits. The torchvision sets read their files from ``root`` (default
    ``$XBAR_DATA`` or ``./data``). ``normalize``: see :mod:`xbar.data.sources`.
    Unset options take each data set's own default.
    """
    split, train_fraction, normalize = sources.check_options(split, train_fraction, normalize)
    kind, spec = sources.parse(name)
    if kind != "name":
        sources.fixed_split_options(spec, split, train_fraction)
        path = spec.split(":", 1)[1]
        return sources.npz(path, normalize) if kind == "npz" else sources.imagefolder(path, normalize)
    try:
        loader = _LOADERS[spec]
    except KeyError:
        raise InputError(f"dataset {spec!r}: expected one of {', '.join(_LOADERS)}, npz:FILE or imagefolder:DIR") from None
    if spec in FIXED_SPLIT:
        sources.fixed_split_options(spec, split, train_fraction)
    opts = {k: v for k, v in (("split", split), ("train_fraction", train_fraction), ("normalize", normalize))
            if v is not None}
    return loader(root, seed, **opts)


def shape_of(name: str | os.PathLike, root: str | os.PathLike[str] | None = None) -> tuple[int, int, int]:
    """``(in_channels, num_classes, image_size)`` of data spec ``name`` (named sets without reading them)."""
    kind, spec = sources.parse(name)
    if kind == "name" and spec in SHAPES:
        return SHAPES[spec]
    s = load(spec, root)
    return s.in_channels, s.num_classes, s.image_size
