"""One device model that drives everything: training injection, Monte Carlo
programming, drift and read-out, emulated hardware and calibration.

Weight-space closed forms (TRICE Eq. 14): a weight stored on devices with levels
g_{p,i} (sign plane p, slice i, gain 2^(iB)) and independent Gaussian programming
noise sigma(g) has noise

    dW ~ N( s sum_p sign_p sum_i 2^(iB) mu(g_{p,i}),  s^2 sum_p sum_i 4^(iB) sigma(g_{p,i})^2 ),

so a noisy instance costs one elementwise pass instead of a per-device simulation.
A correlated component N(mu, Sigma) on every device (same covariance for every
slice and plane, independent between them) recombines like any level offset: its
mean adds s sum_p sign_p sum_i 2^(iB) mu (zero for a differential pair) and its
fluctuation adds s sqrt(sum_p sum_i 4^(iB)) eps with eps ~ N(0, Sigma) drawn in the
crossbar layout of the layer (Sigma a Kronecker kernel or a measured dense / low-rank
matrix). WVAT's weight variation (gamma sigma_v times the layer's range A) adds its
variance to the independent part. Non-Gaussian families, clipped (analog) conductances,
drift and read noise are sampled per device and recombined.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from xbar.devices.bitflip import flip_bits
from xbar.devices.config import DeviceConfig
from xbar.devices.correlated import KroneckerCovariance
from xbar.devices.families import NoiseFamily
from xbar.devices.measured import MeasuredCovariance
from xbar.devices.programming import lookup
from xbar.devices.scratch import scratch
from xbar.devices.seeding import FLIP_STREAM, derive_seed, generators
from xbar.mapping import MappingConfig, crossbar_matrix, quantize, slice_weights, straight_through
from xbar.mapping.slicing import level_sign, recombine, slice_codes


def _instance_count(n: int | None, seeds: Iterable[int] | None) -> tuple[int, list[int] | None]:
    """(``n``, the seeds as a list): ``n`` defaults to one instance per seed; another count is an error."""
    if seeds is None:
        return (1 if n is None else n), None
    seeds = [int(s) for s in seeds]
    if n is not None and n != len(seeds):
        raise ValueError(f"seeds has {len(seeds)} entries: expected n = {n} (one seed per instance)")
    return len(seeds), seeds


def _per_instance(draw, n: int, generator, seeds, like: torch.Tensor) -> torch.Tensor:
    """``draw(n, generator)``, or one ``draw(1, g_i)`` per instance seed when ``seeds`` is given."""
    if seeds is None:
        return draw(n, generator)
    gens = generators(seeds, like.device)
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
class DeviceModel(DeviceConfig):
    """The physics of one device population plus the weight mapping.

    The parts, their checks and the layout facts (``devices_per_weight``, ``noise_free``)
    are those of :class:`~xbar.devices.config.DeviceConfig`; this class adds the tensor
    methods. Build one from a preset with ``Preset.device_model()``.
    """

    _tables: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def target(self, weights: torch.Tensor) -> torch.Tensor:
        """The noise-free stored weights (H-bit quantized; unchanged for analog storage)."""
        if self.mapping.analog:
            return weights
        q, s = quantize(weights, self.mapping)
        return q * s

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
        """Closed-form std of the independent noise of each weight: programming noise (Eq. 14)
        and, with a ``[weight_variation]``, WVAT's gamma sigma_v A of the layer, added in variance."""
        w = weights.detach()
        q, s = quantize(w, self.mapping)
        prog = self.programming
        if prog is None or prog.is_zero:
            std = torch.zeros_like(w)
        else:
            std = self._level_std(w, q) * (s * sigma_scale)
        if self._varies:
            v = self.variation.std(w) * sigma_scale
            std = std.square_().add_(v * v).sqrt_() if prog is not None and not prog.is_zero else std.fill_(v)
        return std

    def _level_std(self, w: torch.Tensor, q: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 14 std in level steps of codes ``q`` (a table lookup; per device for analog storage).

        ``out`` receives the looked-up std for discrete levels.
        """
        tables = self.code_tables(w.dtype, w.device)
        if tables is not None:
            if out is None:
                return lookup(tables.std, tables.index(q))
            idx = tables.index(q, out=scratch("index", q.shape, torch.int32, q.device))
            return tables.lookup(tables.std, idx, out)
        cfg = self.mapping
        sig = self.programming.sigma(slice_codes(q, cfg), cfg)  # [P, 1, *w]
        return sig.square().sum(dim=(0, 1)).sqrt()

    def weight_mean_shift(self, weights: torch.Tensor) -> torch.Tensor | None:
        """Closed-form mean offset of each programmed weight from per-level means, or None."""
        w = weights.detach()
        q, s = quantize(w, self.mapping)
        shift = self._level_shift(w, q)
        return None if shift is None else shift * s

    def _level_shift(self, w: torch.Tensor, q: torch.Tensor) -> torch.Tensor | None:
        """Per-level mean offsets of codes ``q`` recombined (Eq. 14), in level steps, or None."""
        prog = self.programming
        if prog is None or not prog.has_offsets:
            return None
        tables = self.code_tables(w.dtype, w.device)
        shift = lookup(tables.mean, tables.index(q))
        return shift.mul_(level_sign(w)) if self.mapping.sign == "magnitude" else shift

    def _level_correlated(
        self, w: torch.Tensor, n: int, generator: torch.Generator | None, sigma_scale: float = 1.0
    ) -> torch.Tensor | None:
        """Correlated component in level steps (times the scale s: weight units), ``[n, *w]``, or None.

        The mean mu of the device field recombines like a level offset,
        sum_p sign_p sum_i 2^(iB) mu (it cancels on a differential pair); the
        fluctuation eps ~ N(0, Sigma) like independent noise, sqrt(sum_p sum_i 4^(iB)) eps
        (Eq. 14 with one field per device). ``sigma_scale`` scales the fluctuation only.
        :meth:`weight_noise` with ``independent=False`` draws it alone in weight units.
        """
        c = self.correlation
        if c is None:
            return None
        cfg = self.mapping
        shift = c.mean * self.offset_gain
        fluct = c.sigma * sigma_scale != 0
        if not fluct and shift == 0:
            return None
        if fluct:
            f = self._device_field(c, w, n, generator, centered=True, scale=self.fluctuation_gain * sigma_scale)
            if shift:
                f.add_(shift)
        else:
            f = torch.full((n, *w.shape), shift, dtype=w.dtype, device=w.device)
        return f.mul_(level_sign(w)) if cfg.sign == "magnitude" else f

    def _device_field(
        self,
        c: KroneckerCovariance | MeasuredCovariance,
        w: torch.Tensor,
        n: int,
        generator: torch.Generator | None,
        centered: bool = False,
        scale: float = 1.0,
    ) -> torch.Tensor:
        """``n`` draws of the device field N(mu, Sigma) over the crossbar layout of ``w``, shaped ``[n, *w]``.

        ``centered``: the zero-mean fluctuation only; ``scale`` multiplies the fluctuation.
        """
        cfg = self.mapping
        rows, cols = crossbar_matrix(w).shape
        f = c.sample(
            rows, cols, n, cfg.tile_rows, cfg.tile_cols, generator, w.device, w.dtype,
            centered=centered, transposed=True, scale=scale,
        )
        return f.reshape(n, *w.shape)

    # ------------------------------------------------------------ programming
    def program(
        self,
        weights: torch.Tensor,
        n: int | None = None,
        generator: torch.Generator | None = None,
        seeds: Iterable[int] | None = None,
    ) -> torch.Tensor:
        """``n`` Monte Carlo instances of ``weights`` as programmed, ``[n, *weights.shape]``.

        With ``seeds`` (one per instance) each instance draws from its own generator,
        so results do not depend on how instances are batched or split; ``n`` defaults
        to ``len(seeds)`` (else 1) and must equal it. The per-weight statistics are
        computed once and shared by all instances.
        """
        weights = weights.detach()
        n, seeds = _instance_count(n, seeds)
        if self.clips:
            return self._flip_each(self.program_devices(weights, n, generator, seeds).weights(), generator, seeds)
        return self._flip_each(self.weight_noise(weights, n, generator, seeds, stored=True), generator, seeds)

    def weight_noise(
        self,
        weights: torch.Tensor,
        n: int | None = None,
        generator: torch.Generator | None = None,
        seeds: Iterable[int] | None = None,
        stored: bool = False,
        independent: bool = True,
        correlated: bool = True,
    ) -> torch.Tensor:
        """``n`` draws of the programming noise N(mu, Sigma) of ``weights`` in weight units, ``[n, *w]``.

        Eq. 14 in weight space (no clipping, no bit flips) through :meth:`_drawer`, the draw
        training, Monte Carlo and DAT share: the independent part
        (per-weight std, with any WVAT weight variation) and the per-level mean shift
        when ``independent``, the correlated field (mean and fluctuation) when
        ``correlated``. With ``stored`` the draws start from the stored weights
        (:meth:`target`), as :meth:`program` returns them; else from zero, DAT's
        eta = mu + A z (Alg. 1 line 8). ``seeds`` as in :meth:`program`. The weights
        are quantized once for all instances.
        """
        w = weights.detach()
        n, seeds = _instance_count(n, seeds)
        q, s = quantize(w, self.mapping)
        draw = self._drawer(w, q, s, NoiseFamily(), 1.0, stored, independent, correlated)
        return _per_instance(draw, n, generator, seeds, w)

    @torch.no_grad()
    def _drawer(
        self,
        w: torch.Tensor,
        q: torch.Tensor,
        s: torch.Tensor,
        family: NoiseFamily,
        sigma_scale: float = 1.0,
        stored: bool = True,
        independent: bool = True,
        correlated: bool = True,
        buffers: bool = False,
    ) -> Callable[[int, torch.Tensor | None], torch.Tensor]:
        """``draw(k, generator)``: ``k`` weight-space draws of Eq. 14, ``[k, *w]`` — the one noise
        draw of the device model, shared by training, Monte Carlo and DAT.

        In level steps: the independent programming noise of ``family`` times
        ``sigma_scale``, the per-level mean offsets, the correlated field (fluctuation
        times ``sigma_scale``); then times the scale ``s`` and, with ``stored``, on top
        of the stored weights ((noise + q) s, or noise s + w for analog storage); then
        WVAT's weight variation gamma sigma_v A times ``sigma_scale`` in weight units
        (Eq. 1). The random numbers are drawn in that order, all ``k`` draws of a part
        at once. The per-weight statistics (Eq. 14 std, offsets) are computed here, once
        for every call of ``draw``; with ``buffers`` they live in scratch buffers
        (:mod:`xbar.devices.scratch`: one training draw, used before the next).
        """
        cfg = self.mapping
        prog = self.programming
        noisy = independent and prog is not None and not prog.is_zero and sigma_scale != 0
        gaussian = noisy and family.is_gaussian
        std_scale, level_std = sigma_scale, None
        if gaussian:
            tables = self.code_tables(w.dtype, w.device)
            const = tables.const_std if tables is not None else None
            if const is None:
                level_std = self._level_std(w, q, out=scratch("std", w.shape, w.dtype, w.device) if buffers else None)
            else:
                std_scale = sigma_scale * const
        shift = self._level_shift(w, q) if independent else None
        base = (w if cfg.analog else q * s) if stored else None
        vary = self.variation.std(w) * sigma_scale if independent and self._varies and sigma_scale != 0 else None

        def draw(k: int, generator: torch.Generator | None) -> torch.Tensor:
            shape = (k, *w.shape)
            noise = None
            if gaussian:
                noise = torch.empty(shape, dtype=w.dtype, device=w.device).normal_(0.0, std_scale, generator=generator)
                if level_std is not None:
                    noise.mul_(level_std)
            elif noisy:
                noise = self._family_noise(w, q, family, sigma_scale, generator, k)
            if shift is not None:
                noise = shift.expand(shape).clone() if noise is None else noise.add_(shift)
            noise = _accumulate(noise, self._level_correlated(w, k, generator, sigma_scale) if correlated else None)
            if noise is None:
                out = torch.zeros(shape, dtype=w.dtype, device=w.device) if base is None else base.expand(shape).clone()
            elif base is None:
                out = noise.mul_(s)
            elif cfg.analog:
                out = noise.mul_(s).add_(w)
            else:
                out = noise.add_(q).mul_(s)
            if vary is not None:
                v = torch.randn(shape, generator=generator, device=w.device, dtype=w.dtype)
                out.add_(v.mul_(vary))
            return out

        return draw

    def _flip(self, w: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        if not self.stores_bit_patterns:
            return w
        return torch.stack([flip_bits(wi, self.bitflip, generator=gen) for wi in w])

    def _flip_each(self, w: torch.Tensor, gen, seeds) -> torch.Tensor:
        if not self.stores_bit_patterns:
            return w
        if seeds is None:
            return self._flip(w, gen)
        # a stream of its own for the flips of each instance (named under the noise stream);
        # sparse flips on the CPU whatever the weights' device: a GPU would wait for each small
        # step of the draw (xbar.devices.bitflip.flip_stored), and every device flips the same bits
        gens = generators([derive_seed(s, FLIP_STREAM) for s in seeds], "cpu" if self.bitflip.sparse else w.device)
        return torch.cat([self._flip(wi[None], g) for wi, g in zip(w, gens)])

    def program_devices(
        self,
        weights: torch.Tensor,
        n: int | None = None,
        generator: torch.Generator | None = None,
        seeds: Iterable[int] | None = None,
    ) -> DeviceState:
        """Program ``n`` instances device by device (needed for drift, read noise, clipping).

        Every device gets its own draw of the correlated field N(mu, Sigma) (DAT III-A).
        A ``[weight_variation]`` becomes an independent field on every device with std
        gamma sigma_v A / (s sqrt(sum_p sum_i 4^(iB))), so that it recombines to WVAT's
        per-weight std (before any clipping of analog conductances).
        """
        weights = weights.detach()
        n, seeds = _instance_count(n, seeds)
        cfg = self.mapping
        lv = slice_weights(weights, cfg)
        target = lv.levels
        corr = self.correlation
        vary = self.variation.std(weights) / (lv.scale * self.fluctuation_gain) if self._varies else None

        def draw(k: int, gen: torch.Generator | None) -> torch.Tensor:
            field = None
            if corr is not None and corr.sigma > 0:
                f = self._device_field(corr, weights, k * cfg.planes * cfg.slices, gen)
                field = f.reshape(k, cfg.planes, cfg.slices, *weights.shape)
            elif corr is not None and corr.mean != 0:
                field = corr.mean  # no fluctuation: the same offset on every device
            if vary is not None:
                v = vary * torch.randn((k, *target.shape), generator=gen, device=target.device, dtype=target.dtype)
                field = v if field is None else v.add_(field)
            prog, nu = self.program_levels(target.expand(k, *target.shape), gen, field)
            return prog if nu is None else torch.stack([prog, nu], dim=1)

        out = _per_instance(draw, n, generator, seeds, weights)
        if self.drift is None:
            prog, nu = out, None
        else:
            prog, nu = out[:, 0], out[:, 1]
        return DeviceState(target, prog, nu, level_sign(weights), lv.scale, cfg)

    def program_levels(
        self,
        target: torch.Tensor,
        generator: torch.Generator | None = None,
        field: torch.Tensor | float | None = None,
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
        """Levels read ``t`` seconds after programming: (read levels, noise-free drifted levels).

        Read noise that resamples (Wan et al. 2022) puts each device at a fresh draw
        around its target for ``t > 0`` instead of adding to the programmed state.
        """
        g = programmed
        if self.read_noise is not None and self.read_noise.resamples and t > 0:
            target = target.expand_as(programmed)
            sig = self.read_noise.sigma(target, programmed, programmed, t, self.mapping)
            g = target + sig * torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)
            return (g.clamp(min=0.0) if self.clips else g), programmed
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
        recombined. The systematic parts of programming are added unscaled: the
        per-level mean offsets and the mean of the correlated field (whose fluctuation
        is scaled by ``sigma_scale``); then bit flips. At ``sigma_scale = 1`` with the
        Gaussian family, target + noise has the distribution of :meth:`program`
        (without the clipping of noisy analog conductances at 0).
        """
        w = weights.detach()
        stored, q, s = self._training_draw(w, family, sigma_scale, generator)
        if stored is w:
            return torch.zeros_like(w)
        return stored.sub_(w) if self.mapping.analog else stored.sub_(q * s)

    def training_weight(
        self,
        weights: torch.Tensor,
        family: NoiseFamily | None = None,
        sigma_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Forward weight of a noise-injection training step (TRICE Alg. 1).

        The stored (quantized) weight plus device noise (:meth:`inject_noise`); the
        gradient passes straight through to ``weights``, so the noise is gone before
        the update. One quantization serves the whole draw.
        """
        stored, _, _ = self._training_draw(weights.detach(), family, sigma_scale, generator)
        return straight_through(weights, stored)

    @torch.no_grad()
    def _training_draw(
        self,
        w: torch.Tensor,
        family: NoiseFamily | None,
        sigma_scale: float,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(noisy stored weights, codes q, scale s) of one training draw.

        The stored weights are a new tensor, or ``w`` itself for noise-free analog
        storage without bit flips. q (a scratch tensor: use it before the next draw)
        and s are None when no quantization was needed. The draw costs one normal per
        weight for Gaussians (per device otherwise) and a few in-place passes; its
        temporaries are scratch buffers (:mod:`xbar.devices.scratch`).
        """
        cfg = self.mapping
        if cfg.analog and self._analog_noise_free and not self._varies:
            stored, q, s = w, None, None
        else:
            q, s = quantize(w, cfg, out=scratch("codes", w.shape, w.dtype, w.device))
            stored = self._drawer(w, q, s, family or self.injection, sigma_scale, buffers=True)(1, generator)[0]
        if self.stores_bit_patterns:
            stored = flip_bits(stored, self.bitflip, generator=generator)
        return stored, q, s

    def _family_noise(
        self,
        w: torch.Tensor,
        q: torch.Tensor,
        family: NoiseFamily,
        sigma_scale: float,
        generator: torch.Generator | None,
        k: int = 1,
    ) -> torch.Tensor:
        """Independent programming noise of a non-Gaussian ``family``, ``k`` draws in level steps, ``[k, *w]``.

        One draw x_d per device, sum_d gain_d sign_d sigma(g_d) x_d (Eq. 14 before the
        closed form), times the digital sign for magnitude mapping.
        """
        tables = self.code_tables(w.dtype, w.device)
        noise = torch.empty((k, *w.shape), dtype=w.dtype, device=w.device)
        coeffs = self._device_sigmas(w, q, tables)
        x = family.sample_(scratch("draws", (len(coeffs), k, *w.shape), w.dtype, w.device), generator)
        if isinstance(coeffs[0], float):
            torch.mul(x[0], coeffs[0] * sigma_scale, out=noise)
            for xd, c in zip(x[1:], coeffs[1:]):
                noise.add_(xd, alpha=c * sigma_scale)
        else:
            torch.mul(x[0], coeffs[0](), out=noise)
            for xd, c in zip(x[1:], coeffs[1:]):
                noise.addcmul_(c(), xd)
            if sigma_scale != 1.0:
                noise.mul_(sigma_scale)
        if self.mapping.sign == "magnitude" and not self.mapping.analog:
            # times level_sign(w): noise (1 - 2 [w < 0]), with [w < 0] as 0/1 in a scratch tensor
            negative = torch.lt(w, 0, out=scratch("negative", w.shape, w.dtype, w.device))
            noise.addcmul_(noise, negative, value=-2.0)
        return noise

    def _device_sigmas(self, w: torch.Tensor, q: torch.Tensor, tables: CodeTables | None) -> list:
        """gain x plane sign x sigma(level) of each device of the codes ``q`` (Eq. 14 terms).

        Floats when no sigma depends on the level, else one callable per device that
        returns its values shaped like ``w`` (looked up into a shared scratch tensor).
        """
        if tables is not None:
            if tables.const_signed is not None:
                return list(tables.const_signed)
            idx = tables.index(q, out=scratch("index", w.shape, torch.int32, w.device))
            out = scratch("coefficients", w.shape, w.dtype, w.device)
            return [lambda row=row: tables.lookup(row, idx, out) for row in tables.signed_sigma]
        cfg = self.mapping
        sig = self.programming.sigma(slice_codes(q, cfg), cfg)  # analog: [P, 1, *w]
        sig[1].neg_()
        return [lambda d=d: sig[d, 0] for d in range(sig.shape[0])]


def _accumulate(total: torch.Tensor | None, part: torch.Tensor | None) -> torch.Tensor | None:
    """``total + part`` in place, where either may be absent."""
    if part is None:
        return total
    return part if total is None else total.add_(part)


@dataclass
class CodeTables:
    """Statistics of every signed integer code c in [-max_code, max_code] (level units, s = 1).

    ``const_std`` / ``const_signed`` hold the common value when it does not depend on
    the code (sigma independent of the level, e.g. uniform RRAM): no lookup needed.
    """

    offset: int
    std: torch.Tensor  # [codes] Eq. 14 std
    mean: torch.Tensor  # [codes] recombined per-level mean offset (before the digital sign)
    signed_sigma: torch.Tensor  # [planes * slices, codes] gain * plane sign * sigma(level)
    const_std: float | None = None
    const_signed: tuple[float, ...] | None = None

    def index(self, q: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Table index of codes ``q``: int64, or the integer dtype of ``out`` (int32 is cheaper)."""
        idx = q.to(torch.int64) if out is None else out.copy_(q)
        return idx.add_(self.offset)

    @staticmethod
    def lookup(table: torch.Tensor, idx: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``table[idx]`` written into ``out`` (shaped like ``idx``)."""
        torch.index_select(table, 0, idx.reshape(-1), out=out.reshape(-1))
        return out

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
        signed = (sig * gains * signs).reshape(-1, codes.numel())
        const = bool((signed == signed[:, :1]).all())
        return cls(
            m,
            std.to(device, dtype),
            mean.to(device, dtype),
            signed.to(device, dtype).contiguous(),
            const_std=float(std[0]) if const else None,
            const_signed=tuple(float(v) for v in signed[:, 0]) if const else None,
        )
