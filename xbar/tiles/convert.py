"""``xbar.convert``: replace a model's Linear and Conv2d layers by xbar analog layers."""

from __future__ import annotations

import copy
import types
import warnings
from collections.abc import Iterable
from typing import Any

from aihwkit.nn.modules.base import AnalogLayerBase
from aihwkit.nn.modules.container import AnalogWrapper
from aihwkit.simulator.parameters import IOParameters
from torch import nn

from xbar.tiles.config import XbarRPUConfig
from xbar.tiles.layers import XbarConv2d, XbarLinear

CONVERTIBLE: dict[type, type] = {nn.Linear: XbarLinear, nn.Conv2d: XbarConv2d}


class XbarModel(AnalogWrapper):
    """Root wrapper giving any converted model aihwkit's analog methods.

    aihwkit's ``AnalogWrapper`` caches its wrapper classes by class *name*, so two
    model classes of the same name (``Net`` in two scripts) would share one
    wrapper and run the wrong ``forward``; these wrappers are cached by class.
    The instance shares the wrapped model's ``__dict__`` (same modules, same keys).
    """

    _classes: dict[type, type] = {}

    def __new__(cls, module: nn.Module | None = None, **_: Any) -> XbarModel:
        return object.__new__(cls)

    def __reduce_ex__(self, protocol: int):
        """Pickle (``torch.save`` of a whole model, ``copy.deepcopy``) through the wrapped class,
        which is importable; the wrapper class itself is made at run time."""
        return (_blank, (type(self).__bases__[1],), self.__dict__)


def _wrapper_class(base: type) -> type:
    sub = XbarModel._classes.get(base)
    if sub is None:
        sub = types.new_class(f"Xbar{base.__name__}", (XbarModel, base), {})
        sub.__module__ = base.__module__
        sub.__qualname__ = f"Xbar{base.__qualname__}"
        XbarModel._classes[base] = sub
    return sub


def _blank(base: type) -> nn.Module:
    """An empty wrapper of ``base`` that unpickling fills with its state."""
    return object.__new__(_wrapper_class(base))


def wrap(model: nn.Module) -> nn.Module:
    """``model`` as an aihwkit analog container (an ``XbarModel`` subclass of its class)."""
    return _wrapper_class(type(model))(model)


def to_digital(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A plain PyTorch copy of a converted model: xbar (and aihwkit) analog layers become
    ``nn.Linear`` / ``nn.Conv2d`` holding the tiles' current weights, the wrapper goes.

    aihwkit's own ``convert_to_digital`` does the same (xbar's layers are registered in
    its default conversion set).
    """
    from aihwkit.nn.conversion import convert_to_digital

    return convert_to_digital(model, inplace=inplace)


def _register_digital_layers() -> None:
    """Teach aihwkit's ``convert_to_digital`` xbar's layers (its default conversion set)."""
    from aihwkit.nn import conversion

    conversion._DEFAULT_DIGITAL_CONVERSION_SET.update({XbarLinear, XbarConv2d})


_register_digital_layers()


def _rpu_config_preset(config: Any, forward: IOParameters | None):
    """(preset, forward) from an RPU config given as ``preset``: an ``XbarRPUConfig`` gives its
    preset, an aihwkit inference config its noise model (``xbar.presets.from_aihwkit``); the
    config's forward periphery is used unless ``forward`` is given."""
    from xbar import presets

    if isinstance(config, XbarRPUConfig):
        preset = config.preset_object() or {"name": "ideal", "mapping": {"weight_bits": 0}}
    else:
        preset = presets.from_aihwkit(config)
    if forward is None and isinstance(getattr(config, "forward", None), IOParameters):
        forward = config.forward
    return preset, forward


def _tiled_preset(preset: Any, tile_size: tuple[int, int] | None):
    """``presets.resolve(preset)`` with ``tile_size`` (rows, cols) when given."""
    from xbar import presets

    p = presets.resolve(preset)
    if tile_size is not None:
        rows, cols = (int(v) for v in tile_size)
        p = p.with_overrides(tile_rows=rows, tile_cols=cols)
    return p


