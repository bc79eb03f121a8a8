"""KPP (TRICE Eq. 1, Algorithm 2): the order statistic, its confidence interval, adaptive stopping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.helpers import digits, lenet, one_thread
from xbar.evaluation import kpp, kpp_interval, monte_carlo, order_statistic
from xbar.evaluation.kpp import interval_ranks


@pytest.fixture(autouse=True, scope="module")
def _threads():
    with one_thread():
        yield


@pytest.mark.parametrize("n", [1, 7, 100, 1000, 10000])
@pytest.mark.parametrize("k", [0.5, 1, 5, 10, 50, 99])
def test_kpp_is_the_inverse_cdf_order_statistic(n, k):
    x = np.random.default_rng(n).normal(size=n)
    r = max(1, math.ceil(k * n / 100))
    assert order_statistic(n, k) == r
    assert kpp(x, k) == np.sort(x)[r - 1]
    # the empirical CDF at KPP reaches k/100, one step below does not
    assert np.mean(x <= kpp(x, k)) >= k / 100
    if r > 1:
        assert np.mean(x <= np.sort(x)[r - 2]) < k / 100


def test_trice_rule_is_algorithm_2_line_10():
    x = np.random.default_rng(0).uniform(size=1000)
    for k in (1, 5, 2.5):
        q = k / 100
        assert kpp(x, k, rule="trice") == np.sort(x)[int(q * len(x))]  # perf_l[q * len(perf_l)], 0-based
    # they differ by one rank exactly when qN is an integer
    assert order_statistic(1000, 1, "trice") == order_statistic(1000, 1) + 1
    assert order_statistic(1001, 1, "trice") == order_statistic(1001, 1)


def test_bad_percentiles():
    with pytest.raises(ValueError):
        kpp([1.0, 2.0], 0)
    with pytest.raises(ValueError):
        kpp([1.0, 2.0], 100)
    with pytest.raises(ValueError):
        kpp([], 1)


def _coverage(samples: np.ndarray, truth: float, k: float, confidence: float) -> float:
    n = samples.shape[1]
    lo, hi = interval_ranks(n, k, confidence)
    s = np.sort(samples, axis=1)
    low_ok = np.ones(len(s), bool) if lo == 0 else s[:, lo - 1] <= truth
    high_ok = np.ones(len(s), bool) if hi == n + 1 else s[:, hi - 1] >= truth
    return float(np.mean(low_ok & high_ok))


@pytest.mark.parametrize("n,k", [(200, 5), (1000, 1), (300, 50)])
def test_interval_covers_at_nominal_rate_continuous(n, k):
    """Normal samples: coverage >= 95% (within Monte Carlo error) and not absurdly conservative."""
    reps, conf = 4000, 0.95
    x = np.random.default_rng(k).normal(size=(reps, n))
    from scipy import stats

    cov = _coverage(x, stats.norm.ppf(k / 100), k, conf)
    se = math.sqrt(conf * (1 - conf) / reps)
    assert cov >= conf - 3 * se
    assert cov <= 0.995
    # the bound: the exact binomial coverage P(l <= B <= u - 1) is >= confidence
    lo, hi = interval_ranks(n, k, conf)
    exact = stats.binom.cdf(hi - 1, n, k / 100) - (stats.binom.cdf(lo - 1, n, k / 100) if lo > 0 else 0.0)
    assert exact >= conf
    assert abs(cov - exact) < 4 * se


def test_interval_covers_discrete_accuracies():
    """Accuracies on 500 images (a discrete distribution with ties) are covered at least as often."""
    reps, n, k, conf = 4000, 300, 5, 0.95
    rng = np.random.default_rng(1)
    p_inst = rng.beta(40, 4, size=(reps, n))
    acc = rng.binomial(500, p_inst) / 500
    # true 5th percentile of the mixture, from a very large sample
    big = rng.binomial(500, rng.beta(40, 4, size=2_000_000)) / 500
    truth = np.sort(big)[math.ceil(0.05 * big.size) - 1]
    cov = _coverage(acc, truth, k, conf)
    assert cov >= conf - 3 * math.sqrt(conf * (1 - conf) / reps)


def test_interval_is_unbounded_when_n_is_small():
    lo, hi = kpp_interval(np.arange(10.0), 1, 0.95)
    assert lo is None and hi is not None


def test_monte_carlo_kpp_equals_order_statistic_of_stored_instances():
    m = lenet()
    r = monte_carlo(m, digits(), "rram-uniform", n=40, seed=3, percentile=5, progress=False, limit=200)
    acc = r.per_instance["accuracy"]
    assert acc.shape == (40,) and r.n == 40
    assert r.kpp() == np.sort(acc)[math.ceil(0.05 * 40) - 1]
    assert r.kpp(10) == np.sort(acc)[3]
    loss = r.per_instance["loss"]
    assert r.kpp(5, metric="loss") == np.sort(loss)[::-1][math.ceil(0.05 * 40) - 1]  # worst losses are high
    d = r.to_dict()
    assert d["kpp"] == r.kpp() and d["order_statistic"] == 2
    assert d["kpp_interval"] == list(r.interval())


def test_adaptive_stopping_extends_a_fixed_run():
    m = lenet()
    kw = dict(seed=5, percentile=10, progress=False, limit=120, batch_instances=8)
    r = monte_carlo(m, digits(), "rram-uniform", n=16, tolerance=1e-9, max_n=64, **kw)
    assert [h["n"] for h in r.history] == [16, 32, 64]
    fixed = monte_carlo(m, digits(), "rram-uniform", n=64, **kw)
    np.testing.assert_array_equal(r.per_instance["accuracy"], fixed.per_instance["accuracy"])
    np.testing.assert_array_equal(r.indices, np.arange(64))
    # the median's interval is bounded at n = 16 and narrower than 1: no more instances
    loose = monte_carlo(m, digits(), "rram-uniform", n=16, tolerance=1.0, **{**kw, "percentile": 50})
    assert loose.n == 16 and loose.history[0]["interval_width"] < 1.0


def test_seeds_are_per_instance_not_per_run():
    m = lenet()
    a = monte_carlo(m, digits(), "rram-uniform", n=6, seed=1, progress=False, limit=100)
    b = monte_carlo(m, digits(), "rram-uniform", n=6, seed=2, progress=False, limit=100)
    again = monte_carlo(m, digits(), "rram-uniform", n=6, seed=1, progress=False, limit=100)
    assert not np.array_equal(a.per_instance["loss"], b.per_instance["loss"])
    np.testing.assert_array_equal(a.per_instance["loss"], again.per_instance["loss"])
