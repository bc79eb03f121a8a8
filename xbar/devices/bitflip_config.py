"""What a bit-flip preset section describes: :class:`BitFlipModel` and the storage formats.

The torch-free half of :mod:`xbar.devices.bitflip` (which re-exports all of it and
holds the Eq. 3 engine): the preset schema validates a ``[bitflip]`` section with
these alone, so ``xbar presets list`` does not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Width in bits of each storage format.
STORAGE_BITS: dict[str, int] = {
    "float16": 16,
    "bfloat16": 16,
    "float32": 32,
    "float64": 64,
    "int8": 8,
}

#: (exponent bits, mantissa bits) of the float formats; one sign bit on top (MSB).
FLOAT_LAYOUTS: dict[str, tuple[int, int]] = {
    "float16": (5, 10),
    "bfloat16": (8, 7),
    "float32": (8, 23),
    "float64": (11, 52),
}

_NAMED_MASKS = ("all", "sign", "exponent", "mantissa")

#: Above this expected fraction of flipped slots the dense fliptensors are used.
DENSE_FRACTION = 0.05

Mask = str | tuple[tuple[int, int], ...]


def _is_prob(v: object) -> bool:
    return (
        isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(float(v))
        and 0.0 <= float(v) <= 1.0
    )


@dataclass(frozen=True)
class BitFlipModel:
    """Bit-flip noise on a stored format (Emonds Eq. 3).

    ``p_0to1`` and ``p_1to0`` are p1 and p2 of the paper. ``storage`` is the
    format the values are held in ("float16", "bfloat16", "float32", "float64",
    or "int8" for symmetric per-tensor quantization). ``mask`` says which bits may
    flip: "all", "sign", "exponent", "mantissa" (float formats; int8 knows "all"
    and "sign"), or a tuple of inclusive ``(lo, hi)`` bit ranges with bit 0 the
    LSB; an empty tuple lets no bit flip.
    """

    p_0to1: float
    p_1to0: float
    storage: str = "float32"
    mask: Mask = "all"

    def __post_init__(self) -> None:
        for name in ("p_0to1", "p_1to0"):
            v = getattr(self, name)
            if not _is_prob(v):
                raise ValueError(
                    f"BitFlipModel.{name}: got {v!r}, expected a probability in [0, 1]"
                )
            object.__setattr__(self, name, float(v))
        if self.storage not in STORAGE_BITS:
            raise ValueError(
                f"BitFlipModel.storage: got {self.storage!r}, expected one of "
                f"{', '.join(STORAGE_BITS)}"
            )
        object.__setattr__(self, "mask", self._checked_mask(self.mask))

    def _checked_mask(self, mask: object) -> Mask:
        bits = STORAGE_BITS[self.storage]
        if isinstance(mask, str):
            allowed = _NAMED_MASKS if self.storage in FLOAT_LAYOUTS else ("all", "sign")
            if mask not in allowed:
                raise ValueError(
                    f"BitFlipModel.mask: got {mask!r} for storage {self.storage!r}, expected "
                    f"one of {', '.join(allowed)} or a tuple of (lo, hi) bit ranges"
                )
            return mask
        expected = (
            f"expected 'all', 'sign', 'exponent', 'mantissa' or a tuple of inclusive "
            f"(lo, hi) bit ranges with 0 <= lo <= hi <= {bits - 1}"
        )
        if not isinstance(mask, tuple | list):
            raise ValueError(f"BitFlipModel.mask: got {mask!r}, {expected}")
        ranges = []
        for r in mask:
            ok = (
                isinstance(r, tuple | list)
                and len(r) == 2
                and all(isinstance(b, int) and not isinstance(b, bool) for b in r)
                and 0 <= r[0] <= r[1] < bits
            )
            if not ok:
                raise ValueError(f"BitFlipModel.mask: got range {r!r}, {expected}")
            ranges.append((int(r[0]), int(r[1])))
        return tuple(ranges)

    @property
    def bits(self) -> int:
        """Width of the storage format in bits."""
        return STORAGE_BITS[self.storage]

    @property
    def sparse(self) -> bool:
        """True when the flips are drawn sparsely (count, then positions): p <= ``DENSE_FRACTION``."""
        return not dense_regime(self.p_0to1, self.p_1to0)

    def mask_bits(self) -> list[int]:
        """Sorted bit positions (0 = LSB) that may flip."""
        bits = self.bits
        m = self.mask
        if m == "all":
            return list(range(bits))
        if m == "sign":
            return [bits - 1]
        if m in ("exponent", "mantissa"):
            n_exp, n_man = FLOAT_LAYOUTS[self.storage]
            if m == "mantissa":
                return list(range(n_man))
            return list(range(n_man, n_man + n_exp))
        assert isinstance(m, tuple)
        return sorted({b for lo, hi in m for b in range(lo, hi + 1)})

    @classmethod
    def thermometer(
        cls,
        storage: str,
        n_protected: int,
        p_0to1: float = 0.0,
        p_1to0: float | None = None,
    ) -> BitFlipModel:
        """Fig. 4 masks: the ``n_protected`` most significant bits never flip, all others may.

        ``n_protected`` is the paper's legend number (the big-endian position of the
        first noisy bit): 0 = all bits noisy, 1 = all but the sign bit, and for
        float32 9 = mantissa only. ``p_1to0`` defaults to ``p_0to1`` (symmetric flips,
        as in the paper's sweeps).
        """
        if storage not in STORAGE_BITS:
            raise ValueError(
                f"BitFlipModel.storage: got {storage!r}, expected one of {', '.join(STORAGE_BITS)}"
            )
        bits = STORAGE_BITS[storage]
        if (
            isinstance(n_protected, bool)
            or not isinstance(n_protected, int)
            or not (0 <= n_protected <= bits)
        ):
            raise ValueError(
                f"BitFlipModel.thermometer n_protected: got {n_protected!r}, expected an "
                f"integer in [0, {bits}] for storage {storage!r}"
            )
        mask: Mask = ((0, bits - 1 - n_protected),) if n_protected < bits else ()
        p2 = p_0to1 if p_1to0 is None else p_1to0
        return cls(p_0to1=p_0to1, p_1to0=p2, storage=storage, mask=mask)


def dense_regime(p_0to1: float, p_1to0: float) -> bool:
    """True when the dense fliptensors are used: more than ``DENSE_FRACTION`` of the slots expected to flip."""
    return max(p_0to1, p_1to0) > DENSE_FRACTION
