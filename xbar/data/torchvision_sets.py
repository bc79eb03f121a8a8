"""MNIST, CIFAR-10 and CIFAR-100 read by torchvision from a local directory (never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

from xbar.data.split import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    MNIST_MEAN,
    MNIST_STD,
    DatasetSplit,
)
from xbar.errors import InputError, first_line

# Where each dataset's files must lie below ``root``, the files, and how to name them in messages.
LAYOUT: dict[str, tuple[str, tuple[str, ...], str]] = {
    "mnist": (
        "MNIST/raw",
        (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ),
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte (the MNIST files, un-gzipped)",
    ),
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
        "data_batch_1..5, test_batch (the CIFAR-10 python version, unpacked)",
    ),
    "cifar100": (
        "cifar-100-python",
        ("train", "test", "meta"),
        "train, test, meta (the CIFAR-100 python version, unpacked)",
    ),
}


def default_root() -> Path:
    """``$XBAR_DATA`` if set, else ``./data``: where the downloaded datasets are looked for."""
    return Path(os.environ.get("XBAR_DATA", "data"))


def resolve_root(name: str, root: str | os.PathLike[str] | None) -> Path:
    """The directory torchvision must be given for ``name``; ``InputError`` if files are missing.

    ``root`` may also be the dataset's own folder (e.g. ``.../cifar-10-batches-py``).
    """
    sub, files, described = LAYOUT[name]
    base = default_root() if root is None else Path(root)
    depth = len(Path(sub).parts)
    candidates = [base] + list(base.parents)[:depth]
    for candidate in candidates:
        if all((candidate / sub / f).is_file() for f in files):
            return candidate
    folder = base / sub
    missing = [f for f in files if not (folder / f).is_file()]
    state = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
    raise InputError(
        f"dataset {name!r}: directory {folder} {state}; expected files {described} there "
        f"(pass root= or set XBAR_DATA to the directory holding {sub})"
    )


def _open(name: str, factory, root: Path, train: bool, transform):
    """Construct a torchvision dataset, turning its integrity errors into ``InputError``."""
    try:
        return factory(str(root), train=train, transform=transform, download=False)
    except (RuntimeError, AssertionError, ValueError, EOFError, OSError, KeyError, IndexError) as exc:
        # torchvision's MNIST reader asserts on bad headers and fails int() on empty files; CIFAR
        # batches are pickles, unpickled only once their MD5 matches the official files
        sub = LAYOUT[name][0]
        why = first_line(exc)
        raise InputError(
            f"dataset {name!r}: files in {root / sub} are present but unreadable ({why}); "
            f"expected {LAYOUT[name][2]}"
        ) from None


def _to_tensor(name: str, default_stats, normalize: str | None, channels: int) -> list:
    """``ToTensor`` and, unless ``normalize`` says none, ``Normalize`` (see ``xbar.data.sources``)."""
    from torchvision import transforms

    from xbar.data.sources import mean_std, normalize_text

    stats = mean_std(normalize_text(normalize), default_stats, channels, name)
    return [transforms.ToTensor()] + ([transforms.Normalize(*stats)] if stats is not None else [])


def mnist(root: str | os.PathLike[str] | None = None, normalize: str | None = None) -> DatasetSplit:
    """Full MNIST (60,000/10,000) from ``root/MNIST/raw``, normalised with the MNIST mean/std
    (``normalize``: see ``xbar.data.sources``)."""
    from torchvision import datasets, transforms

    where = resolve_root("mnist", root)
    tf = transforms.Compose(_to_tensor("mnist", (MNIST_MEAN, MNIST_STD), normalize, 1))
    return DatasetSplit(
        "mnist",
        _open("mnist", datasets.MNIST, where, True, tf),
        _open("mnist", datasets.MNIST, where, False, tf),
        1,
        10,
        28,
    )


def _cifar(name: str, factory_name: str, num_classes: int, mean, std, root, normalize=None) -> DatasetSplit:
    from torchvision import datasets, transforms

    where = resolve_root(name, root)
    factory = getattr(datasets, factory_name)
    normalise = _to_tensor(name, (mean, std), normalize, 3)
    train_tf = transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), *normalise]
    )
    test_tf = transforms.Compose(normalise)
    return DatasetSplit(
        name,
        _open(name, factory, where, True, train_tf),
        _open(name, factory, where, False, test_tf),
        3,
        num_classes,
        32,
    )


def cifar10(root: str | os.PathLike[str] | None = None, normalize: str | None = None) -> DatasetSplit:
    """CIFAR-10 (50,000/10,000) from ``root/cifar-10-batches-py``.

    Train images get the standard augmentation (random 32x32 crop after 4-pixel
    padding, horizontal flip); both parts are normalised per channel.
    """
    return _cifar("cifar10", "CIFAR10", 10, CIFAR10_MEAN, CIFAR10_STD, root, normalize)


def cifar100(root: str | os.PathLike[str] | None = None, normalize: str | None = None) -> DatasetSplit:
    """CIFAR-100 (50,000/10,000, fine labels) from ``root/cifar-100-python``; augmented like CIFAR-10."""
    return _cifar("cifar100", "CIFAR100", 100, CIFAR100_MEAN, CIFAR100_STD, root, normalize)
