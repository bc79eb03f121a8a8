"""Dataset registry: names and one ``load`` entry point."""

from __future__ import annotations

import os
from collections.abc import Callable

from xbar.data import bundled, torchvision_sets
from xbar.data.split import DatasetSplit
from xbar.errors import InputError

# name -> loader taking (root, seed)
_LOADERS: dict[str, Callable[[str | os.PathLike[str] | None, int], DatasetSplit]] = {
    "mnist5k": lambda root, seed: bundled.mnist5k(seed),
    "digits": lambda root, seed: bundled.digits(seed),
    "mnist": lambda root, seed: torchvision_sets.mnist(root),
    "cifar10": lambda root, seed: torchvision_sets.cifar10(root),
    "cifar100": lambda root, seed: torchvision_sets.cifar100(root),
}


def names() -> list[str]:
    """Known dataset names; ``mnist5k`` and ``digits`` work offline with no files."""
    return list(_LOADERS)


def load(name: str, root: str | os.PathLike[str] | None = None, seed: int = 0) -> DatasetSplit:
    """The train/test split of dataset ``name``.

    ``seed`` fixes the split of the bundled sets (``mnist5k``, ``digits``); the
    torchvision sets have fixed splits and read their files from ``root``
    (default ``$XBAR_DATA`` or ``./data``).
    """
    try:
        loader = _LOADERS[name]
    except (KeyError, TypeError):
        raise InputError(f"dataset {name!r}: expected one of {', '.join(_LOADERS)}") from None
    return loader(root, seed)
