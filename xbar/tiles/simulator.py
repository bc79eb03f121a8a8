"""The simulator tile: which weight a forward pass uses, and the analog MVM on it.

``TorchSimulatorTile.forward`` hard-codes aihwkit's weight modifiers, so the xbar
weight path (H-bit quantization with a straight-through gradient, device-noise
injection in training, programmed/drifted weights in evaluation) lives in this
subclass. The trainable ``weight`` Parameter always holds the clean weights;
programmed or drifted weights sit in the non-persistent ``programmed`` buffer
and are read only by evaluation forwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from aihwkit.exceptions import TorchTileConfigError
from aihwkit.simulator.parameters.enums import (
    AnalogMVType,
    BoundManagementType,
    NoiseManagementType,
    WeightModifierType,
)
from aihwkit.simulator.parameters.io import IOParameters
from aihwkit.simulator.tiles.analog_mvm import AnalogMVM
from aihwkit.simulator.tiles.torch_tile import TorchSimulatorTile

from xbar.devices import DeviceModel, NoiseFamily
from xbar.mapping import quantize_ste, straight_through


@dataclass
class Injection:
    """Training-time noise injection of one tile (TRICE Alg. 1: noise on the forward weights).

    ``family`` None means the preset's injection family; ``sigma_scale`` is TRICE's
    sigma_t / sigma_d.
    """

    enabled: bool = True
    family: NoiseFamily | None = None
    sigma_scale: float = 1.0


def perfect(io: IOParameters) -> bool:
    """Whether ``io`` is an ideal forward pass (no periphery effects at all)."""
    return bool(io.is_perfect) or io.mv_type == AnalogMVType.IDEAL


def elementwise(io: IOParameters, conv: bool) -> bool:
    """Whether aihwkit's periphery for ``io`` acts elementwise on inputs and outputs.

    Then a native convolution (or linear) with the same input/output processing
    gives aihwkit's result. Noise and bound management scale each input vector by
    its own maximum, and per-output noise strengths (``out_noise_std``) are drawn
    per column: those are not elementwise. For convolutions, input noise and
    stochastic input rounding are per patch element in aihwkit's unfolded path
    (a pixel gets a different draw in every patch), so they are excluded too.
    """
    if perfect(io):
        return True
    if io.mv_type != AnalogMVType.ONE_PASS:
        return False
    if io.noise_management != NoiseManagementType.NONE or io.bound_management != BoundManagementType.NONE:
        return False
    if io.out_noise_std > 0:
        return False
    if conv and (io.inp_noise > 0 or io.inp_sto_round):
        return False
    return True


class XbarSimulatorTile(TorchSimulatorTile):
    """Torch simulator tile whose forward weight comes from the preset's device model."""

    def __init__(self, x_size: int, d_size: int, rpu_config: Any, bias: bool = False, analog_mvm=AnalogMVM) -> None:
        super().__init__(x_size, d_size, rpu_config, bias, analog_mvm)
        self.device_model: DeviceModel = rpu_config.device_model()
        self.injection = Injection()
        #: added to the training forward weight while set (a perturbation of DAT, WVAT or SAM;
        #: ``xbar.training.forward_weights`` sets and clears it)
        self.weight_delta: torch.Tensor | None = None
        self.register_buffer("programmed", None, persistent=False)

    def set_config(self, rpu_config: Any) -> None:
        """Follow on-the-fly changes of ``rpu_config`` (called before every forward).

        A no-op when nothing changed: module attribute assignment is slow enough to
        matter at two calls per layer and step.
        """
        d = self.__dict__
        dm = rpu_config.device_model()
        if d.get("_f_io") is rpu_config.forward and d.get("_modifier") is rpu_config.modifier and d.get("device_model") is dm:
            return
        super().set_config(rpu_config)
        self.device_model = dm

    # ---------------------------------------------------------------- weights
    def effective_weight(self, is_test: bool, batch_size: int = 1) -> torch.Tensor:
        """The ``[out, in]`` weight a forward pass uses; gradients reach ``self.weight``.

        Training: quantized weights (straight-through) plus detached device noise
        (when injection is enabled), plus ``weight_delta`` when set. Evaluation: the
        programmed weights if any, else the clean quantized weights.
        """
        w = self.weight
        dm = self.device_model
        if is_test:
            prog = self.programmed
            if prog is None:
                return quantize_ste(w, dm.mapping)
            return straight_through(w, prog)
        inj = self.injection
        if inj.enabled and not dm.noise_free:
            out = dm.training_weight(w, inj.family, inj.sigma_scale)
        else:
            out = quantize_ste(w, dm.mapping)
            if self._modifier.type not in (WeightModifierType.NONE, WeightModifierType.COPY):
                out = TorchSimulatorTile.modify_weight(out, self._modifier, batch_size)
        delta = self.weight_delta
        return out if delta is None else out + delta

    def set_programmed(self, weights: torch.Tensor | None) -> None:
        """Hold ``weights`` (``[out, in]``) for evaluation forwards; None means clean evaluation."""
        self.programmed = None if weights is None else weights.detach().to(self.weight.device, self.weight.dtype)

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        x_input: torch.Tensor,
        bias: bool = False,
        in_trans: bool = False,
        out_trans: bool = False,
        is_test: bool = False,
        non_blocking: bool = False,
    ) -> torch.Tensor:
        if in_trans or out_trans:
            raise TorchTileConfigError("Non-trans MVMs supported only.")
        weight = self.effective_weight(is_test, x_input.shape[0])
        return self._analog_mvm.matmul(
            weight, x_input, self._f_io, False, is_test=is_test, out_noise_values=self.out_noise_values
        )

    def native_supported(self, conv: bool) -> bool:
        """Whether :meth:`native_forward` reproduces :meth:`forward` for this configuration."""
        if self.out_noise_values is not None:
            return False
        mod = self._modifier
        if mod.per_batch_sample and mod.type not in (WeightModifierType.NONE, WeightModifierType.COPY):
            return False
        return elementwise(self._f_io, conv)

    @property
    def perfect_forward(self) -> bool:
        """Whether the forward periphery is ideal (the MVM is exactly ``op(x, weight)``)."""
        return perfect(self._f_io)

    def native_forward(
        self,
        x: torch.Tensor,
        op: Callable[..., torch.Tensor],
        is_test: bool,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``op(x, weight)`` (``F.linear``/``F.conv2d``) with aihwkit's elementwise periphery.

        Input quantization and clipping are applied to ``x`` and output noise,
        quantization and clipping to the result with aihwkit's own ``AnalogMVM``
        routines, as its unfolded matmul path does (valid when
        :meth:`native_supported`). A ``bias`` is passed on to ``op`` (only allowed
        with an ideal periphery, where nothing happens after the MVM).
        """
        weight = self.effective_weight(is_test, x.shape[0])
        io = self._f_io
        if perfect(io):
            return op(x, weight) if bias is None else op(x, weight, bias)
        if bias is not None:
            raise ValueError("native_forward: a fused bias needs an ideal forward periphery")
        x = AnalogMVM._prepare_input(x, 1.0, False, io.inp_asymmetry != 0.0, io)
        out = op(x, weight)
        _, out = AnalogMVM._finalize_output(out, io)
        if io.out_scale != 1.0:
            out = out * io.out_scale
        return out
