"""The train/test pair every loader returns, and the normalisation constants."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

# Per-channel mean and standard deviation of the training images, pixel values in [0, 1].
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


@dataclass(frozen=True)
class DatasetSplit:
    """A dataset's train and test parts plus the input shape a model needs to fit it.

    ``train`` and ``test`` yield ``(image [C, H, W] float32, label int)`` pairs:
    ``TensorDataset`` for the bundled sets, torchvision datasets otherwise.
    """

    name: str
    train: Dataset
    test: Dataset
    in_channels: int
    num_classes: int
    image_size: int
