"""One device model that drives everything: training injection, Monte Carlo
programming, drift and read-out, emulated hardware and calibration.

Weight-space closed forms (TRICE Eq. 14): a weight stored on devices with levels
g_{p,i} (sign plane p, slice i, gain 2^(iB)) and independent Gaussian programming
noise sigma(g) has noise

    dW ~ N( s sum_p sign_p sum_i 2^(iB) mu(g_{p,i}),  s^2 sum_p sum_i 4^(iB) sigma(g_{p,i})^2 ),

so a noisy instance costs one elementwise pass instead of a per-device simulation.
A correlated component (same covariance for every slice and plane, independent
between them) adds s * sqrt(sum_p sum_i 4^(iB)) * field, with the field drawn in
the crossbar layout of the layer. Non-Gaussian families, clipped (analog)
conductances, drift and read noise are sampled per device and recombined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from xbar.devices.correlated import KroneckerCovariance
from xbar.devices.drift import DriftModel, ReadNoise
from xbar.devices.families import NoiseFamily
from xbar.devices.programming import ProgrammingNoise, lookup
from xbar.mapping import MappingConfig, crossbar_matrix, quantize, slice_weights
from xbar.mapping.slicing import level_sign, recombine, slice_codes


def instance_generators(seeds: Sequence[int], device: torch.device | str | None) -> list[torch.Generator]:
    """One generator per Monte Carlo instance, seeded from that instance's own seed."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return [torch.Generator(device=dev).manual_seed(int(s)) for s in seeds]


def _per_instance(draw, n: int, generator, seeds, like: torch.Tensor) -> torch.Tensor:
    """``draw(n, generator)``, or one ``draw(1, g_i)`` per instance seed when ``seeds`` is given."""
    if seeds is None:
        return draw(n, generator)
    gens = instance_generators(seeds, like.device)
    if not gens:
        return draw(0, None)
    return torch.cat([draw(1, g) for g in gens])


@dataclass
class DeviceState:
    """Devices of one weight tensor after programming ``n`` instances.

    ``target`` [P, S, *w] target levels; ``programmed`` [n, P, S, *w] levels right after
    programming; ``nu`` drift exponents (or None); ``sign`` the digital sign (magnitude
    mapping); ``scale`` the weight of one level step.
    """

    target: torch.Tensor
    programmed: torch.Tensor
    nu: torch.Tensor | None
    sign: torch.Tensor
    scale: torch.Tensor
    cfg: MappingConfig

    @property
    def n(self) -> int:
        return self.programmed.shape[0]

    def weights(self, levels: torch.Tensor | None = None) -> torch.Tensor:
        """Recombine (possibly drifted) levels into weights ``[n, *w]`` (Eq. 14)."""
        return recombine(self.programmed if levels is None else levels, self.sign, self.scale, self.cfg)


