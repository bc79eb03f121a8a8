"""CIFAR-style residual networks: ResNet-18 (TRICE, DAT) and ResNet-20 (WVAT).

Both use a 3x3 stem without max-pooling, as is usual for 32x32 inputs. Every
ReLU is its own ``nn.ReLU`` module and the residual sum is out-of-place, so the
networks convert layer by layer to analog tiles.
"""

from __future__ import annotations

from torch import nn

from xbar.models._common import check_dims


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with an identity or 1x1 projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv, stages of ``BasicBlock`` (the first of each later stage strides by 2), global average pool, fc."""

    def __init__(
        self,
        widths: list[int],
        blocks: list[int],
        in_channels: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        stages: list[nn.Module] = []
        channels = widths[0]
        for i, (width, count) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layer: list[nn.Module] = []
            for j in range(count):
                layer.append(BasicBlock(channels, width, stride if j == 0 else 1))
                channels = width
            stages.append(nn.Sequential(*layer))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.flatten(self.pool(x)))


def resnet18(in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> ResNet:
    """ResNet-18 of TRICE (Fig. 5b) and DAT (Table I): four stages of 2 blocks, widths 64-512.

    Shortcuts that change shape are 1x1 conv + BatchNorm projections (He et al.,
    option B). ``image_size`` is only validated: global average pooling makes the
    network independent of the input size.
    """
    check_dims("resnet18", in_channels, num_classes, image_size)
    return ResNet([64, 128, 256, 512], [2, 2, 2, 2], in_channels, num_classes)


def resnet20(in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> ResNet:
    """ResNet-20 of WVAT (Table 2): three stages of 3 blocks, widths 16-32-64 (He et al. CIFAR).

    Shortcuts that change shape are 1x1 conv + BatchNorm projections (option B)
    rather than zero padding (option A), so every shortcut is an ordinary layer.
    """
    check_dims("resnet20", in_channels, num_classes, image_size)
    return ResNet([16, 32, 64], [3, 3, 3], in_channels, num_classes)
