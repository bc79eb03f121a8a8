"""LeNet of TRICE (Sec. V-B): two convolution layers and three fully connected layers."""

from __future__ import annotations

from torch import nn

from xbar.models._common import check_dims, pooled_size


class LeNet(nn.Module):
    """LeNet-5 shape: conv 6@5x5, pool, conv 16@5x5, pool, fc 120, fc 84, fc classes.

    TRICE's MNIST network. Both convolutions pad by 2 ("same" size), so the
    flatten width is ``16 * (image_size // 4)**2``: 784 at 28x28 and 64 at the
    8x8 digits, where an unpadded LeNet would run out of pixels.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        check_dims("lenet", in_channels, num_classes, image_size)
        side = pooled_size("lenet", image_size, 2)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))