@dataclass
class DeviceModel:
    """The physics of one device population plus the weight mapping.

    Build one from a preset with ``Preset.device_model()``.
    """

    mapping: MappingConfig = field(default_factory=MappingConfig)
    programming: ProgrammingNoise | None = None
    correlation: KroneckerCovariance | None = None
    injection: NoiseFamily = field(default_factory=NoiseFamily)
    read_noise: ReadNoise | None = None
    drift: DriftModel | None = None
    bitflip: object | None = None  # xbar.devices.bitflip.BitFlipModel
    bitflip_targets: tuple[str, ...] = ("weights",)
    _tables: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for part in (self.programming, self.read_noise, self.drift):
            if part is not None:
                part.check(self.mapping)

    # ----------------------------------------------------------------- basics
    @property
    def clips(self) -> bool:
        """Noisy analog conductances are clipped at 0 (aihwkit), which breaks the closed form."""
        return self.mapping.analog and not self._analog_noise_free

    @property
    def _analog_noise_free(self) -> bool:
        return (self.programming is None or self.programming.is_zero) and (
            self.correlation is None or self.correlation.sigma == 0
        )

    @property
    def noise_free(self) -> bool:
        return (
            (self.programming is None or self.programming.is_zero)
            and (self.correlation is None or (self.correlation.sigma == 0 and self.correlation.mean == 0))
            and self.bitflip is None
        )

    def target(self, weights: torch.Tensor) -> torch.Tensor:
        """The noise-free stored weights (H-bit quantized; unchanged for analog storage)."""
        if self.mapping.analog:
            return weights
        q, s = quantize(weights, self.mapping)
        return q * s

    def _gain2(self, dtype, device) -> torch.Tensor:
        g = torch.tensor(self.mapping.slice_gains(), dtype=dtype, device=device)
        return (g**2).sum() * self.mapping.planes

    def code_tables(self, dtype: torch.dtype, device: torch.device) -> CodeTables | None:
        """Per-integer-code statistics of the programmed weight (discrete levels only).

        Every H-bit code c has fixed device levels (Eq. 12), so the Eq. 14 variance,
        the per-level mean offset and each device's signed gain x sigma are tables
        over the 2^(H+1) - 1 codes: a noisy weight costs one gather, not a slicing.
        """
        if self.mapping.analog:
            return None
        key = (dtype, str(device))
        if key not in self._tables:
            self._tables[key] = CodeTables.build(self, dtype, torch.device(device))
        return self._tables[key]

    def weight_std(self, weights: torch.Tensor, sigma_scale: float = 1.0) -> torch.Tensor:
        """Closed-form std of the independent programming noise of each weight (Eq. 14)."""
        prog = self.programming
        if prog is None or prog.is_zero:
            return torch.zeros_like(weights)
        w = weights.detach()
        tables = self.code_tables(w.dtype, w.device)
        if tables is not None:
            q, s = quantize(w, self.mapping)
            return lookup(tables.std, tables.index(q)) * (s * sigma_scale)
        lv = slice_weights(w, self.mapping)
        sig = prog.sigma(lv.levels, self.mapping) * sigma_scale
        gains = torch.tensor(self.mapping.slice_gains(), dtype=w.dtype, device=w.device)
        var = ((sig * gains.reshape(1, -1, *([1] * w.dim()))) ** 2).sum(dim=(0, 1))
        return var.sqrt() * lv.scale

    def weight_mean_shift(self, weights: torch.Tensor) -> torch.Tensor | None:
        """Closed-form mean offset of each programmed weight from per-level means, or None."""
        prog = self.programming
        if prog is None or prog.mean_levels is None or not any(prog.mean_levels):
            return None
        w = weights.detach()
        tables = self.code_tables(w.dtype, w.device)
        q, s = quantize(w, self.mapping)
        shift = lookup(tables.mean, tables.index(q)) * s
        return shift * level_sign(w) if self.mapping.sign == "magnitude" else shift

    def correlated_field(
        self, weights: torch.Tensor, n: int, generator: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """Correlated component in weight units, ``[n, *w]`` (None if absent)."""
        c = self.correlation
        if c is None or (c.sigma == 0 and c.mean == 0):
            return None
        cfg = self.mapping
        mat = crossbar_matrix(weights)
        rows, cols = mat.shape
        f = c.sample(rows, cols, n, cfg.tile_rows, cfg.tile_cols, generator, weights.device, weights.dtype)
        f = f.transpose(1, 2).reshape(n, *weights.shape)
        _, s = quantize(weights, cfg)
        gain = self._gain2(weights.dtype, weights.device).sqrt()
        sign = level_sign(weights) if cfg.sign == "magnitude" else 1.0
        return f * (gain * s * sign)

    # ------------------------------------------------------------ programming
    def program(
        self,
        weights: torch.Tensor,
        n: int = 1,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """``n`` Monte Carlo instances of ``weights`` as programmed, ``[n, *weights.shape]``.

        With ``seeds`` (one per instance) each instance draws from its own generator,
        so results do not depend on how instances are batched or split. The per-weight
        statistics are computed once and shared by all instances.
        """
        weights = weights.detach()
        if self.clips:
            return self._flip_each(self.program_devices(weights, n, generator, seeds).weights(), generator, seeds)
        base = self.target(weights)
        std = self.weight_std(weights)
        std = std if bool(std.any()) else None
        shift = self.weight_mean_shift(weights)

        def draw(k: int, gen: torch.Generator | None) -> torch.Tensor:
            out = base.expand(k, *weights.shape).clone()
            if std is not None:
                out += std * torch.randn(out.shape, generator=gen, device=out.device, dtype=out.dtype)
            if shift is not None:
                out += shift
            corr = self.correlated_field(weights, k, gen)
            if corr is not None:
                out += corr
            return self._flip(out, gen)

        return _per_instance(draw, n, generator, seeds, weights)

    def _flip(self, w: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        if self.bitflip is None or "weights" not in self.bitflip_targets:
            return w
        from xbar.devices.bitflip import flip_bits

        return torch.stack([flip_bits(wi, self.bitflip, generator=gen) for wi in w])

    def _flip_each(self, w: torch.Tensor, gen, seeds) -> torch.Tensor:
        if self.bitflip is None or "weights" not in self.bitflip_targets:
            return w
        if seeds is None:
            return self._flip(w, gen)
        # a stream of its own for the flips of each instance (offset from the noise stream)
        gens = instance_generators([int(s) + 0x5EED for s in seeds], w.device)
        return torch.cat([self._flip(wi[None], g) for wi, g in zip(w, gens)])

    def program_devices(
        self,
        weights: torch.Tensor,
        n: int = 1,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ) -> DeviceState:
        """Program ``n`` instances device by device (needed for drift, read noise, clipping)."""
        weights = weights.detach()
        cfg = self.mapping
        lv = slice_weights(weights, cfg)
        target = lv.levels
        corr = self.correlation if self.correlation is not None and self.correlation.sigma > 0 else None
        mat_shape = crossbar_matrix(weights).shape

        def draw(k: int, gen: torch.Generator | None) -> torch.Tensor:
            field = None
            if corr is not None:
                m = k * cfg.planes * cfg.slices
                f = corr.sample(*mat_shape, m, cfg.tile_rows, cfg.tile_cols, gen, weights.device, weights.dtype)
                field = f.transpose(1, 2).reshape(k, cfg.planes, cfg.slices, *weights.shape)
            prog, nu = self.program_levels(target.expand(k, *target.shape), gen, field)
            return prog if nu is None else torch.stack([prog, nu], dim=1)

        out = _per_instance(draw, n, generator, seeds, weights)
        if self.drift is None:
            prog, nu = out, None
        else:
            prog, nu = out[:, 0], out[:, 1]
        return DeviceState(target, prog, nu, level_sign(weights), lv.scale, cfg)

    def program_levels(
        self, target: torch.Tensor, generator: torch.Generator | None = None, field: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One programming of devices at ``target`` levels: (programmed levels, drift exponents or None).

        Programming noise sigma(level) and per-level offsets, plus an optional correlated
        ``field`` drawn by the caller in the devices' layout; analog conductances clip at 0.
        """
        prog = target.clone()
        p = self.programming
        if p is not None and not p.is_zero:
            prog += p.sigma(target, self.mapping) * torch.randn(
                target.shape, generator=generator, device=target.device, dtype=target.dtype
            )
        mu = p.mean(target) if p is not None else None
        if mu is not None:
            prog += mu
        if field is not None:
            prog += field
        if self.clips:
            prog.clamp_(min=0.0)
        if self.drift is None:
            return prog, None
        z = torch.randn(target.shape, generator=generator, device=target.device, dtype=target.dtype)
        return prog, self.drift.sample_nu(target, self.mapping, z)

    def read_levels(
        self,
        target: torch.Tensor,
        programmed: torch.Tensor,
        nu: torch.Tensor | None,
        t: float,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Levels read ``t`` seconds after programming: (read levels, noise-free drifted levels)."""
        g = programmed
        if self.drift is not None and nu is not None and t > 0:
            g = g * self.drift.factor(nu, t)
        drifted = g
        if self.read_noise is not None:
            sig = self.read_noise.sigma(target.expand_as(g), programmed, drifted, t, self.mapping)
            g = g + sig * torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)
            if self.clips:
                g = g.clamp(min=0.0)
        return g, drifted

    def read(
        self,
        state: DeviceState,
        t: float = 0.0,
        generator: torch.Generator | None = None,
        compensate: bool | None = None,
    ) -> torch.Tensor:
        """Weights ``[n, *w]`` read ``t`` seconds after programming (drift, then read noise).

        With global drift compensation (the preset's default when it has drift) every
        instance is rescaled by sum|W(0)| / sum|W(t)| of its noise-free read, as a
        periphery would calibrate a layer's output scale with a known input.
        """
        g, drifted = self.read_levels(state.target, state.programmed, state.nu, t, generator)
        w = state.weights(g)
        if compensate is None:
            compensate = self.drift is not None and self.drift.compensation == "global"
        if compensate and t > 0:
            ref0 = state.weights().flatten(1).abs().sum(1)
            reft = state.weights(drifted).flatten(1).abs().sum(1)
            alpha = ref0 / reft.clamp(min=1e-30)
            w = w * alpha.reshape(-1, *([1] * (w.dim() - 1)))
        return w

    # --------------------------------------------------------------- training
    def inject_noise(
        self,
        weights: torch.Tensor,
        family: NoiseFamily | None = None,
        sigma_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Noise (weight units, no gradient) to add to the stored weights in a training step.

        Each device gets sigma(g) * sigma_scale * x with x from ``family`` (default: the
        preset's injection family); TRICE's sigma_t is sigma_scale * sigma_d. Gaussian
        noise uses the closed form of Eq. 14; other families are drawn per device and
        recombined. The preset's correlated component (scaled too) and bit flips are added.
        """
        w = weights.detach()
        family = family or self.injection
        cfg = self.mapping
        prog = self.programming
        if prog is None or prog.is_zero:
            noise = None
        elif family.is_gaussian:
            std = self.weight_std(w, sigma_scale)
            noise = std * torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype)
        elif not cfg.analog:
            tables = self.code_tables(w.dtype, w.device)
            q, s = quantize(w, cfg)
            sg = lookup(tables.signed_sigma, tables.index(q))  # [*w, planes * slices]
            x = family.sample(sg.shape, generator, w.device, w.dtype)
            noise = (sg * x).sum(-1) * (s * sigma_scale)
            if cfg.sign == "magnitude":
                noise = noise * level_sign(w)
        else:
            lv = slice_weights(w, cfg)
            sig = prog.sigma(lv.levels, cfg) * sigma_scale
            x = family.sample(lv.levels.shape, generator, w.device, w.dtype)
            noise = recombine(sig * x, level_sign(w), lv.scale, cfg)
        corr = self.correlated_field(w, 1, generator)
        if corr is not None:
            noise = corr[0] * sigma_scale if noise is None else noise + corr[0] * sigma_scale
        if self.bitflip is not None and "weights" in self.bitflip_targets:
            from xbar.devices.bitflip import flip_bits

            target = self.target(w)
            stored = target if noise is None else target + noise
            noise = flip_bits(stored, self.bitflip, generator=generator) - target
        return torch.zeros_like(w) if noise is None else noise

    def training_weight(
        self,
        weights: torch.Tensor,
        family: NoiseFamily | None = None,
        sigma_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Forward weight of a noise-injection training step (TRICE Alg. 1).

        The stored (quantized) weight plus device noise; the gradient passes straight
        through to ``weights``, so the noise is gone before the update.
        """
        stored = self.target(weights.detach()) + self.inject_noise(weights, family, sigma_scale, generator)
        return weights + (stored - weights).detach()


@dataclass
class CodeTables:
    """Statistics of every signed integer code c in [-max_code, max_code] (level units, s = 1)."""

    offset: int
    std: torch.Tensor  # [codes] Eq. 14 std
    mean: torch.Tensor  # [codes] recombined per-level mean offset (before the digital sign)
    signed_sigma: torch.Tensor  # [codes, planes * slices] gain * plane sign * sigma(level)

    def index(self, q: torch.Tensor) -> torch.Tensor:
        return (q + self.offset).long()

    @classmethod
    def build(cls, model: DeviceModel, dtype: torch.dtype, device: torch.device) -> CodeTables:
        cfg = model.mapping
        m = cfg.max_code
        codes = torch.arange(-m, m + 1, dtype=torch.float64)
        lv = slice_codes(codes, cfg)  # [P, S, C]
        gains = torch.tensor(cfg.slice_gains(), dtype=torch.float64).reshape(1, -1, 1)
        signs = torch.tensor([1.0, -1.0] if cfg.planes == 2 else [1.0], dtype=torch.float64).reshape(-1, 1, 1)
        prog = model.programming
        if prog is None:
            sig = torch.zeros_like(lv)
        else:
            sig = prog.sigma(lv, cfg)
        std = ((sig * gains) ** 2).sum(dim=(0, 1)).sqrt()
        mu = prog.mean(lv) if prog is not None else None
        mean = (mu * gains * signs).sum(dim=(0, 1)) if mu is not None else torch.zeros_like(codes)
        signed = (sig * gains * signs).reshape(-1, codes.numel()).T.contiguous()
        return cls(m, std.to(device, dtype), mean.to(device, dtype), signed.to(device, dtype))
