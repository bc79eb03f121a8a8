"""Model-level hardware in the loop: program a network onto a backend and read it back.

Each noisy layer (every ``Conv2d``/``Linear`` weight of a plain model, or
``xbar.tiles.noisy_parameters`` of a converted one) is quantized and bit-sliced with
the preset's mapping into ``planes x slices`` device levels per weight (TRICE Eq.
11-12). Every (plane, slice) is laid out as the layer's crossbar matrix (rows =
inputs, cols = outputs) and cut into blocks of the backend's ``rows x cols``, one
backend tile per block. Reading back reassembles the levels and recombines them
into weights with TRICE Eq. 14; biases stay digital.

With drift and global compensation (the preset's ``[drift].compensation``),
:func:`program_model` reads every tile once right after programming and keeps each
layer's ``sum |W|``; :func:`read_model` rescales each layer by that reference over
the current ``sum |W|``, as a periphery calibrates its output scale.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from xbar.devices import DeviceModel
from xbar.errors import InputError
from xbar.hil.emulated import WriteVerifyReport, summarize
from xbar.hil.protocol import CrossbarBackend
from xbar.mapping import crossbar_matrix, recombine, slice_weights
from xbar.mapping.slicing import level_sign
from xbar.presets import device_model_of
from xbar.training.params import is_analog


@dataclass(frozen=True)
class Block:
    """One backend tile holding rows ``row0:row0+rows``, cols ``col0:col0+cols`` of a (plane, slice)."""

    tile_id: int
    plane: int
    slice: int
    row0: int
    col0: int
    rows: int
    cols: int


@dataclass
class LayerPlacement:
    """Where one weight tensor lives on the backend and how to turn levels back into weights."""

    name: str
    shape: tuple[int, ...]
    scale: torch.Tensor
    sign: torch.Tensor
    blocks: list[Block]
    reference_abs_sum: float | None = None

    @property
    def matrix_shape(self) -> tuple[int, int]:
        return (math.prod(self.shape[1:]), self.shape[0])


@dataclass
class HilSession:
    """A model programmed onto a backend: its layers' placements and the programming outcome."""

    backend: CrossbarBackend
    device_model: DeviceModel
    layers: list[LayerPlacement]
    programmed_at_s: float
    reports: list[WriteVerifyReport] = field(default_factory=list)

    @property
    def tiles_used(self) -> int:
        return sum(len(layer.blocks) for layer in self.layers)

    @property
    def compensates(self) -> bool:
        d = self.device_model.drift
        return d is not None and d.compensation == "global"

    def summary(self) -> dict:
        """Tiles, devices and (if the backend reports them) write-verify statistics."""
        out: dict = {"layers": len(self.layers), "tiles": self.tiles_used}
        out["devices"] = sum(b.rows * b.cols for layer in self.layers for b in layer.blocks)
        if self.reports:
            out["write_verify"] = summarize(self.reports)
        return out

    def layout(self) -> dict:
        """JSON-serialisable layer -> tile map (stored in recordings as an annotation)."""
        return {
            layer.name: {"shape": list(layer.shape), "blocks": [list(vars(b).values()) for b in layer.blocks]}
            for layer in self.layers
        }


