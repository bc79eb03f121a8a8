"""TRICE (Yan et al., Algorithm 3): right-censored noise injection with an adaptive sigma_t search.

Three copies of the network train side by side, each with RC-Gaussian noise
(Eq. 10, threshold ``th``) at one quartile of [start, end]:

    left = start + (end - start)/4,  mid = start + (end - start)/2,  right = start + 3 (end - start)/4

After ``warm`` warm-up epochs, every epoch ranks them by KPP over ``n_train``
Monte Carlo instances under the target device (Alg. 2) and moves the bounds
(lines 21-26, ties resolved in that order: mid, left, right):

    mid best:   start, end, w1, w3 = left, right, w2, w2
    left best:  end, w2, w3       = right, w1, w1
    right best: start, w1, w2     = left, w3, w3

Once |end - start| <= tol the three models are merged and only w1 trains, at
sigma_t = start (lines 4-6). sigma values are in units of the preset's sigma_d
(``sigma_scale`` of ``DeviceModel.inject_noise``): the paper's start = 0,
end = 2 sigma_d become start = 0, end = 2. Reassignment copies the winner's
weights and optimizer state (momentum) to the losers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from xbar.devices import NoiseFamily
from xbar.training.checkpoint import load_tensors, tensor_state
from xbar.training.config import TRICEConfig
from xbar.training.injection import NoiseInjection
from xbar.training.params import NoisyParam

MID, LEFT, RIGHT = 1, 0, 2


def quartiles(start: float, end: float) -> tuple[float, float, float]:
    """(left, mid, right) of Alg. 3 lines 9-11."""
    d = end - start
    return start + 1 * d / 4, start + 2 * d / 4, start + 3 * d / 4


def search_update(start: float, end: float, perf: Sequence[float]) -> tuple[float, float, int]:
    """Alg. 3 lines 21-26: new (start, end) and the index of the winning model (0 left, 1 mid, 2 right)."""
    left, _, right = quartiles(start, end)
    best = max(perf)
    if perf[MID] == best:
        return left, right, MID
    if perf[LEFT] == best:
        return start, right, LEFT
    return left, end, RIGHT


class TRICE:
    """The three-model TRICE trainer (Alg. 3), one batch at a time.

    Args:
        model: the network (copied twice: the three models start identical).
        make_optimizer: builds the update optimizer of one model (SGD / AnalogSGD).
        targets_of: the device-stored weights of one model.
        evaluate_kpp: KPP of a model under the target device (Alg. 2 on the
            training data, N_train instances); called with (model, epoch).
        start, end: search interval of sigma_t in units of sigma_d (paper: 0, 2).
        th: RC-Gaussian threshold (paper: 2).
        warm: warm-up epochs without search (paper: 5).
        tol: merge when |end - start| <= tol (paper: 1e-4).
        family: injection family (default right-censored with ``th``).
        generators: one noise generator per model.
    """

    def __init__(
        self,
        model: nn.Module,
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        targets_of: Callable[[nn.Module], list[NoisyParam]],
        evaluate_kpp: Callable[[nn.Module, int], float],
        start: float = TRICEConfig.start,
        end: float = TRICEConfig.end,
        th: float = TRICEConfig.th,
        warm: int = TRICEConfig.warm,
        tol: float = TRICEConfig.tol,
        family: NoiseFamily | None = None,
        generators: Sequence[torch.Generator | None] = (None, None, None),
    ) -> None:
        if not end >= start >= 0:
            raise ValueError(f"start = {start}, end = {end}: expected 0 <= start <= end")
        if warm < 0 or tol < 0:
            raise ValueError("warm and tol must be >= 0")
        self.models = [model, copy.deepcopy(model), copy.deepcopy(model)]
        self.family = family or NoiseFamily("right-censored", th)
        self.opts = [
            NoiseInjection(make_optimizer(m), targets_of(m), self.family, 0.0, g, m)
            for m, g in zip(self.models, generators)
        ]
        self.evaluate_kpp = evaluate_kpp
        self.start, self.end = float(start), float(end)
        self.warm, self.tol = int(warm), float(tol)
        self.last: dict[str, Any] = {}

    # ------------------------------------------------------------------ search
    @property
    def merged(self) -> bool:
        """Alg. 3 line 4: one model once the interval has closed."""
        return abs(self.end - self.start) <= self.tol

    def sigmas(self) -> list[float]:
        """sigma_t / sigma_d of each trained model this epoch."""
        return [self.start] if self.merged else list(quartiles(self.start, self.end))

    @property
    def model(self) -> nn.Module:
        """The model to report and keep: w1 once merged, else the mid model."""
        return self.models[0] if self.merged else self.models[MID]

    @property
    def active(self) -> list[int]:
        return [0] if self.merged else [0, 1, 2]

    def begin_epoch(self, epoch: int) -> None:
        for i, s in zip(self.active, self.sigmas()):
            self.opts[i].sigma_scale = s

    def train_batch(self, closure_of: Callable[[nn.Module], Callable[[], torch.Tensor]]) -> torch.Tensor:
        """One NoiseTrain step (Alg. 1) of every active model; returns the reported model's loss."""
        report = 0 if self.merged else MID
        out = None
        for i in self.active:
            loss = self.opts[i].step(closure_of(self.models[i]))
            if i == report:
                out = loss
        return out

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Lines 15-27: after warm-up, rank by KPP, move the bounds, reassign the weights."""
        info: dict[str, Any] = {"trice_start": self.start, "trice_end": self.end, "trice_sigmas": self.sigmas()}
        if self.merged or epoch < self.warm:
            info["trice_merged"] = self.merged
            self.last = info
            return info
        perf = [float(self.evaluate_kpp(m, epoch)) for m in self.models]
        self.start, self.end, win = search_update(self.start, self.end, perf)
        for j in range(3):
            if j != win:
                self.reassign(win, j)
        info.update(trice_kpp=perf, trice_winner=["left", "mid", "right"][win],
                    trice_new_start=self.start, trice_new_end=self.end, trice_merged=self.merged)
        self.last = info
        return info

    def reassign(self, src: int, dst: int) -> None:
        """w_dst <- w_src (weights and optimizer state)."""
        load_tensors(self.models[dst], tensor_state(self.models[src]))
        self.opts[dst].optimizer.load_state_dict(copy.deepcopy(self.opts[src].optimizer.state_dict()))

    # ------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "models": [tensor_state(m) for m in self.models],
            "opts": [o.state_dict() for o in self.opts],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start, self.end = float(state["start"]), float(state["end"])
        for m, s in zip(self.models, state["models"]):
            load_tensors(m, s)
        for o, s in zip(self.opts, state["opts"]):
            o.load_state_dict(s)