def _selector(layers: Iterable[str | type] | str | type | None, model: nn.Module):
    """Predicate over (name, module) from ``layers`` (names, name prefixes or module types)."""
    if layers is None:
        return lambda name, module: True
    if isinstance(layers, str | type):
        layers = [layers]
    layers = list(layers)
    types = tuple(t for t in layers if isinstance(t, type))
    names = [n for n in layers if isinstance(n, str)]
    bad = [x for x in layers if not isinstance(x, str | type)]
    if bad:
        raise ValueError(f"layers: {bad[0]!r} is neither a module name nor a module type")
    known = [n for n, m in model.named_modules() if type(m) in CONVERTIBLE]
    for n in names:
        if not any(k == n or k.startswith(n + ".") or n == "" for k in known):
            raise ValueError(
                f"layers: {n!r} names no Linear or Conv2d layer of the model (those are: {', '.join(known) or 'none'})"
            )

    def select(name: str, module: nn.Module) -> bool:
        if types and isinstance(module, types):
            return True
        return any(name == n or name.startswith(n + ".") or n == "" for n in names)

    return select


def _convertible(name: str, module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            warnings.warn(
                f"xbar.convert: {name or 'model'} (Conv2d with groups={module.groups}, "
                f"padding={module.padding!r}, padding_mode={module.padding_mode!r}) stays digital: "
                "analog convolutions support groups=1 with numeric zero padding only",
                stacklevel=3,
            )
            return False
    return True


def convert(
    model: nn.Module,
    preset: Any,
    *,
    inplace: bool = False,
    layers: Iterable[str | type] | str | type | None = None,
    forward: IOParameters | None = None,
    tile_size: tuple[int, int] | None = None,
    rpu_options: dict[str, Any] | None = None,
) -> nn.Module:
    """An analog copy of ``model``: its Linear and Conv2d layers become xbar tiles of ``preset``.

    Args:
        model: the digital network (any ``nn.Module``).
        preset: a shipped preset name, a TOML path, a ``Preset``, a preset dict, or an
            RPU config: an ``XbarRPUConfig`` (its preset and forward periphery) or an aihwkit
            ``InferenceRPUConfig`` / ``TorchInferenceRPUConfig`` or noise model, read by
            ``xbar.presets.from_aihwkit`` (the config's forward periphery is kept unless
            ``forward`` is given; other aihwkit settings are not).
        inplace: convert ``model`` itself instead of a deep copy.
        layers: convert only these layers: module names (a name also selects the
            layers inside it) and/or types (``nn.Linear``, ``nn.Conv2d``).
        forward: aihwkit forward periphery (``IOParameters``; default perfect,
            see :func:`xbar.tiles.periphery`).
        tile_size: ``(rows, cols)`` of the crossbar arrays, overriding the preset's.
        rpu_options: further :class:`XbarRPUConfig` fields, e.g. ``{"pre_post":
            PrePostProcessingParameter(input_range=InputRangeParameter(enable=True))}``
            or ``{"clip": WeightClipParameter(...)}``.

    Each converted layer is one aihwkit tile (the physical crossbar tiling is
    reported by :func:`xbar.tiles.tile_map`); the root is wrapped so that aihwkit's
    ``analog_tiles()``, ``program_analog_weights()`` and ``drift_analog_weights(t)``
    are available. State-dict keys of untouched modules do not change.
    """
    if type(preset).__module__.startswith("aihwkit.") or isinstance(preset, XbarRPUConfig):
        preset, forward = _rpu_config_preset(preset, forward)
    p = _tiled_preset(preset, tile_size)
    options = copy.deepcopy(dict(rpu_options or {}))
    for key in ("preset", "forward"):
        if key in options:
            raise ValueError(f"rpu_options: {key!r} is set by convert's own argument")
    forward = copy.deepcopy(forward) if forward is not None else IOParameters(is_perfect=True)
    config = XbarRPUConfig(preset=p, forward=forward, **options)
    select = _selector(layers, model)
    if not inplace:
        model = copy.deepcopy(model)

    def make(name: str, module: nn.Module) -> nn.Module:
        layer = CONVERTIBLE[type(module)].from_digital(module, copy.deepcopy(config))
        layer.train(module.training)
        return layer

    if type(model) in CONVERTIBLE and select("", model) and _convertible("", model):
        model = make("", model)
    else:
        for name, module in list(model.named_modules()):
            for child_name, child in list(module.named_children()):
                full = f"{name}.{child_name}" if name else child_name
                if type(child) in CONVERTIBLE and select(full, child) and _convertible(full, child):
                    setattr(module, child_name, make(full, child))
    if not isinstance(model, AnalogLayerBase):
        training = model.training
        model = wrap(model)
        model.train(training)
    return model
