"""aihwkit ``BaseNoiseModel`` adapter driven by an xbar :class:`DeviceModel`.

aihwkit's ``program_analog_weights()`` / ``drift_analog_weights(t)`` call a noise
model's ``apply_programming_noise`` / ``apply_drift_noise``. Here both delegate to
the preset's device model, so a programmed tile holds exactly what
``xbar.sample_weights`` would draw (closed forms, correlated fields, bit flips),
and drift/read noise come from ``DeviceModel.read``. The per-conductance hooks of
the aihwkit API are implemented too, on the bit-sliced device levels of
:class:`BitSlicingConverter`, for code that walks the conductances itself.
"""

from __future__ import annotations

import torch
from aihwkit.inference.noise.base import BaseNoiseModel

from xbar.devices import DeviceModel, DeviceState
from xbar.tiles.converter import BitSlicingConverter


class XbarNoiseModel(BaseNoiseModel):
    """Programming noise, drift and read noise of ``device_model``.

    ``drift_noise_parameters`` (what aihwkit keeps between programming and drift)
    is a one-element list holding the :class:`DeviceState` of the programmed
    devices, or ``[None]`` when the device model has neither drift nor read noise.
    ``generator`` (optional) makes programming reproducible.
    """

    def __init__(self, device_model: DeviceModel | None = None, generator: torch.Generator | None = None) -> None:
        device_model = device_model or DeviceModel()
        super().__init__(BitSlicingConverter(device_model.mapping))
        self.device_model = device_model
        self.generator = generator

    def __str__(self) -> str:  # aihwkit prints configs with str()
        return f"XbarNoiseModel({self.g_converter})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, XbarNoiseModel) and other.device_model == self.device_model

    __hash__ = None  # mutable, like aihwkit's noise models

    @property
    def needs_state(self) -> bool:
        """Whether drift or read noise need the per-device state after programming."""
        dm = self.device_model
        return dm.drift is not None or dm.read_noise is not None

    # ----------------------------------------------------------- whole weights
    @torch.no_grad()
    def apply_programming_noise(self, weights: torch.Tensor) -> tuple[torch.Tensor, list[DeviceState | None]]:
        """One programmed instance of ``weights`` and the device state drift needs."""
        dm = self.device_model
        if not self.needs_state:
            return dm.program(weights, 1, generator=self.generator)[0], [None]
        state = dm.program_devices(weights, 1, generator=self.generator)
        programmed = state.weights()[0]
        if dm.stores_bit_patterns:
            from xbar.devices.bitflip import flip_bits

            programmed = flip_bits(programmed, dm.bitflip, generator=self.generator)
        return programmed, [state]

    @torch.no_grad()
    def apply_drift_noise(
        self, weights: torch.Tensor, drift_noise_parameters: list[DeviceState | None], t_inference: float
    ) -> torch.Tensor:
        """Weights read ``t_inference`` s after programming (drift + read noise, uncompensated).

        Drift compensation is applied by the tile's periphery (``alpha``), see
        :meth:`drift_alpha`; ``weights`` is returned as is without device state.
        """
        state = drift_noise_parameters[0] if drift_noise_parameters else None
        if state is None:
            return weights
        state = _state_to(state, weights.device)
        return self.device_model.read(state, t_inference, generator=self.generator, compensate=False)[0]

    @torch.no_grad()
    def drift_alpha(self, state: DeviceState | None, t_inference: float) -> float:
        """Global drift compensation factor sum|W(0)| / sum|W(t)| of the noise-free read.

        The same factor ``DeviceModel.read`` applies with ``compensate=True``; the
        tile multiplies its outputs by it, as a periphery calibrated on a known input would.
        """
        dm = self.device_model
        if state is None or dm.drift is None or state.nu is None or t_inference <= 0:
            return 1.0
        if dm.drift.compensation != "global":
            return 1.0
        drifted = state.programmed * dm.drift.factor(state.nu, t_inference)
        ref0 = state.weights().abs().sum()
        reft = state.weights(drifted).abs().sum()
        return float(ref0 / reft.clamp(min=1e-30))

    # --------------------------------------------------- per-conductance hooks
    @torch.no_grad()
    def apply_programming_noise_to_conductance(self, g_target: torch.Tensor) -> torch.Tensor:
        """Programming noise of devices at levels ``g_target`` (level units, shaped like the
        weight): per-level noise and offsets plus, for a correlated preset, the device
        field N(mu, Sigma) over the crossbar layout (DAT III-A), one draw per call as each
        device plane of :meth:`DeviceModel.program_devices` gets its own."""
        dm = self.device_model
        corr = dm.correlation
        field = None
        if corr is not None and corr.sigma > 0:
            field = dm._device_field(corr, g_target, 1, self.generator)[0]
        elif corr is not None and corr.mean != 0:
            field = corr.mean
        return dm.program_levels(g_target, self.generator, field)[0]

    @torch.no_grad()
    def generate_drift_coefficients(self, g_target: torch.Tensor) -> torch.Tensor | None:
        """Drift exponents nu of devices at levels ``g_target`` (None without drift)."""
        dm = self.device_model
        if dm.drift is None:
            # a resampling read needs the targets (as aihwkit's ReRamWan2022NoiseModel keeps them)
            resamples = dm.read_noise is not None and dm.read_noise.resamples
            return g_target.clone() if resamples else None
        z = torch.randn(g_target.shape, generator=self.generator, device=g_target.device, dtype=g_target.dtype)
        return dm.drift.sample_nu(_levels(g_target, dm), dm.mapping, z)

    @torch.no_grad()
    def apply_drift_noise_to_conductance(
        self, g_prog: torch.Tensor, drift_noise_param: torch.Tensor | None, t_inference: float
    ) -> torch.Tensor:
        """Drift then read noise of devices programmed at ``g_prog``, read ``t_inference`` s later."""
        dm = self.device_model
        if dm.read_noise is not None and dm.read_noise.resamples and dm.drift is None:
            target = g_prog if drift_noise_param is None else drift_noise_param
            return dm.read_levels(target, g_prog, None, t_inference, self.generator)[0]
        g = g_prog
        if dm.drift is not None and drift_noise_param is not None and t_inference > 0:
            g = g * dm.drift.factor(drift_noise_param, t_inference)
        if dm.read_noise is not None:
            sig = dm.read_noise.sigma(_levels(g_prog, dm), g_prog, g, t_inference, dm.mapping)
            g = g + sig * torch.randn(g.shape, generator=self.generator, device=g.device, dtype=g.dtype)
            if dm.clips:
                g = g.clamp(min=0.0)
        return g


def _levels(g: torch.Tensor, dm: DeviceModel) -> torch.Tensor:
    """Nearest valid target level of conductances ``g`` (per-level tables need integers)."""
    if dm.mapping.analog:
        return g
    return g.round().clamp(0, dm.mapping.levels - 1)


def _state_to(state: DeviceState, device: torch.device) -> DeviceState:
    """The device state on ``device`` (a model moved after programming)."""
    if state.programmed.device == device:
        return state
    return DeviceState(
        target=state.target.to(device),
        programmed=state.programmed.to(device),
        nu=None if state.nu is None else state.nu.to(device),
        sign=state.sign.to(device),
        scale=state.scale.to(device),
        cfg=state.cfg,
    )
