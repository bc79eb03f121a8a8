"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
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


def positive_int(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return v


def probability(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a probability in [0, 1]")
    return v
