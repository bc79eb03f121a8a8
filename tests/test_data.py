"""Datasets: bundled splits, seeded loaders, local torchvision sets and their error messages."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import xbar.data as data
from xbar.errors import InputError


@pytest.fixture(scope="module")
def mnist5k() -> data.DatasetSplit:
    return data.load("mnist5k", seed=0)


def test_names() -> None:
    assert {"mnist5k", "digits", "mnist", "cifar10", "cifar100"} <= set(data.names())


def test_mnist5k_split_sizes_and_strata(mnist5k: data.DatasetSplit) -> None:
    assert (mnist5k.in_channels, mnist5k.num_classes, mnist5k.image_size) == (1, 10, 28)
    x_train, y_train = mnist5k.train.tensors
    x_test, y_test = mnist5k.test.tensors
    assert x_train.shape == (4000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert torch.bincount(y_train, minlength=10).tolist() == [400] * 10
    assert torch.bincount(y_test, minlength=10).tolist() == [100] * 10
    assert not torch.equal(y_train[:100], torch.sort(y_train[:100]).values)  # shuffled


def test_mnist5k_value_range(mnist5k: data.DatasetSplit) -> None:
    x = mnist5k.train.tensors[0]
    lo, hi = -0.1307 / 0.3081, (1 - 0.1307) / 0.3081
    assert x.min().item() == pytest.approx(lo, abs=1e-5)
    assert x.max().item() == pytest.approx(hi, abs=1e-5)
    assert abs(x.mean().item()) < 0.2 and 0.8 < x.std().item() < 1.2


def test_mnist5k_deterministic_in_seed(mnist5k: data.DatasetSplit) -> None:
    again = data.load("mnist5k", seed=0)
    other = data.load("mnist5k", seed=1)
    assert torch.equal(again.train.tensors[0], mnist5k.train.tensors[0])
    assert torch.equal(again.test.tensors[1], mnist5k.test.tensors[1])
    assert not torch.equal(other.train.tensors[0], mnist5k.train.tensors[0])


def test_digits_split() -> None:
    split = data.load("digits", seed=3)
    x_train, y_train = split.train.tensors
    x_test, _ = split.test.tensors
    assert len(split.train) + len(split.test) == 1797
    assert (len(split.train), len(split.test)) == (1438, 359)
    assert x_train.shape[1:] == (1, 8, 8) and x_test.shape[1:] == (1, 8, 8)
    assert x_train.min() >= 0 and x_train.max() == 1
    counts = torch.bincount(y_train, minlength=10).float()
    assert (counts / counts.sum() - 0.1).abs().max() < 0.01


def test_stratified_split_partitions() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 5])
    train, test = data.stratified_split(labels, 0.8, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(35))
    assert np.bincount(labels[train]).tolist() == [8, 16, 4]


def test_loaders_are_seeded() -> None:
    split = data.load("digits")
    first = [y for _, y in data.loaders(split, 256, seed=5)[0]]
    again = [y for _, y in data.loaders(split, 256, seed=5)[0]]
    other = [y for _, y in data.loaders(split, 256, seed=6)[0]]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    test_loader = data.loaders(split, 100, seed=5)[1]
    assert torch.equal(next(iter(test_loader))[1], split.test.tensors[1][:100])
    with pytest.raises(InputError, match="batch_size"):
        data.loaders(split, 0, seed=0)


def test_missing_cifar10_names_directory_and_files(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        data.load("cifar10", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "data_batch_1..5" in message and "test_batch" in message


def test_partial_cifar100_names_missing_files(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(b"")
    with pytest.raises(InputError, match="lacks test, meta"):
        data.load("cifar100", root=tmp_path)


def test_corrupt_cifar10_is_input_error(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="unreadable"):
        data.load("cifar10", root=tmp_path)



@pytest.mark.parametrize("content", [b"junk\n", b""], ids=["junk", "empty"])
def test_corrupt_mnist_is_input_error(tmp_path: Path, content: bytes) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(content)
    with pytest.raises(InputError, match="unreadable") as err:
        data.load("mnist", root=tmp_path)
    assert "\n" not in str(err.value)

def _write_idx(path: Path, array: np.ndarray) -> None:
    """An MNIST idx file of unsigned bytes (magic 0x08, then the dimensions)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_local_mnist_read_through_torchvision(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    for root in (tmp_path, tmp_path / "MNIST" / "raw"):
        split = data.load("mnist", root=root)
        assert (len(split.train), len(split.test)) == (6, 4)
        image, label = split.train[1]
        assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and label == 1
        assert image.min() >= -0.1307 / 0.3081 - 1e-5


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(InputError, match=r"dataset 'foo': expected one of mnist5k, digits"):
        data.load("foo")


class _Jitter(torch.utils.data.Dataset):
    """Random augmentation drawn from all three global generators (torch, random, numpy)."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):
        import random

        return torch.tensor([float(i), torch.rand(()).item(), random.random(), np.random.rand()]), i


def test_seeded_samples_depend_only_on_the_seed_and_leave_the_global_state_alone() -> None:
    from xbar.data.seeded import SeededSamples

    ds = SeededSamples(_Jitter())
    torch.manual_seed(0)
    before = torch.get_rng_state()
    x, y = ds[[(2, 11), (3, 11), (2, 12)]]
    assert torch.equal(torch.get_rng_state(), before)  # reading moved no global generator
    assert y.tolist() == [2, 3, 2] and x.shape == (3, 4)
    assert torch.equal(x[0, 1:], x[1, 1:])  # the seed alone keys the draws
    assert not torch.equal(x[0, 1:], x[2, 1:])
    torch.rand(5)  # another global state: the same samples
    again, _ = ds[[(2, 12), (2, 11)]]
    assert torch.equal(again[0], x[2]) and torch.equal(again[1], x[0])
