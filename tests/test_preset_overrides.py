"""``SECTION.FIELD=VALUE`` preset overrides (``xbar.presets.apply_overrides``, the CLI's ``--set``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w

from tests.helpers import cli_json, cli_refused, lenet, one_thread, write_run
from xbar import presets
from xbar.cli import main
from xbar.errors import InputError
from xbar.presets.overrides import parse_value


def test_values_are_read_as_toml_or_bare_words():
    p = presets.apply_overrides(
        presets.load("fefet1"),
        ["programming.sigma_d=0.3", "programming.level_multipliers=[1, 3, 3, 1]", "injection.family=gaussian",
         "mapping.weight_bits=6"],
    )
    assert p.programming.sigma_d == 0.3 and p.programming.level_multipliers == (1.0, 3.0, 3.0, 1.0)
    assert p.injection.kind == "gaussian" and p.mapping.weight_bits == 6
    assert presets.apply_overrides(p, []) is p


@pytest.mark.parametrize(
    "item",
    [
        "programming.sigma_x=0.3",
        "programming.sigma_d=-1",
        "programming.sigma_d=abc",
        "drift.nu_mean_log=[0.1]",
        "mapping.weight_bits=5",
    ],
)
def test_messages_are_those_of_a_preset_file(tmp_path: Path, item: str):
    """The same bad field or value in a file and in an override: the same message after the origin."""
    base = presets.load("fefet1")
    data = base.to_dict()
    key, value = item.split("=")
    section, field = key.split(".")
    data.setdefault(section, {})[field] = parse_value(value)
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(data))
    with pytest.raises(InputError) as from_file:
        presets.load(path)
    with pytest.raises(InputError) as from_set:
        presets.apply_overrides(base, [item])
    assert str(from_file.value).removeprefix(f"{path}: ") == str(from_set.value).removeprefix(
        "--set on preset fefet1: "
    )


@pytest.mark.parametrize(
    "item,words",
    [("progrmming.sigma_d=0.3", ["unknown section [progrmming]", "programming"]),
     ("sigma_d=0.3", ["expected SECTION.FIELD=VALUE"]), ("programming.sigma_d", ["expected SECTION.FIELD=VALUE"])],
)
def test_malformed_overrides_are_named(item, words):
    msg = str(pytest.raises(InputError, presets.apply_overrides, presets.load("fefet1"), [item]).value)
    assert all(w in msg for w in words) and "\n" not in msg


def test_convert_set_changes_the_written_preset(tmp_path: Path, capsys):
    out = tmp_path / "x.pt"
    argv = ["convert", "--model", "lenet", "--preset", "fefet1", "--set", "programming.sigma_d=0.3",
            "--set", "mapping.weight_bits=6", "--out", str(out)]
    assert main(argv) == 0
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["preset"]["programming"]["sigma_d"] == 0.3 and manifest["preset"]["mapping"]["weight_bits"] == 6


@pytest.mark.parametrize(
    "item,words",
    [("programming.sigma_x=0.3", ["[programming].sigma_x: unknown field"]),
     ("programming.sigma_d=-1", ["[programming].sigma_d = -1.0: expected >= 0"]),
     ("nosuch.x=1", ["unknown section [nosuch]"])],
)
def test_convert_bad_set_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, capsys, item, words):
    out = tmp_path / "x.pt"
    cli_refused(capsys, ["convert", "--model", "lenet", "--preset", "fefet1", "--set", item, "--out", str(out)], *words)
    assert list(tmp_path.iterdir()) == []


def test_eval_set_equals_a_preset_file(tmp_path: Path, capsys):
    """``--set`` on the run's own preset gives the result of the same preset written to a file."""
    with one_thread():
        run = write_run(tmp_path / "run", lenet(seed=0), seed=0)
        path = presets.save(presets.load("rram-uniform", sigma_d=0.3), tmp_path / "sigma03.toml")
        common = ["--mc", "6", "--limit", "60", "--no-progress", "--json"]
        results = []
        for extra in (["--preset", str(path)], ["--set", "programming.sigma_d=0.3"], []):
            results.append(cli_json(capsys, ["eval", str(run), *extra, *common]))
    file_result, set_result, base_result = results
    assert set_result["per_instance"] == file_result["per_instance"]
    assert set_result["per_instance"] != base_result["per_instance"]  # the override did change the device


def test_demo_validates_set_before_writing(tmp_path: Path, capsys):
    out = tmp_path / "demo"
    cli_refused(capsys, ["demo", "--set", "programming.level_multipliers=[1, 2]", "--out", str(out)],
                "level_multipliers", "expected 4")
    assert not out.exists()


def test_train_records_the_changed_preset_and_refuses_a_bad_one(tmp_path: Path, capsys):
    base = ["train", "--model", "lenet", "--data", "digits", "--preset", "fefet2", "--algo", "noise",
            "--epochs", "1", "--quiet"]
    bad = tmp_path / "bad"
    cli_refused(capsys, [*base, "--set", "programming.sigma_d=-0.3", "--out", str(bad)],
                "[programming].sigma_d = -0.3: expected >= 0")
    assert not bad.exists()
    run = tmp_path / "run"
    with one_thread():
        assert main([*base, "--set", "programming.sigma_d=0.3", "--out", str(run)]) == 0
    spec = json.loads((run / "manifest.json").read_text())["preset_spec"]
    assert spec["programming"]["sigma_d"] == 0.3 and spec["programming"]["level_multipliers"] == [1.0, 2.0, 2.0, 1.0]


def test_every_command_with_preset_takes_set():
    """``--set`` is offered wherever ``--preset`` is (nested subcommands such as ``hil program`` too)."""
    import argparse

    from xbar.cli import build_parser

    def parsers(p: argparse.ArgumentParser, name: str):
        yield name, p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from parsers(sub, f"{name} {sub_name}")

    with_preset = {name: p for name, p in parsers(build_parser(), "xbar")
                   if "--preset" in p._option_string_actions}
    assert {"xbar train", "xbar eval", "xbar convert", "xbar hil program", "xbar hil finetune"} <= set(with_preset)
    missing = [name for name, p in with_preset.items() if "--set" not in p._option_string_actions]
    assert not missing, missing
