"""Studies of a trained model: Monte Carlo, drift, bit-flip sweeps, midpoint fits, landscapes.

* ``monte_carlo`` (TRICE Algorithm 2) -> ``MonteCarloResult`` with ``kpp(k)``, intervals;
* ``sigma_sweep`` (TRICE Table I, Fig. 5-6), ``drift_study``, ``bitflip_sweep``
  (Emonds Sec. 5-6, Eq. 2 fits via ``fit_midpoint``), ``landscape_1d``/``landscape_2d``
  (DAT Sec. III-C);
* building blocks: ``StackedModel`` (k instances per forward pass), ``kpp``,
  ``kpp_interval``, ``instance_seeds``; plots in ``xbar.evaluation.plots``.

See docs/studies.md.
"""

from xbar.evaluation.batched import StackedModel, as_batches, default_layers, evaluate
from xbar.evaluation.bitflip_study import (
    BitflipEngine,
    BitflipResult,
    bitflip_sweep,
    directional,
    midpoint_table,
    p_grid,
)
from xbar.evaluation.distributed import Dist
from xbar.evaluation.drift import DEFAULT_TIMES, DriftResult, drift_study
from xbar.evaluation.kpp import kpp, kpp_interval, order_statistic
from xbar.evaluation.landscape import (
    DAT_ALPHAS,
    DAT_BETAS,
    Landscape1D,
    Landscape2D,
    device_directions,
    landscape_1d,
    landscape_2d,
)
from xbar.evaluation.midpoint import MidpointFit, fit_midpoint
from xbar.evaluation.montecarlo import MonteCarloResult, monte_carlo
from xbar.evaluation.streams import instance_seeds
from xbar.evaluation.sweeps import TRICE_SIGMAS, SweepResult, sigma_sweep

__all__ = [
    "DAT_ALPHAS",
    "DAT_BETAS",
    "DEFAULT_TIMES",
    "TRICE_SIGMAS",
    "BitflipEngine",
    "BitflipResult",
    "Dist",
    "DriftResult",
    "Landscape1D",
    "Landscape2D",
    "MidpointFit",
    "MonteCarloResult",
    "StackedModel",
    "SweepResult",
    "as_batches",
    "bitflip_sweep",
    "default_layers",
    "device_directions",
    "directional",
    "drift_study",
    "evaluate",
    "fit_midpoint",
    "instance_seeds",
    "kpp",
    "kpp_interval",
    "landscape_1d",
    "landscape_2d",
    "midpoint_table",
    "monte_carlo",
    "order_statistic",
    "p_grid",
    "sigma_sweep",
]
