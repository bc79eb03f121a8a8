"""Record every file-system write a process makes under one directory (Python audit hooks).

Used by the distributed training tests to show that only rank 0 writes the run
directory. ``record_writes(directory, log)`` appends one line per write event
(file opened for writing, temporary file, rename/replace, remove, mkdir, chmod)
whose path lies under ``directory`` to ``log``, unbuffered (``os.write``), so a
process killed with SIGKILL leaves its record behind.

As a script (what the tests launch with torchrun)::

    torchrun ... tests/write_audit.py DIRECTORY LOG_PREFIX xbar-arguments...

records into ``LOG_PREFIX<rank>.log`` and runs ``xbar`` with the remaining arguments.
"""

from __future__ import annotations

import os
import sys

_WRITE_EVENTS = {"tempfile.mkstemp", "tempfile.mkdtemp", "os.rename", "os.remove", "os.rmdir", "os.mkdir",
                 "os.chmod", "os.truncate", "shutil.rmtree", "os.link", "os.symlink"}


def _writes(event: str, args: tuple) -> list[str]:
    """The paths an audit event writes to (empty if it only reads)."""
    if event == "open":
        path, mode, flags = (list(args) + [None, None, None])[:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        )
        return [path] if writing and isinstance(path, str | bytes | os.PathLike) else []
    if event in _WRITE_EVENTS:
        return [a for a in args[:2] if isinstance(a, str | bytes | os.PathLike)]
    return []


def record_writes(directory: str | os.PathLike, log: str | os.PathLike) -> None:
    """Install an audit hook that logs writes under ``directory`` to the file ``log``."""
    root = os.path.realpath(directory)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def hook(event: str, args: tuple) -> None:
        for path in _writes(event, args):
            full = os.path.realpath(os.fsdecode(path))
            if full == root or full.startswith(root + os.sep):
                os.write(fd, f"{event} {full}\n".encode())

    sys.addaudithook(hook)


if __name__ == "__main__":
    directory, prefix, *argv = sys.argv[1:]
    record_writes(directory, f"{prefix}{os.environ.get('RANK', '0')}.log")
    from xbar.cli import main

    sys.exit(main(argv))
