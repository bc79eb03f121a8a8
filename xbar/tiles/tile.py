"""The tile module: aihwkit's torch inference tile with xbar programming, drift and a native path.

Differences from ``TorchInferenceTile`` (and the aihwkit pitfalls they avoid):

- ``program_weights`` always programs from the current clean weights (aihwkit
  programs ``reference_combined_weights``, which optimizer steps do not refresh)
  and stores the result in the simulator tile's non-persistent ``programmed``
  buffer, never in the trainable weight (aihwkit overwrites it, so training
  after programming would train noisy weights).
- ``drift_weights`` reads the programmed devices through the device model and
  writes the global drift compensation into the fixed-shape, non-persistent
  ``alpha`` buffer (aihwkit replaces it by a 0-d tensor, which breaks loading the
  state dict into a fresh model).
- Programmed weights go stale when the clean weights change (optimizer step,
  clipping, ``set_weights``); evaluation then falls back to clean weights with a
  warning instead of silently using weights of an older model.
- ``native_forward`` runs ``F.linear``/``F.conv2d`` on the effective weight.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from aihwkit.exceptions import ConfigError
from aihwkit.inference.noise.base import BaseNoiseModel
from aihwkit.simulator.tiles.inference_torch import TorchInferenceTile

from xbar.tiles.noise_model import XbarNoiseModel


class XbarInferenceTile(TorchInferenceTile):
    """One logical crossbar layer (one aihwkit tile per layer) driven by an xbar preset."""

    supports_indexed: bool = False

    def __init__(
        self,
        out_size: int,
        in_size: int,
        rpu_config: Any = None,
        bias: bool = False,
        in_trans: bool = False,
        out_trans: bool = False,
    ) -> None:
        if rpu_config is None:
            from xbar.tiles.config import XbarRPUConfig

            rpu_config = XbarRPUConfig()
        super().__init__(out_size, in_size, rpu_config, bias, in_trans, out_trans)
        # fixed shape [1], not saved: drift compensation belongs to a programmed instance
        alpha = self._buffers.pop("alpha")
        self.register_buffer("alpha", alpha.reshape(1), persistent=False)
        self.programmed_weights = None  # weights right after programming (t = 0)
        self.drift_noise_parameters = None
        self._programmed_key: tuple | None = None
        self._warned_stale = False

    # ------------------------------------------------------------ programming
    @property
    def is_programmed(self) -> bool:
        return self.tile.programmed is not None

    def _weight_key(self) -> tuple:
        w = self.tile.weight
        return (w._version, w.data_ptr(), w.device)

    def _check_stale(self) -> None:
        """Drop programmed weights made from clean weights that have changed since."""
        if self._programmed_key is None:
            return
        version, ptr, device = self._weight_key()
        old_version, old_ptr, old_device = self._programmed_key
        if version == old_version and (ptr == old_ptr or device != old_device):
            self._programmed_key = (version, ptr, device)  # moved to another device: still valid
            return
        if not self._warned_stale:
            warnings.warn(
                "xbar: the clean weights changed after program_analog_weights(); evaluating the clean "
                "weights until the model is programmed again",
                stacklevel=3,
            )
            self._warned_stale = True
        self.reset_programming()

    @torch.no_grad()
    def program_weights(self, from_reference: bool = True, noise_model: BaseNoiseModel | None = None) -> None:
        """Program the current clean weights with the noise model (``from_reference`` is ignored).

        A given ``noise_model`` replaces the config's, as in aihwkit.
        """
        if noise_model is not None:
            if not isinstance(noise_model, BaseNoiseModel):
                raise ConfigError("Given noise model has to be of type 'BaseNoiseModel'")
            self.rpu_config.noise_model = noise_model
        clean = self.tile.weight.detach()
        programmed, params = self.rpu_config.noise_model.apply_programming_noise(clean)
        self.set_programmed_weights(programmed.to(clean.device, clean.dtype), params)

    @torch.no_grad()
    def set_programmed_weights(self, weights: torch.Tensor, drift_parameters: object = None) -> None:
        """Make ``weights`` (``[out, in]``) the programmed instance evaluation forwards use.

        The clean weights stay the trainable parameter; drift compensation is reset to 1.
        Used by ``program_weights`` and by hardware-in-the-loop read-back.
        """
        self.programmed_weights = weights.detach().clone()
        self.drift_noise_parameters = drift_parameters
        self.tile.set_programmed(self.programmed_weights)
        self.alpha.fill_(1.0)
        self._programmed_key = self._weight_key()
        self._warned_stale = False

    @torch.no_grad()
    def drift_weights(self, t_inference: float = 0.0) -> None:
        """Read the programmed devices ``t_inference`` seconds after programming (programs first if needed).

        Drift and read noise come from the noise model; with drift compensation
        configured, the output scale ``alpha`` is set to the global factor.
        """
        self._check_stale()
        if self.programmed_weights is None:
            self.program_weights()
        self.programmed_weights = self.programmed_weights.to(self.tile.weight.device)
        nm = self.rpu_config.noise_model
        drifted = nm.apply_drift_noise(self.programmed_weights, self.drift_noise_parameters, t_inference)
        self.tile.set_programmed(drifted)
        alpha = 1.0
        if getattr(self.rpu_config, "drift_compensation", None) is not None:
            if isinstance(nm, XbarNoiseModel):
                state = self.drift_noise_parameters[0] if self.drift_noise_parameters else None
                alpha = nm.drift_alpha(state, t_inference)
            else:
                ref = self.programmed_weights.abs().sum()
                alpha = float(ref / drifted.abs().sum().clamp(min=1e-30))
        self.alpha.fill_(alpha)

    @torch.no_grad()
    def reset_programming(self) -> None:
        """Forget programmed/drifted weights: evaluation uses the clean quantized weights again."""
        self.programmed_weights = None
        self.drift_noise_parameters = None
        self.tile.set_programmed(None)
        self.alpha.fill_(1.0)
        self._programmed_key = None

    @torch.no_grad()
    def eval_weight(self) -> torch.Tensor:
        """The ``[out, in]`` weight an evaluation forward uses, output scales folded in."""
        self._check_stale()
        w = self.tile.effective_weight(True)
        scales = self.get_scales()
        if scales is not None:
            w = w * scales.view(-1, 1)
        if getattr(self.rpu_config, "drift_compensation", None) is not None:
            w = w * self.alpha
        return w.detach().clone()

    # ---------------------------------------------------------------- forward
    def forward(self, x_input: torch.Tensor, tensor_view: tuple | None = None) -> torch.Tensor:
        self._check_stale()
        return super().forward(x_input, tensor_view)

    def native_supported(self, conv: bool) -> bool:
        """Whether :meth:`native_forward` gives aihwkit's result for this tile and mode.

        Also brings the tile's configuration up to date, as aihwkit's forward does;
        :meth:`native_forward` relies on this call coming first.
        """
        self.tile.set_config(self.rpu_config)
        if self.analog_bias or self.in_trans or self.out_trans:
            return False
        if self.input_range is not None and self.training:
            return False  # input-range learning statistics are per unfolded patch in aihwkit
        return self.tile.native_supported(conv)

    def native_forward(
        self,
        x: torch.Tensor,
        op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        channel_dim: int,
        tensor_view: tuple,
    ) -> torch.Tensor:
        """``op(x, effective weight[, bias])`` with the tile's input/output periphery and digital bias.

        ``op(x, weight, bias=None)`` is ``F.linear``-like. ``channel_dim`` is the
        output-channel dimension of the result; ``tensor_view`` the shape that
        broadcasts a per-channel vector onto it. With an ideal periphery the bias is
        passed to ``op`` (fused, like the digital layer); otherwise aihwkit's
        pre/post processing runs and the bias is added after the output scales.
        """
        self._check_stale()
        is_test = not self.training
        if self._plain_periphery(is_test):
            # nothing between the MVM and the bias: one op with the bias fused, as a digital layer
            return self.tile.native_forward(x, op, is_test, self.bias if self.digital_bias else None)
        x = self.pre_forward(x, channel_dim, is_test)
        out = self.tile.native_forward(x, op, is_test)
        out = self.post_forward(out, channel_dim, is_test)
        out = self.apply_out_scaling(out, tensor_view)
        if self.digital_bias:
            return out + self.bias.view(*tensor_view)
        return out

    def _plain_periphery(self, is_test: bool) -> bool:
        """Whether pre/post processing are identities: no input range, mapping or output
        scales, quantized periphery or drift compensation, and a perfect forward pass."""
        return (
            self.input_range is None
            and self.mapping_scales is None
            and self.out_scaling_alpha is None
            and not hasattr(self.rpu_config.pre_post, "periph_quant")
            and not (is_test and getattr(self.rpu_config, "drift_compensation", None) is not None)
            and self.tile.perfect_forward
        )

    # ----------------------------------------------------------------- pickle
    def __setstate__(self, state: dict) -> None:
        """Copies keep their programmed instance; loading an aihwkit analog state resets it."""
        super().__setstate__(state)
        if "_modules" not in state:  # load_state_dict of aihwkit's analog tile state: new weights
            self.reset_programming()
        elif getattr(self, "_programmed_key", None) is not None:  # deepcopy / pickle: same weights
            self._programmed_key = self._weight_key()
