"""Preset loading, overrides, round trips and the malformed-preset corpus."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from xbar import presets
from xbar.errors import InputError
from xbar.presets.store import shipped_dir

SHIPPED = ["rram-uniform", "fefet1", "fefet2", "reram-correlated-a", "reram-correlated-b", "hfox-bitflip", "pcm"]


def test_shipped_presets_are_listed() -> None:
    assert set(SHIPPED) <= set(presets.names())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_preset_loads_cites_a_source_and_round_trips(name: str, tmp_path: Path) -> None:
    p = presets.load(name)
    assert p.name == name and p.source and p.description
    path = presets.save(p, tmp_path / f"{name}.toml")
    again = presets.load(path)
    assert again == p
    assert again.device_model().mapping == p.device_model().mapping


@pytest.mark.parametrize("name", SHIPPED)
def test_to_dict_keeps_every_field_the_file_spells_out(name: str) -> None:
    """A field written at its default (pcm's t0_s = 20.0) is written back, and a re-dump is the same text."""
    data = presets.read_toml(shipped_dir() / f"{name}.toml")
    p = presets.Preset.from_dict(data)
    doc = p.to_dict()
    for section, table in data.items():
        if isinstance(table, dict):
            assert set(table) <= set(doc[section]), (section, set(table) - set(doc[section]))
    assert presets.Preset.from_dict(doc) == p
    assert presets.dumps(presets.Preset.from_dict(tomllib.loads(presets.dumps(p)))) == presets.dumps(p)


def test_a_default_field_is_written_only_when_given() -> None:
    base = {"name": "x", "mapping": {"weight_bits": 4, "bits_per_device": 2},
            "drift": {"nu_mean_levels": [0.1, 0.05, 0.02, 0.01]}}
    assert "t0_s" not in presets.Preset.from_dict(base).to_dict()["drift"]
    given = presets.Preset.from_dict({**base, "drift": {"t0_s": 20.0, **base["drift"]}})
    assert given.to_dict()["drift"]["t0_s"] == 20.0
    assert given == presets.Preset.from_dict(base)  # the same device, spelled out or not
    assert given.to_dict(canonical=True) == presets.Preset.from_dict(base).to_dict()


def test_fefet_profiles_follow_trice_eq16_eq17() -> None:
    assert presets.load("fefet1").programming.level_multipliers == (1.0, 4.0, 4.0, 1.0)
    assert presets.load("fefet2").programming.level_multipliers == (1.0, 2.0, 2.0, 1.0)


def test_overrides_by_keyword() -> None:
    p = presets.load("fefet1", sigma_d=0.25, weight_bits=6, bits_per_device=2)
    assert p.programming.sigma_d == 0.25
    assert p.mapping.weight_bits == 6 and p.device_model().mapping.slices == 3
    q = presets.load("reram-correlated-a", **{"correlation.sigma": 0.3})
    assert q.correlation.sigma == 0.3


def test_ambiguous_and_unknown_overrides_say_what_to_do() -> None:
    with pytest.raises(InputError, match="ambiguous.*programming.scale"):
        presets.load("fefet1", scale=0.5)
    with pytest.raises(InputError, match="no preset section has this field"):
        presets.load("fefet1", sigmad=0.1)
    with pytest.raises(InputError, match=r"\[programming\]\.level_multipliers = \[1\.0, 4\.0, 4\.0, 1\.0\] has 4 entries: expected 8"):
        presets.load("fefet1", bits_per_device=3, weight_bits=6)


def test_save_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    p = presets.load("pcm")
    out = presets.save(p, tmp_path / "x.toml")
    with pytest.raises(InputError, match="already exists"):
        presets.save(p, out)
    presets.save(p, out, force=True)


def test_unknown_preset_name_lists_the_shipped_ones() -> None:
    with pytest.raises(InputError, match="not a shipped preset.*fefet1"):
        presets.load("fefet9")


BASE = """
schema = "xbar-preset"
schema_version = 1
name = "x"
[mapping]
weight_bits = 4
bits_per_device = 2
"""

# (extra TOML appended or replacing the base, expected message fragment)
MALFORMED = [
    ("[programming]\nsigma_d = -0.1\n", "[programming].sigma_d = -0.1: expected >= 0"),
    (
        "[programming]\nsigma_d = 0.1\nlevel_multipliers = [1.0, 2.0, 3.0]\n",
        "[programming].level_multipliers = [1.0, 2.0, 3.0] has 3 entries: expected 4",
    ),
    (
        "[programming]\nsigma_d = 0.1\nmean_levels = ['a', 'b', 'c', 'd']\n",
        "[programming].mean_levels = ['a', 'b', 'c', 'd']: expected a list of numbers",
    ),
    ("[programming]\nsigma_d = 0.1\nmean_levels = 0.1\n", "[programming].mean_levels = 0.1: expected a list of numbers"),
    ("[drift]\nnu_mean_log = [0.1]\n", "[drift].nu_mean_log = [0.1]: expected a list of 2 numbers, got 1"),
    (
        "[drift]\nnu_mean_log = [-0.01, 0.02]\nnu_mean_clip = [1]\n",
        "[drift].nu_mean_clip = [1]: expected a list of 2 numbers, got 1",
    ),
    (
        "[drift]\nnu_mean_log = [-0.01, 0.02]\nnu_std_levels = [0.0, 0.0, 0.0, 0.0]\n",
        "[drift].nu_std_levels: per-level stds need per-level means",
    ),
    ("[bitflip]\np_0to1 = 0.1\n", "[bitflip].p_1to0: missing; expected a number"),
    ("[correlation]\nlength_rows = 2.0\n", "[correlation].sigma: missing; expected a number"),
    ("[read_noise]\nsigma_levels = [0.1, 0.1]\n", "[read_noise].sigma_levels = [0.1, 0.1] has 2 entries: expected 4"),
    ("[programming]\nsigma_d = 'big'\n", "[programming].sigma_d = 'big': expected a number"),
    ("[programming]\nsigma_d = nan\n", "expected a finite number"),
    ("[bitflip]\np_0to1 = 1.5\np_1to0 = 0.0\n", "p_0to1"),
    ("[bitflip]\np_0to1 = 0.1\np_1to0 = 0.1\nstorage = 'float8'\n", "storage"),
    ("[bitflip]\np_0to1 = 0.1\np_1to0 = 0.1\ntargets = ['gradients']\n", "[bitflip].targets"),
    ("[correlation]\nkind = 'gaussian-process'\nsigma = 0.1\n", "[correlation].kind = 'gaussian-process'"),
    ("[correlation]\nsigma = 0.1\nlength_rows = -2.0\n", "length_rows = -2.0"),
    ("[injection]\nfamily = 'uniform'\n", "family = 'uniform'"),
    ("[drift]\nt0_s = 0.0\nnu_mean_levels = [0.0, 0.1, 0.1, 0.1]\n", "t0_s = 0.0: expected > 0"),
    ("[drift]\nnu_mean_levels = [0.0, 0.1]\n", "[drift].nu_mean_levels = [0.0, 0.1] has 2 entries: expected 4"),
    ("[drift]\nt0_s = 20.0\n", "exactly one of nu_mean_levels or nu_mean_log"),
    ("[read_noise]\nsigma_levels = [0.1, -0.1, 0.0, 0.0]\n", "sigma_levels"),
    ("[programming]\nsigmaa_d = 0.1\n", "[programming].sigmaa_d: unknown field"),
    ("[calibration]\nx = 1\n", "calibration: unknown key"),
]

REPLACED = [
    (BASE.replace("bits_per_device = 2", "bits_per_device = 3"), "not a multiple of bits_per_device"),
    (BASE.replace('sign = "magnitude"', "") + "sign = 'twos'\n", "sign = 'twos'"),
    (BASE.replace('schema_version = 1', 'schema_version = 7'), "schema_version = 7: expected 1"),
    (BASE.replace('schema = "xbar-preset"', 'schema = "aihwkit"'), "schema = 'aihwkit'"),
    (BASE.replace('name = "x"', ""), "name: expected a non-empty string"),
    ('schema = "xbar-preset"\nname = "x"\n', "[mapping]: missing"),
    (BASE + "[mapping.extra]\n", "unknown field"),
    ("name = 'x'\n[mapping\n", "not valid TOML"),
    (BASE.replace("weight_bits = 4", "weight_bits = 4.5"), "[mapping].weight_bits = 4.5: expected an integer"),
]


@pytest.mark.parametrize(
    "text, message",
    [(BASE + extra, msg) for extra, msg in MALFORMED] + REPLACED,
    ids=[m for _, m in MALFORMED] + [m for _, m in REPLACED],
)
def test_malformed_preset_is_rejected_with_its_message(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        presets.load(path)
    msg = str(info.value)
    assert message in msg
    assert "\n" not in msg
    assert str(path) in msg


def test_corpus_is_large_enough() -> None:
    assert len(MALFORMED) + len(REPLACED) >= 10


def test_written_toml_parses_with_tomllib(tmp_path: Path) -> None:
    text = presets.dumps(presets.load("pcm"))
    data = tomllib.loads(text)
    assert data["schema"] == "xbar-preset" and data["read_noise"]["kind"] == "pcm-1f"


def test_resolve_accepts_name_path_preset_and_dict_alike(tmp_path: Path) -> None:
    """One resolver: a shipped name, its file, the Preset and its dict give equal presets."""
    by_name = presets.resolve("fefet1")
    path = tmp_path / "mine.toml"
    presets.save(by_name, path)
    assert presets.resolve(by_name) is by_name
    assert presets.resolve(path) == by_name
    assert presets.resolve(str(path)) == by_name
    assert presets.resolve(by_name.to_dict()) == by_name
    assert presets.load("fefet1", sigma_d=0.2) == by_name.with_overrides(sigma_d=0.2)


def test_resolve_rejects_other_types_and_bad_dicts_in_one_line() -> None:
    with pytest.raises(InputError, match=r"got int; expected a shipped preset name, a \.toml path, a Preset or a preset dict"):
        presets.resolve(3)
    with pytest.raises(InputError, match=r"^the run's preset: \[mapping\]: missing"):
        presets.resolve({"name": "x"}, origin="the run's preset")


def test_a_preset_builds_its_device_model_once() -> None:
    """Validation builds the DeviceModel; every later consumer gets that same object."""
    p = presets.resolve("fefet2")
    dm = p.device_model()
    assert p.device_model() is dm
    assert presets.device_model_of(p) is dm
    assert presets.device_model_of(dm) is dm
    assert presets.device_model_of("fefet2") == dm
    changed = p.with_overrides(sigma_d=0.3)
    assert changed.device_model() is not dm and changed.device_model().programming.sigma_d == 0.3
