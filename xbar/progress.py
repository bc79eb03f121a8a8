"""Progress on stderr: a live tqdm bar on a terminal; in a log, a line at a modest rate.

When stderr is not a terminal (a batch job's log, a pipe) a bar appears only for work
that lasts longer than ``LOG_INTERVAL_S`` seconds, and then as one plain line every
``LOG_INTERVAL_S`` seconds (carriage returns become newlines, so each update stays
readable in the file).
"""

from __future__ import annotations

import sys
from typing import TextIO

#: Seconds between progress lines (and before the first one) when stderr is not a terminal.
LOG_INTERVAL_S = 15.0


class _Lines:
    """A stream for tqdm that writes each refresh as its own line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "it", leave: bool = True,
                 initial: int = 0):
    """A tqdm bar on stderr (disabled unless ``enabled``), log-friendly when stderr is not a terminal."""
    from tqdm import tqdm

    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, leave=leave, initial=initial, disable=not enabled)
    return tqdm(total=total, desc=desc, unit=unit, leave=leave, initial=initial, disable=not enabled,
                file=_Lines(sys.stderr), ascii=True, ncols=100, mininterval=LOG_INTERVAL_S, delay=LOG_INTERVAL_S)
