"""How weights are mapped onto devices (the `[mapping]` section of a preset)."""

from __future__ import annotations

from dataclasses import dataclass

SIGN_MODES = ("magnitude", "differential", "offset")
SCALE_MODES = ("per-tensor", "per-channel")


@dataclass(frozen=True)
class MappingConfig:
    """Mapping of a weight tensor onto crossbar devices.

    Attributes:
        weight_bits: H, bits of the quantized weight magnitude (TRICE Eq. 11).
            0 means analog storage: no quantization, one device per sign whose
            conductance is proportional to |w| (aihwkit's single-pair converter).
        bits_per_device: B, bits stored per device; a weight uses H/B devices
            per sign plane (Eq. 12). Ignored for analog storage.
        sign: "magnitude" (TRICE: the H/B devices hold |w|, the sign is applied
            in the periphery), "differential" (a positive and a negative device
            plane, both programmed; the unused one sits at level 0) or "offset"
            (the integer code is shifted by 2^(H-1) so that it is non-negative).
        scale: "per-tensor" (TRICE: max|W| of the whole tensor) or "per-channel"
            (max|W| of each output channel).
        tile_rows, tile_cols: crossbar size in devices (rows = inputs, cols = outputs).
        conductance_max_uS: for analog storage, the conductance that max|W| maps to.
    """

    weight_bits: int = 4
    bits_per_device: int = 2
    sign: str = "magnitude"
    scale: str = "per-tensor"
    tile_rows: int = 256
    tile_cols: int = 256
    conductance_max_uS: float = 25.0

    def __post_init__(self) -> None:
        if self.weight_bits < 0 or self.weight_bits > 16:
            raise ValueError(f"weight_bits = {self.weight_bits}: expected 0 (analog) to 16")
        if self.weight_bits and not 1 <= self.bits_per_device <= self.weight_bits:
            raise ValueError(
                f"bits_per_device = {self.bits_per_device}: expected 1 to weight_bits ({self.weight_bits})"
            )
        if self.weight_bits and self.weight_bits % self.bits_per_device:
            raise ValueError(
                f"weight_bits = {self.weight_bits} is not a multiple of bits_per_device = "
                f"{self.bits_per_device} (TRICE assumes H is a multiple of B)"
            )
        if self.sign not in SIGN_MODES:
            raise ValueError(f"sign = {self.sign!r}: expected one of {', '.join(SIGN_MODES)}")
        if self.sign == "offset" and self.weight_bits < 2:
            raise ValueError("sign = 'offset' needs weight_bits >= 2")
        if self.scale not in SCALE_MODES:
            raise ValueError(f"scale = {self.scale!r}: expected one of {', '.join(SCALE_MODES)}")
        if self.tile_rows < 1 or self.tile_cols < 1:
            raise ValueError(f"tile size {self.tile_rows}x{self.tile_cols}: expected positive")
        if not self.conductance_max_uS > 0:
            raise ValueError(f"conductance_max_uS = {self.conductance_max_uS}: expected > 0")

    @property
    def analog(self) -> bool:
        return self.weight_bits == 0

    @property
    def levels(self) -> int:
        """Number of conductance levels per device, 2^B (0 for analog devices)."""
        return 0 if self.analog else 2**self.bits_per_device

    @property
    def slices(self) -> int:
        """Devices per weight per sign plane, H/B (1 for analog devices)."""
        return 1 if self.analog else self.weight_bits // self.bits_per_device

    @property
    def planes(self) -> int:
        """Sign planes: 2 for a differential pair (and analog storage), else 1."""
        return 2 if (self.sign == "differential" or self.analog) else 1

    @property
    def devices_per_weight(self) -> int:
        return self.planes * self.slices

    @property
    def max_code(self) -> int:
        """Largest integer magnitude a weight can take."""
        if self.analog:
            return 1
        if self.sign == "offset":
            return 2 ** (self.weight_bits - 1) - 1
        return 2**self.weight_bits - 1

    @property
    def level_max(self) -> float:
        """The top level of one device, in level units (conductance units when analog)."""
        return self.conductance_max_uS if self.analog else float(self.levels - 1)

    def slice_gains(self) -> list[float]:
        """Recombination weight of each slice, 2^(iB) (TRICE Eq. 14)."""
        return [float(2 ** (i * self.bits_per_device)) for i in range(self.slices)] if not self.analog else [1.0]
