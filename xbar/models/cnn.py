"""The 6-layer CNN of DAT (Park et al., Sec. IV, Table I and Fig. 2)."""

from __future__ import annotations

from torch import nn

from xbar.models._common import check_dims, pooled_size


def _conv(in_ch: int, out_ch: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU())
    return layers


class CNN6(nn.Module):
    """Six weight layers: conv 32, conv 32, pool, conv 64, conv 64, pool, fc 512, fc classes.

    DAT trains "a 6-layer CNN" on CIFAR-10/100 without naming its layers; this is
    the classic CIFAR CNN with six weight layers (four 3x3 convolutions with
    "same" padding, two 2x2 max-pools, one hidden fully connected layer of 512).
    DAT compares plain SGD with SGD plus batch normalization ("SGD-BN"):
    ``batch_norm=True`` inserts BatchNorm after every convolution (registered as
    ``cnn6_bn``). Dropout is left out so that every module maps to a tile or a
    digital operation.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        check_dims("cnn6", in_channels, num_classes, image_size)
        side = pooled_size("cnn6", image_size, 2)
        self.features = nn.Sequential(
            *_conv(in_channels, 32, batch_norm),
            *_conv(32, 32, batch_norm),
            nn.MaxPool2d(2),
            *_conv(32, 64, batch_norm),
            *_conv(64, 64, batch_norm),
            nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(64 * side * side, 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))
