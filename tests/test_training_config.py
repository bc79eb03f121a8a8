"""The training config dataclasses are the one source of the algorithms' defaults and checks."""

from __future__ import annotations

import inspect

import pytest

from xbar.errors import InputError
from xbar.training import DAT, SAM, TRICE, WVAT, NoiseInjection
from xbar.training.config import (
    ALGO_CONFIGS,
    DATConfig,
    NoiseConfig,
    SAMConfig,
    TRICEConfig,
    WVATConfig,
    configs,
    hyper_spec,
    resolve,
)


@pytest.mark.parametrize(
    "cls, config",
    [(SAM, SAMConfig), (DAT, DATConfig), (WVAT, WVATConfig), (TRICE, TRICEConfig), (NoiseInjection, NoiseConfig)],
)
def test_constructor_defaults_are_the_configs(cls, config):
    """Every constructor argument named like a config field defaults to that field's default."""
    params = inspect.signature(cls.__init__).parameters
    shared = [name for name in config.hyper() if name in params]
    assert shared, "the constructor takes none of the config's fields"
    for name in shared:
        assert params[name].default == config.hyper()[name].default, name


def test_spec_lists_every_field_and_dat_full_fixes_rank():
    assert "rank" in hyper_spec("dat-fast") and "rank" not in hyper_spec("dat-full")
    for algo, cls in ALGO_CONFIGS.items():
        own = set(cls.hyper()) - ({"rank"} if algo == "dat-full" else set())
        assert own <= set(hyper_spec(algo)), algo
    _, h = resolve("dat-full", 1, {})
    assert configs("dat-full", h)[1].rank is None
    assert configs("dat-fast", h | {"rank": 10})[1].rank == 10


def test_resolved_configs_carry_the_paper_defaults_and_overrides():
    epochs, h = resolve("wvat", None, {"sigma_v": 0.2})
    common, own = configs("wvat", h)
    assert epochs == 200 and common.lr == 0.01 and common.schedule == "cosine"
    assert own == WVATConfig(sigma_v=0.2, swa_lr=0.005)


@pytest.mark.parametrize(
    "algo, hyper, message",
    [
        ("sam", {"rho": -1.0}, "rho = -1.0: expected >= 0"),
        ("dat-fast", {"rank": 0}, "rank = 0: expected >= 1"),
        ("wvat", {"swa_start": 2.0}, "swa_start = 2.0: expected a fraction in [0, 1]"),
        ("trice", {"end": -1.0}, "end = -1.0: expected >= start (0.0)"),
        ("noise", {"sigma_scale": float("nan")}, "sigma_scale = nan: expected a finite number"),
        ("sgd", {"momentum": 1.0}, "momentum = 1.0: expected in [0, 1)"),
    ],
)
def test_checks_name_the_field(algo, hyper, message):
    with pytest.raises(InputError) as err:
        resolve(algo, 1, hyper)
    assert str(err.value) == message
