"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


def add_study_args(p: argparse.ArgumentParser) -> None:
    """``--json`` and ``--seed``, which every study command takes."""
    p.add_argument("--json", action="store_true", help="print the machine-readable result on stdout")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def emit(result: Any, as_json: bool, text: str) -> None:
    """Print ``result`` as JSON or the human-readable ``text``."""
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(text)


def _checked(value: str, kind: type, ok, what: str) -> int | float:
    """``kind(value)`` if it parses (floats: finite) and ``ok`` holds, else argparse's one-line error."""
    try:
        v = kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{value} is not a finite number")
    if not ok(v):
        raise argparse.ArgumentTypeError(f"{value} {what}")
    return v


def positive_int(value: str) -> int:
    return _checked(value, int, lambda v: v >= 1, "must be >= 1")


def nonneg_int(value: str) -> int:
    return _checked(value, int, lambda v: v >= 0, "must be >= 0")


def positive_float(value: str) -> float:
    return _checked(value, float, lambda v: v > 0, "must be > 0")


def probability(value: str) -> float:
    return _checked(value, float, lambda v: 0.0 <= v <= 1.0, "is not a probability in [0, 1]")


def percentile(value: str) -> float:
    return _checked(value, float, lambda v: 0 < v < 100, "is not a percentile in (0, 100)")


def fraction(value: str) -> float:
    return _checked(value, float, lambda v: 0 < v < 1, "is not in (0, 1)")


def add_preset_overrides(p: argparse.ArgumentParser) -> None:
    """``--set SECTION.FIELD=VALUE`` (repeatable), for every command that takes ``--preset``."""
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help="change one preset field, validated like a preset file (repeatable), e.g. "
        "--set programming.sigma_d=0.3 --set mapping.weight_bits=6",
    )


def preset_with_overrides(preset: Any, args: argparse.Namespace) -> Any:
    """``preset`` (a name, path, Preset or dict) resolved, with the command's ``--set`` overrides applied."""
    from xbar import presets

    return presets.apply_overrides(presets.resolve(preset), getattr(args, "overrides", None) or [])
