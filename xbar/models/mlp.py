"""Fully connected network 784-400-200-10 of WVAT (Table 1, "FC 2-layer")."""

from __future__ import annotations

from torch import nn

from xbar.models._common import check_dims


class MLP(nn.Module):
    """Two hidden layers of 400 and 200 ReLU units (WVAT's MNIST ANN, 784-400-200-10).

    The input width is ``in_channels * image_size**2``, so the same network serves
    28x28 MNIST (784 inputs) and the 8x8 digits (64 inputs).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        check_dims("mlp", in_channels, num_classes, image_size)
        in_features = in_channels * image_size * image_size
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, 400)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(400, 200)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(200, num_classes)

    def forward(self, x):
        x = self.relu1(self.fc1(self.flatten(x)))
        x = self.relu2(self.fc2(x))
        return self.fc3(x)
