"""Errors that the command line reports as one line with exit status 2."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user: a file, field or argument that is not what was expected.

    The message names the file (or argument), the field, the value and what was
    expected, in one line; the command line prints it and exits with status 2.
    """


def where(path: object, field: str | None = None) -> str:
    """Prefix naming a file and field, e.g. ``presets/x.toml: [mapping].weight_bits``."""
    return f"{path}: {field}" if field else f"{path}"


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type name when empty), for one-line errors."""
    text = str(exc).strip().strip("'\"").strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
