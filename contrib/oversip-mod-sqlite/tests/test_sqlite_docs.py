"""The guide's code is the module's code: each block of docs/building-a-module.md that
opens with a comment naming a file is made of excerpts of that file, in order, with
`...` where lines are left out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
GUIDE = ROOT / "docs" / "building-a-module.md"
BLOCK = re.compile(r"^```\w+\n# (?P<path>\S+)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)


def excerpts() -> list[tuple[str, str]]:
    return [(match["path"], match["body"]) for match in BLOCK.finditer(GUIDE.read_text())]


def test_the_guide_quotes_files_at_all() -> None:
    assert len(excerpts()) >= 15


@pytest.mark.parametrize(("path", "body"), excerpts())
def test_each_excerpt_in_the_guide_is_in_its_file_in_order(path: str, body: str) -> None:
    source = (ROOT / path).read_text()
    position = 0
    for chunk in re.split(r"^\s*\.\.\.\n", body, flags=re.MULTILINE):
        found = source.find(chunk, position)
        assert found >= 0, f"not in {path} (after character {position}):\n{chunk}"
        position = found + len(chunk)
