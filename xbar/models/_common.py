"""Shape checks shared by the model builders."""

from __future__ import annotations

from xbar.errors import InputError


def check_dims(model: str, in_channels: int, num_classes: int, image_size: int) -> None:
    """Reject non-positive channel, class and image sizes with one clear line."""
    for field, value in (
        ("in_channels", in_channels),
        ("num_classes", num_classes),
        ("image_size", image_size),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"model {model!r}: {field}={value!r}: expected a positive integer")


def pooled_size(model: str, image_size: int, pools: int) -> int:
    """Side length after ``pools`` 2x2 max-pools (floor division), at least 1."""
    side = image_size
    for _ in range(pools):
        side //= 2
    if side < 1:
        raise InputError(
            f"model {model!r}: image_size={image_size}: expected at least {2**pools} "
            f"(the network halves the image {pools} times)"
        )
    return side
