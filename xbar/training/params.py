"""Which weights an algorithm perturbs, and the swap of perturbed weights into the forward.

The thin adapter between a model and the device physics: a list of
:class:`NoisyParam` (parameter + :class:`~xbar.devices.DeviceModel`). For a plain
PyTorch model every ``Conv2d``/``Linear`` weight gets the preset's device model;
for a model converted with ``xbar.convert`` the list comes from
``xbar.tiles.noisy_parameters``.

:func:`forward_weights` puts ``target(w) + delta`` (the stored, H-bit quantized
weights plus a perturbation) into the parameters for one forward/backward pass and
restores the saved clean weights afterwards, so the gradient of the perturbed loss
lands on the clean weights (straight-through, TRICE Alg. 1 line 6).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from xbar.devices import DeviceModel
from xbar.devices.seeding import derive_seed, generators
from xbar.errors import InputError


@dataclass
class NoisyParam:
    """One perturbable parameter.

    ``device`` is its device model (None for parameters that are not stored on
    devices, e.g. biases perturbed by SAM); with ``quantize`` the forward sees
    ``device.target(w)`` (plain models; converted tiles quantize themselves).
    """

    name: str
    param: nn.Parameter
    device: DeviceModel | None = None
    quantize: bool = True
    tile: object | None = None  # the xbar simulator tile holding ``param`` (converted models)

    def stored(self) -> torch.Tensor:
        """The noise-free weights the forward uses: ``target(w)`` or ``w`` itself (detached)."""
        w = self.param.detach()
        if self.quantize and self.device is not None:
            return self.device.target(w)
        return w


def is_analog(model: nn.Module) -> bool:
    """True if ``model`` holds aihwkit analog layers (a model from ``xbar.convert``)."""
    from aihwkit.nn.modules.base import AnalogLayerBase

    return any(isinstance(m, AnalogLayerBase) for m in model.modules())


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Named ``Conv2d``/``Linear`` modules in definition order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _select(items: list[NoisyParam], layers, model_kind: str) -> list[NoisyParam]:
    if layers is None or layers == "all":
        return items
    if isinstance(layers, str):
        layers = [s for s in layers.split(",") if s]
    out = []
    for key in layers:
        hits = [it for it in items if it.name == key or it.name.startswith(key + ".")]
        if not hits:
            known = ", ".join(it.name for it in items)
            raise InputError(f"layers: {key!r} matches no {model_kind} weight; expected one of {known}")
        out.extend(h for h in hits if h not in out)
    return out


def noisy_parameters(
    model: nn.Module,
    preset=None,
    layers: str | Sequence[str] | None = None,
) -> list[NoisyParam]:
    """The device-stored weights of ``model`` with their device models.

    ``preset`` (Preset, name, path or DeviceModel) is needed for plain models.
    ``layers``: None/"all", "last" (the last weight layer, DAT's last FC layer), or
    names/prefixes of parameters or modules (a list or a comma-separated string).
    """
    if is_analog(model):
        from xbar import tiles

        sims = {id(layer.analog_module.tile.weight): layer.analog_module.tile for _, layer in tiles.xbar_layers(model)}
        items = [NoisyParam(n, p, d, quantize=False, tile=sims.get(id(p))) for n, p, d in tiles.noisy_parameters(model)]
        kind = "analog"
    else:
        if preset is None:
            raise InputError("noisy_parameters: a plain model needs a preset (name, path or DeviceModel)")
        from xbar.presets import device_model_of

        dm = device_model_of(preset)
        items = [NoisyParam(f"{n}.weight" if n else "weight", m.weight, dm) for n, m in weight_layers(model)]
        kind = "Conv2d/Linear"
    if not items:
        raise InputError(f"model has no {kind} weight to train against device noise")
    if layers == "last":
        lin = [it for it in items if _is_linear(model, it.name)]
        return (lin or items)[-1:]
    return _select(items, layers, kind)


def _is_linear(model: nn.Module, name: str) -> bool:
    """Whether the layer owning parameter ``name`` is a (digital or analog) Linear layer."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        try:
            mod = model.get_submodule(".".join(parts[:cut]))
        except AttributeError:
            continue
        if isinstance(mod, nn.Linear):
            return True
        if isinstance(mod, nn.modules.conv._ConvNd):  # aihwkit's analog layers subclass torch's
            return False
    return False


def other_parameters(model: nn.Module, targets: Sequence[NoisyParam]) -> list[NoisyParam]:
    """Trainable parameters of ``model`` that are not in ``targets`` (biases, batch norm, ...)."""
    ids = {id(t.param) for t in targets}
    out = []
    for n, p in model.named_parameters():
        if p.requires_grad and id(p) not in ids and p.dim() > 0 and type(p) is nn.Parameter:
            out.append(NoisyParam(n, p, None, quantize=False))
    return out


@contextmanager
def forward_weights(
    targets: Sequence[NoisyParam], deltas: Sequence[torch.Tensor | None] | None = None
) -> Iterator[None]:
    """Within the block, each forward uses ``stored(w) + delta``; the clean ``w`` is restored after.

    Plain parameters hold ``target(w) + delta`` in place; the restore copies the saved
    tensor back, so it is exact (no ``(w + d) - d`` rounding). An xbar tile keeps its
    clean weight; its training forward weight becomes its own clean quantized
    weight (straight-through) plus ``delta``, injection off; both are restored after.
    """
    saved: list[tuple[NoisyParam, torch.Tensor]] = []
    tiles_saved: list[tuple[object, object]] = []
    try:
        with torch.no_grad():
            for i, t in enumerate(targets):
                d = deltas[i] if deltas is not None else None
                if t.tile is not None:
                    from xbar.tiles.simulator import Injection

                    tiles_saved.append((t.tile, t.tile.injection))
                    t.tile.injection = Injection(enabled=False)
                    if d is not None:
                        t.tile.weight_delta = d.detach().reshape(t.param.shape)
                    continue
                quant = t.quantize and t.device is not None and not t.device.mapping.analog
                if d is None and not quant:
                    continue
                w = t.param.data
                saved.append((t, w.clone()))
                if quant:
                    w.copy_(t.device.target(w))
                if d is not None:
                    w.add_(d)
        yield
    finally:
        with torch.no_grad():
            for t, s in saved:
                t.param.data.copy_(s)
        for tile, inj in tiles_saved:
            tile.injection = inj
            tile.weight_delta = None


def grads(targets: Sequence[NoisyParam]) -> list[torch.Tensor]:
    """Copies of the current gradients (zeros where a parameter has none)."""
    return [t.param.grad.detach().clone() if t.param.grad is not None else torch.zeros_like(t.param) for t in targets]


def make_generator(seed: int, device: torch.device | str | None = None, *keys: object) -> torch.Generator:
    """A generator on ``device`` seeded from ``derive_seed(seed, *keys)``."""
    return generators([derive_seed(seed, *keys)], device)[0]


def params_device(targets: Sequence[NoisyParam]) -> torch.device:
    return targets[0].param.device if targets else torch.device("cpu")
