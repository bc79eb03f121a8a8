"""``XbarRPUConfig``: the aihwkit RPU config that carries an xbar preset.

The preset travels as the plain dict of ``Preset.to_dict()`` (a simple value that
deep-copies and compares cheaply); its :class:`DeviceModel` is built once and
cached. Defaults differ from aihwkit's ``TorchInferenceRPUConfig`` where xbar
needs them to: a perfect forward periphery (the device model is the only
non-ideality unless the user asks for more, see :func:`periphery`), one aihwkit
tile per layer (xbar tiles the crossbar itself, see ``xbar.tiles.tile_map``) and
the xbar tile, simulator tile and noise model classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aihwkit.inference import GlobalDriftCompensation
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters import IOParameters, MappingParameter
from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType

from xbar.devices import DeviceModel
from xbar.mapping import MappingConfig
from xbar.tiles.noise_model import XbarNoiseModel
from xbar.tiles.simulator import XbarSimulatorTile
from xbar.tiles.tile import XbarInferenceTile

_FROM_PRESET = "from-preset"


def periphery(
    inp_bits: int | None = None,
    out_bits: int | None = None,
    out_noise: float = 0.0,
    inp_bound: float = 1.0,
    out_bound: float = 12.0,
) -> IOParameters:
    """An aihwkit forward periphery with ``inp_bits``-bit DAC and ``out_bits``-bit ADC.

    aihwkit's convention: a b-bit converter has 2^b - 2 steps over
    [-bound, bound] (``res = 1 / (2^b - 2)``); inputs beyond ``inp_bound`` and
    outputs beyond ``out_bound`` are clipped. Noise and bound management are off,
    so the periphery is elementwise and convolutions keep their native fast path;
    scale the inputs into range (e.g. ``rpu_config.pre_post.input_range``) as the
    hardware would. ``None`` bits means no quantization; all None and
    ``out_noise = 0`` gives a perfect periphery.
    """
    for name, bits in (("inp_bits", inp_bits), ("out_bits", out_bits)):
        if bits is not None and not 2 <= int(bits) <= 24:
            raise ValueError(f"{name} = {bits}: expected 2 to 24 bits")
    if out_noise < 0:
        raise ValueError(f"out_noise = {out_noise}: expected >= 0")
    if inp_bits is None and out_bits is None and out_noise == 0:
        return IOParameters(is_perfect=True)
    return IOParameters(
        is_perfect=False,
        inp_res=1.0 / (2 ** int(inp_bits) - 2) if inp_bits else -1.0,
        out_res=1.0 / (2 ** int(out_bits) - 2) if out_bits else -1.0,
        out_noise=float(out_noise),
        inp_bound=float(inp_bound),
        out_bound=float(out_bound),
        inp_noise=0.0,
        noise_management=NoiseManagementType.NONE,
        bound_management=BoundManagementType.NONE,
    )


def _preset_dict(preset: Any) -> tuple[dict[str, Any], Any]:
    """(the config's stored form of ``preset``, the validated Preset or None): a dict as given
    ({} = ideal devices, validated when first used), else its canonical ``to_dict``."""
    if isinstance(preset, dict):
        return preset, None
    from xbar import presets

    obj = presets.resolve(preset)
    return obj.to_dict(canonical=True), obj


@dataclass
class XbarRPUConfig(TorchInferenceRPUConfig):
    """aihwkit torch-inference config whose devices are described by an xbar preset.

    ``preset`` is a preset dict (``Preset.to_dict()``); a ``Preset``, a shipped
    name or a TOML path is accepted and turned into one. An empty dict means ideal
    analog devices. ``noise_model`` defaults to the preset's :class:`XbarNoiseModel`
    and ``drift_compensation`` to aihwkit's global compensation when the preset
    has drift with ``compensation = "global"``.
    """

    simulator_tile_class: type = XbarSimulatorTile
    tile_class: type = XbarInferenceTile
    preset: dict = field(default_factory=dict)
    forward: IOParameters = field(
        default_factory=lambda: IOParameters(is_perfect=True), metadata=dict(bindings_include=True)
    )
    mapping: MappingParameter = field(
        default_factory=lambda: MappingParameter(max_input_size=0, max_output_size=0)
    )
    noise_model: Any = _FROM_PRESET
    drift_compensation: Any = _FROM_PRESET

    def __post_init__(self) -> None:
        self.preset, obj = _preset_dict(self.preset)
        if obj is not None:  # already validated: not again from its dict
            self.__dict__["_preset_object"] = (self.preset, obj)
        dm = self.device_model()
        if isinstance(self.noise_model, str) and self.noise_model == _FROM_PRESET:
            self.noise_model = XbarNoiseModel(dm)
        if isinstance(self.drift_compensation, str) and self.drift_compensation == _FROM_PRESET:
            drift = dm.drift
            self.drift_compensation = (
                GlobalDriftCompensation() if drift is not None and drift.compensation == "global" else None
            )

    @classmethod
    def from_preset(cls, preset: Any, forward: IOParameters | None = None, **kwargs: Any) -> XbarRPUConfig:
        """A config for ``preset`` (name, path, Preset or dict) with an optional forward periphery."""
        if forward is not None:
            kwargs["forward"] = forward
        return cls(preset=preset, **kwargs)

    def preset_object(self):
        """The preset as a validated :class:`xbar.presets.Preset` (None for ideal devices)."""
        if not self.preset:
            return None
        cached = self.__dict__.get("_preset_object")
        if cached is not None and cached[0] is self.preset:
            return cached[1]
        from xbar.presets import resolve

        obj = resolve(self.preset, origin=f"preset {self.preset.get('name', '?')}")
        self.__dict__["_preset_object"] = (self.preset, obj)
        return obj

    def device_model(self) -> DeviceModel:
        """The preset's device model, built once per config (copies share nothing)."""
        cached = self.__dict__.get("_device_model")
        key = self.__dict__.get("_device_model_key")
        if cached is None or key is not self.preset:
            preset = self.preset_object()
            cached = preset.device_model() if preset is not None else DeviceModel(mapping=MappingConfig(weight_bits=0))
            self.__dict__["_device_model"] = cached
            self.__dict__["_device_model_key"] = self.preset
        return cached
