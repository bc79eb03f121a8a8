"""Noise injection, TRICE, WVAT and DAT beat plain SGD in 1st-percentile accuracy under device noise.

LeNet on the bundled 8x8 digits, fixed seeds; each algorithm in its paper's set-up:

* noise injection (TRICE Alg. 1, the preset's right-censored family of Eq. 10 at the
  device sigma), TRICE (Alg. 3, Sec. IV-E) and WVAT: FeFET2 programming noise on every
  layer at sigma_d = 0.5, 20 epochs at lr 0.02 (batch 32, cosine). Plain training keeps
  ~97% clean accuracy there, but its 1st percentile collapses to 0.19-0.28. (At lr 0.05
  noise injection at the full device sigma does not train on this small network - clean
  accuracy ~0.55 - so the comparison was one of a failed run; at lr 0.02 it trains to
  ~0.86 clean.)
* DAT (Sec. IV-A/B): correlated ReRAM noise N(0, Sigma) on the last fully connected layer,
  both trained at the paper's learning rate beta = 0.015, 40 epochs.

The margin is the mean paired improvement over seeds (same seed, same data split, same
Monte Carlo instances: 500, 1000 for DAT); it must exceed 0.03 and twice the standard
error of the paired differences. Measured here over seeds 0, 1, 2 (1st percentiles):
sgd 0.28 / 0.26 / 0.19; noise 0.53 / 0.56 / 0.54, +0.30 (se 0.03); TRICE 0.50 / 0.61 /
0.54, +0.31 (se 0.05); WVAT 0.43 / 0.45 / 0.45, +0.20 (se 0.03); DAT (sgd 0.44 / 0.49 /
0.41) 0.56 / 0.59 / 0.50, +0.11 (se 0.01). The smallest effect relative to the spread
of its paired differences (WVAT, mean / sd ~3.4) gives a t of ~6 with three seeds, so
three are enough; the file takes ~3.5 minutes on one thread.
"""

from __future__ import annotations

import functools
import os
import statistics

import pytest

from tests.helpers import one_thread
from xbar import data, presets
from xbar.evaluation import monte_carlo
from xbar.training import forward_weights, noisy_parameters, train
from xbar.training.trainer import Batches

pytestmark = pytest.mark.slow

FEFET2 = ("fefet2", {"sigma_d": 0.5})
FEFET2_RUN = dict(epochs=20, lr=0.02)
CORR = ("reram-correlated-a", {"correlation.sigma": 1.0, "sigma_d": 0.5})
SEEDS = (0, 1, 2)
COMMON = dict(batch_size=32, schedule="cosine", progress=False, checkpoint_every=0)


@functools.cache
def _kpp(setup: tuple, algo: str, seed: int, epochs: int, hyper: tuple = (), last_only: bool = False,
         n_mc: int = 500, lr: float = 0.05) -> float:
    with one_thread():  # restored afterwards, for the tests that follow
        preset = presets.load(setup[0], **dict(setup[1]))
        model, _ = train("lenet", "digits", preset, algo, epochs=epochs, seed=seed, lr=lr, **COMMON, **dict(hyper))
        x, y = Batches(data.load("digits", seed=seed).test).all()
        targets = noisy_parameters(model, preset)
        noisy = targets[-1:] if last_only else targets
        with forward_weights(targets[:-1] if last_only else []):  # the other layers stay clean (quantized)
            res = monte_carlo(model, (x, y), preset, n=n_mc, seed=1000 + seed, metrics=("accuracy",),
                              layers=[t.name.rpartition(".")[0] for t in noisy], progress=False, rule="trice")
        return res.kpp(1.0)


def _freeze(setup):
    return (setup[0], tuple(sorted(setup[1].items())))


def _compare(setup, algo, hyper, epochs, last_only=False, n_mc=500, lr=0.05):
    s = _freeze(setup)
    base = [_kpp(s, "sgd", seed, epochs, (), last_only, n_mc, lr) for seed in SEEDS]
    ours = [_kpp(s, algo, seed, epochs, tuple(sorted(hyper.items())), last_only, n_mc, lr) for seed in SEEDS]
    diffs = [a - b for a, b in zip(ours, base)]
    mean = statistics.mean(diffs)
    se = statistics.stdev(diffs) / len(diffs) ** 0.5
    msg = f"{algo}: sgd {base} vs {ours}, paired mean {mean:+.3f} (se {se:.3f})"
    if os.environ.get("XBAR_TEST_VERBOSE"):
        print(msg)
    return mean, se, msg


@pytest.mark.parametrize(
    "algo, hyper",
    [
        ("noise", {}),  # the preset's right-censored family at the device sigma (TRICE Alg. 1, Eq. 10)
        ("trice", {"n_train": 20, "kpp_images": 300, "warm": 5}),
        ("wvat", {"sigma_v": 0.05}),
    ],
    ids=["noise", "trice", "wvat"],
)
def test_beats_sgd_under_fefet2(algo, hyper):
    mean, se, msg = _compare(FEFET2, algo, hyper, **FEFET2_RUN)
    assert mean > 0.03 and mean > 2 * se, msg


def test_dat_beats_sgd_under_correlated_noise_on_the_last_layer():
    # both at the paper's beta = 0.015 (Sec. IV-A)
    mean, se, msg = _compare(CORR, "dat-fast", {}, 40, last_only=True, n_mc=1000, lr=0.015)  # default alpha
    assert mean > 0.03 and mean > 2 * se, msg
