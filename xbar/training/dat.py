"""Device-Aware Training (DAT, Park et al., Algorithm 1): DAT-Fast and DAT-Full.

Noise profile (Sec. III-A): N(mu, Sigma) per device-stored weight tensor, in weight
units, from the preset, drawn by ``DeviceModel.weight_noise`` (the draw Monte Carlo
programming uses, started from zero): the correlated component (``KroneckerCovariance``, or a
covariance measured on the device, ``MeasuredCovariance`` dense / low-rank, one
independent draw per crossbar tile, scaled into weight units as Monte Carlo
programming scales it) plus the independent per-weight programming
noise (``DeviceModel.weight_std``, a diagonal covariance, with any WVAT weight
variation of the preset) and the per-level mean
shift (mu). Each step (lines 5-14):

    g_t   = grad L(w_t)
    for j = 1..p:
        eta_j = mu + A_k z_j,  z_j ~ N(0, I_k)            (line 8)
        eps_j = (g_t . eta_j / ||eta_j||^2) eta_j         (line 9, projection of g_t on eta_j)
        g_j   = grad L(w_t + alpha eps_j)                 (lines 10-11)
    w_{t+1} = w_t - beta * (1/p) sum_j g_j                (lines 13-14)

``beta`` is the wrapped optimizer's learning rate. DAT-Fast (``rank=k``) uses the
top-k eigenpairs of each tile's correlated covariance, A_k = V_k D_k^(1/2)
(lines 2-3, via ``KroneckerCovariance.low_rank``); DAT-Full (``rank=None``) samples
the full tile covariance through its Kronecker factors (L_r Z L_c^T), which is
exact and never forms Sigma, so it runs on whole networks. The diagonal
(independent) part is sampled exactly in both: its eigendecomposition is free.
The dot product and norm of line 9 run over all perturbed layers together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from xbar.devices import DeviceModel
from xbar.training.base import Closure, WrappedOptimizer
from xbar.training.config import DATConfig
from xbar.training.params import NoisyParam, forward_weights, grads


class NoiseProfile:
    """N(mu, Sigma) of one weight tensor in weight units (DAT Sec. III-A).

    Args:
        device: the device model of the tensor.
        rank: k of DAT-Fast (top-k eigenpairs of each tile's correlated covariance);
            None samples the full covariance (DAT-Full).
        correlated, independent: include the correlated / independent components.
    """

    def __init__(
        self, device: DeviceModel, rank: int | None = DATConfig.rank, correlated: bool = DATConfig.correlated,
        independent: bool = DATConfig.independent,
    ) -> None:
        if rank is not None and rank < 1:
            raise ValueError(f"rank = {rank}: expected >= 1 (or None for the full covariance)")
        self.device = device
        self.rank = rank
        c = device.correlation
        keep = correlated and c is not None and (c.sigma > 0 or c.mean != 0)
        # the preset's device model with the tile covariance sampled at DAT's rank (0: full)
        self._field = replace(device, correlation=replace(c, rank=rank or 0)) if keep else None
        self.independent = independent

    def sample(self, w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """eta = mu + A z for the weights ``w`` (Alg. 1 line 8), shape of ``w``.

        ``DeviceModel.weight_noise`` without the stored weights: the noise
        :meth:`DeviceModel.program` adds to them, with the tile covariance at DAT's rank.
        DAT-Fast draws eps = A_k z per tile from the top-k eigenpairs of the tile
        covariance (``KroneckerCovariance`` with ``rank=k``); DAT-Full the full tile
        covariance (``rank=0``: L_r Z L_c^T). Neither forms Sigma. In weight units the
        fluctuation has the gain sqrt(sum_p sum_i 4^(iB)), the mean recombines like a
        level offset (sum_p sign_p sum_i 2^(iB)).
        """
        model = self._field if self._field is not None else self.device
        return model.weight_noise(w, 1, generator, independent=self.independent, correlated=self._field is not None)[0]


def projection(g: Sequence[torch.Tensor], eta: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """eps = (g . eta / ||eta||^2) eta over all tensors together (Alg. 1 line 9); 0 if eta = 0."""
    dot = sum((gi.double() * ei.double()).sum() for gi, ei in zip(g, eta))
    nn2 = sum((ei.double() ** 2).sum() for ei in eta)
    if float(nn2) == 0.0:
        return [torch.zeros_like(e) for e in eta]
    coef = float(dot / nn2)
    return [e * coef for e in eta]


class DAT(WrappedOptimizer):
    """Device-Aware Training step (DAT Algorithm 1).

    Args:
        optimizer: applies ``w - beta g_avg``; its learning rate is beta.
        targets: the perturbed layers (the paper: the last FC layer).
        alpha: perturbation step of line 10.
        p: perturbations per step (the paper: 1).
        rank: k of DAT-Fast (default 10); None for DAT-Full.
        others: parameters that are not perturbed but whose gradients are averaged
            too (biases, batch norm, the layers not in ``targets``); they see the
            quantized forward if they are device-stored weights.
        generator: draws z.

    ``freeze_others`` (default True): line 6 computes the gradient of ``targets`` only. Off
    under DistributedDataParallel, which reduces every parameter's gradient in every backward.
    """

    freeze_others = True

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        targets: Sequence[NoisyParam],
        alpha: float = DATConfig.alpha,
        p: int = DATConfig.p,
        rank: int | None = DATConfig.rank,
        others: Sequence[NoisyParam] = (),
        generator: torch.Generator | None = None,
        correlated: bool = DATConfig.correlated,
        independent: bool = DATConfig.independent,
    ) -> None:
        super().__init__(optimizer, generator)
        if p < 1:
            raise ValueError(f"p = {p}: expected >= 1")
        if not alpha >= 0:
            raise ValueError(f"alpha = {alpha}: expected >= 0")
        self.targets = list(targets)
        self.others = [o for o in others if all(o.param is not t.param for t in self.targets)]
        self.alpha = float(alpha)
        self.p = int(p)
        self.rank = rank
        self.profiles = [
            NoiseProfile(t.device, rank, correlated, independent) if t.device is not None else None for t in self.targets
        ]
        self.last_eps: list[torch.Tensor] = []

    def sample_eta(self) -> list[torch.Tensor]:
        """One eta_j per target (Alg. 1 line 8)."""
        return [
            prof.sample(t.param, self.generator) if prof is not None else torch.zeros_like(t.param)
            for t, prof in zip(self.targets, self.profiles)
        ]

    def step(self, closure: Closure) -> torch.Tensor:
        everything = self.targets + self.others
        # line 6 needs the gradient of the perturbed layers only: the others do not require
        # grad in this pass, so backward stops at the first perturbed layer
        frozen = [q.param for q in self.others if q.param.requires_grad] if self.freeze_others else []
        try:
            for q in frozen:
                q.requires_grad_(False)
            with forward_weights(everything):
                loss = self._eval(closure)
        finally:
            for q in frozen:
                q.requires_grad_(True)
        g_t = grads(self.targets)
        params = [q.param for q in everything]
        acc = [torch.zeros_like(q) for q in params]
        for _ in range(self.p):
            eps = projection(g_t, self.sample_eta())
            self.last_eps = eps
            deltas = [e * self.alpha for e in eps] + [None] * len(self.others)
            with forward_weights(everything, deltas):
                self._eval(closure)
            for a, q in zip(acc, params):
                if q.grad is not None:
                    a += q.grad
        for a, q in zip(acc, params):
            q.grad = a / self.p
        self.optimizer.step()
        return loss
