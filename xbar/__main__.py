"""``python -m xbar``: the same command line as the ``xbar`` script."""

from xbar.cli import entry

entry()