def weight_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weights stored on devices: ``xbar.tiles.noisy_parameters`` for a converted model,
    else every ``Conv2d``/``Linear`` weight, in module order."""
    if is_analog(model):
        from xbar.tiles import noisy_parameters

        return [(name, p) for name, p, _ in noisy_parameters(model)]
    return [
        (f"{name}.weight" if name else "weight", m.weight)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]


def stored_copy(model: nn.Module, preset) -> nn.Module:
    """A copy of ``model`` holding the noise-free stored weights (``DeviceModel.target``: H-bit
    quantized) of ``preset`` (anything ``xbar.presets.device_model_of`` takes)."""
    dm = device_model_of(preset)
    out = copy.deepcopy(model)
    with torch.no_grad():
        for _, w in weight_parameters(out):
            w.copy_(dm.target(w))
    return out


def program_model(
    model: nn.Module,
    backend: CrossbarBackend,
    preset,
    layers: Sequence[str] | None = None,
    tiles: Sequence[int] | None = None,
) -> HilSession:
    """Map every noisy layer of ``model`` to device levels and program them through ``backend``.

    ``preset``: a Preset, shipped preset name, preset file or DeviceModel; its mapping
    decides quantization, sign handling and slicing; the tile size is the backend's.
    ``layers``: weight names (``"fc1.weight"``) to program, default all of them;
    ``tiles``: the tile ids to use, in order (default ``backend.tiles()``), so that
    several sessions can share one chip (progressive programming, :mod:`xbar.hil.finetune`).
    """
    dm = device_model_of(preset)
    cfg = dm.mapping
    params = weight_parameters(model)
    if not params:
        raise InputError(f"{type(model).__name__}: no Conv2d or Linear weights to program")
    if layers is not None:
        known = dict(params)
        unknown = [name for name in layers if name not in known]
        if unknown or not layers:
            raise InputError(
                f"{type(model).__name__}: layers {list(layers)}: expected names among {', '.join(known)}"
            )
        params = [(name, known[name]) for name in layers]
    for name, p in params:
        if p.dim() < 2:
            raise InputError(f"{name}: weight of shape {list(p.shape)}: expected [out, in, ...]")
    available = list(backend.tiles() if tiles is None else tiles)
    needed = sum(
        cfg.planes * cfg.slices * math.ceil(r / backend.rows) * math.ceil(c / backend.cols)
        for r, c in (crossbar_matrix(p.detach()).shape for _, p in params)
    )
    if needed > len(available):
        raise InputError(
            f"{backend.name}: the model needs {needed} tiles of {backend.rows}x{backend.cols} "
            f"({cfg.planes * cfg.slices} devices per weight), the chip has {len(available)}; "
            "expected a chip with more or larger tiles"
        )
    free = iter(available)
    placed: list[LayerPlacement] = []
    plans: list[tuple[LayerPlacement, torch.Tensor]] = []
    for name, p in params:
        w = p.detach()
        lv = slice_weights(w, cfg)
        rows, cols = crossbar_matrix(w).shape
        blocks = []
        for plane in range(cfg.planes):
            for sl in range(cfg.slices):
                for r0 in range(0, rows, backend.rows):
                    for c0 in range(0, cols, backend.cols):
                        rr, cc = min(backend.rows, rows - r0), min(backend.cols, cols - c0)
                        blocks.append(Block(next(free), plane, sl, r0, c0, rr, cc))
        layer = LayerPlacement(name, tuple(w.shape), lv.scale.cpu(), level_sign(w).cpu(), blocks)
        placed.append(layer)
        plans.append((layer, lv.levels))
    for layer, levels in plans:
        mats = [[crossbar_matrix(levels[pl, sl]).cpu() for sl in range(cfg.slices)] for pl in range(cfg.planes)]
        for b in layer.blocks:
            block = mats[b.plane][b.slice][b.row0 : b.row0 + b.rows, b.col0 : b.col0 + b.cols]
            backend.program(b.tile_id, block.contiguous())
    session = HilSession(backend, dm, placed, float(backend.time_s))
    reports = getattr(backend, "reports", None)
    if isinstance(reports, dict):
        session.reports = [reports[b.tile_id] for layer in placed for b in layer.blocks if b.tile_id in reports]
    annotate = getattr(backend, "annotate", None)
    if callable(annotate):
        annotate("layout", session.layout())
        annotate("program_summary", session.summary())
    if session.compensates:
        for layer in placed:
            layer.reference_abs_sum = float(read_weights(session, layer).abs().sum())
    return session


def read_weights(session: HilSession, layer: LayerPlacement | str) -> torch.Tensor:
    """Read one layer's tiles back and recombine them into weights (TRICE Eq. 14), on the CPU.

    ``layer``: one of ``session.layers`` or its module name (``"classifier.4"``).
    """
    if isinstance(layer, str):
        by_name = {p.name: p for p in session.layers}
        if layer not in by_name:
            raise InputError(f"read_weights: layer {layer!r} was not programmed; expected one of {', '.join(by_name)}")
        layer = by_name[layer]
    cfg = session.device_model.mapping
    rows, cols = layer.matrix_shape
    mats = torch.zeros(cfg.planes, cfg.slices, rows, cols)
    for b in layer.blocks:
        g = session.backend.read(b.tile_id)
        if tuple(g.shape) != (b.rows, b.cols):
            raise InputError(
                f"{session.backend.name}: tile {b.tile_id} read back shape {list(g.shape)}; "
                f"expected [{b.rows}, {b.cols}] as programmed for {layer.name}"
            )
        if mats.dtype != g.dtype:
            mats = mats.to(g.dtype)
        mats[b.plane, b.slice, b.row0 : b.row0 + b.rows, b.col0 : b.col0 + b.cols] = g.cpu()
    levels = mats.transpose(-1, -2).reshape(cfg.planes, cfg.slices, *layer.shape)  # inverse of crossbar_matrix
    dtype = layer.scale.dtype
    return recombine(levels.to(dtype), layer.sign, layer.scale, cfg)


def read_model(
    session: HilSession, model: nn.Module, inplace: bool = False, compensate: bool | None = None
) -> nn.Module:
    """``model`` with every programmed weight replaced by the weights read back from the backend.

    A plain model gets the read-back weights as its weights; a converted model keeps
    its clean weights and evaluates with the read-back ones as its programmed instance
    (until ``xbar.tiles.reset_programming`` or a weight update). Returns a copy unless ``inplace``. ``compensate`` (default: the preset's global
    drift compensation) rescales each layer by its reference ``sum |W|`` taken at
    programming over the current one.
    """
    target = model if inplace else copy.deepcopy(model)
    params = dict(weight_parameters(target))
    missing = [layer.name for layer in session.layers if layer.name not in params]
    if missing:
        raise InputError(f"{type(model).__name__}: no weight {missing[0]!r}; expected the model that was programmed")
    if compensate is None:
        compensate = session.compensates
    tiles = _analog_tiles(target)
    for layer in session.layers:
        p = params[layer.name]
        if tuple(p.shape) != layer.shape:
            raise InputError(f"{layer.name}: shape {list(p.shape)}; expected {list(layer.shape)} as programmed")
        w = read_weights(session, layer)
        if compensate and layer.reference_abs_sum is not None:
            now = float(w.abs().sum())
            if now > 0:
                w = w * (layer.reference_abs_sum / now)
        w = w.to(dtype=p.dtype, device=p.device)
        if tiles is None:
            with torch.no_grad():
                p.copy_(w)
        else:
            tiles[layer.name].set_programmed_weights(w)
    return target


def _analog_tiles(model: nn.Module) -> dict | None:
    """``{weight name: XbarInferenceTile}`` of a converted model, None for a plain one."""
    if not is_analog(model):
        return None
    from xbar.tiles import xbar_layers

    return {f"{name}.weight" if name else "weight": layer.analog_module for name, layer in xbar_layers(model)}


