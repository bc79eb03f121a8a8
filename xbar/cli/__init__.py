"""The ``xbar`` command line: thin wrappers that parse, call the library and print.

Each subcommand lives in ``xbar/cli/cmd_<name>.py`` with ``register(subparsers)``
adding its parser and setting ``func`` to a ``run(args) -> int``. Exit status:
0 success, 2 bad input (one line on stderr, no traceback), 1 internal error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from xbar.errors import InputError, first_line


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (exit status 2), not a usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but unknown options are reported by the subcommand they were given to."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            commands = next((a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)), {})
            target = commands.get(getattr(ns, "command", None), self)
            target.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="xbar",
        description="Crossbar emulation for noise-robust deep learning on analog NVM hardware.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import xbar.cli as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"xbar.cli.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line message
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"xbar {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except OSError as exc:  # a file the user named cannot be read or written
        name = exc.filename if exc.filename is not None else "file"
        print(f"xbar {args.command}: error: {name}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xbar {args.command}: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        print(f"xbar {args.command}: error: out of memory ({first_line(exc)}); expected a smaller model "
              "(--image-size, --in-channels) or batch (--batch-size, --batch-instances)", file=sys.stderr)
        return 2


def _out_of_memory(exc: BaseException) -> bool:
    """An allocation failure on the CPU or the GPU (torch raises RuntimeError subclasses)."""
    text = str(exc)
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. ``xbar presets list --json | head``: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
