"""VGG networks with batch norm for 32x32 inputs: VGG-5 (WVAT), VGG-8 (TRICE), VGG-11 (Emonds)."""

from __future__ import annotations

from torch import nn

from xbar.models._common import check_dims, pooled_size

# Feature stacks: an int is a 3x3 conv ("same" padding) + BatchNorm + ReLU with that
# many output channels, "M" a 2x2 max-pool.
FEATURES: dict[str, list[int | str]] = {
    "vgg5": [64, "M", 128, 128, "M"],
    "vgg8": [128, 128, "M", 256, 256, "M", 512, 512, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
}
# Hidden fully connected widths between the flattened features and the classes.
HIDDEN: dict[str, list[int]] = {
    "vgg5": [1024],
    "vgg8": [1024],
    "vgg11": [512, 512],
}


class VGG(nn.Module):
    """A VGG feature stack followed by fully connected layers; see ``vgg5/8/11``."""

    def __init__(
        self,
        variant: str,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        check_dims(variant, in_channels, num_classes, image_size)
        cfg = FEATURES[variant]
        side = pooled_size(variant, image_size, cfg.count("M"))
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            assert isinstance(item, int)
            layers.append(nn.Conv2d(channels, item, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(item))
            layers.append(nn.ReLU())
            channels = item
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        head: list[nn.Module] = []
        width = channels * side * side
        for hidden in HIDDEN[variant]:
            head += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        head.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


def vgg5(
    in_channels: int = 3, num_classes: int = 10, image_size: int = 32, batch_norm: bool = True
) -> VGG:
    """VGG-5 of WVAT (Table 2, Fig. 1): conv 64, pool, conv 128, conv 128, pool, fc 1024, fc classes.

    Three convolutions and two fully connected layers (five weight layers); at
    32x32 the flattened features are 128 x 8 x 8.
    """
    return VGG("vgg5", in_channels, num_classes, image_size, batch_norm)


def vgg8(
    in_channels: int = 3, num_classes: int = 10, image_size: int = 32, batch_norm: bool = True
) -> VGG:
    """VGG-8 of TRICE (Fig. 5a): conv 128x2, pool, conv 256x2, pool, conv 512x2, pool, fc 1024, fc classes.

    Six convolutions and two fully connected layers, the CIFAR-10 VGG-8 common in
    compute-in-memory benchmarks; at 32x32 the flattened features are 512 x 4 x 4.
    """
    return VGG("vgg8", in_channels, num_classes, image_size, batch_norm)


def vgg11(
    in_channels: int = 3, num_classes: int = 10, image_size: int = 32, batch_norm: bool = True
) -> VGG:
    """VGG-11 (configuration "A") of Emonds et al. (Tables 2-4), the most bit-flip robust VGG there.

    Eight convolutions of VGG-A (64, 128, 256x2, 512x2, 512x2, five pools) and three
    fully connected layers 512-512-classes sized for 32x32 inputs (1 x 1 x 512 features).
    """
    return VGG("vgg11", in_channels, num_classes, image_size, batch_norm)
