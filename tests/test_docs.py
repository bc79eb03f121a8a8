"""Every fenced ``python`` block of the documentation runs as written.

Each block of README.md, docs/*.md and calibration/SCHEMA.md runs on its own, in a
fresh namespace and a fresh temporary working directory (so a block that fails
leaves nothing behind in the checkout), and must define what it uses. Blocks that
show commands or file contents use ``bash``, ``text`` or ``toml`` fences instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import one_thread

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "calibration" / "SCHEMA.md"]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, source) of each fenced ``python`` block of the markdown file."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


BLOCKS = [(p, line, src) for p in DOCS for line, src in python_blocks(p)]


def test_the_docs_have_python_blocks():
    assert len(BLOCKS) >= 10
    assert python_blocks(ROOT / "README.md")  # the collector sees the README's example


@pytest.mark.parametrize(("path", "line", "source"), BLOCKS,
                         ids=[f"{p.relative_to(ROOT)}:{line}" for p, line, _ in BLOCKS])
def test_python_block_runs(path, line, source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = compile(source, f"{path.relative_to(ROOT)}:{line}", "exec")
    with one_thread():
        exec(code, {"__name__": "__doc_block__"})
