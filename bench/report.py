"""Writes one benchmark's section of docs/benchmarks.md, leaving the others.

Each bench script owns the text between ``<!-- begin NAME -->`` and
``<!-- end NAME -->``; running one script never erases another's figures.
"""

from __future__ import annotations

import re
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

_HEADER = """# Benchmarks

Figures measured on the development machine (2 cores, 24 GiB, shared), each
section written by the bench script it names. Ratios compare runs made side by
side in the same invocation, so machine drift affects both sides alike.
"""


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace section `name` of `path` with `markdown`, appending it if new."""
    begin = f"<!-- begin {name} -->"
    end = f"<!-- end {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
