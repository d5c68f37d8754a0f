"""docs/security.md's "Issue 19 regression map" cannot rot: every test it names exists (parsed) and
is collected by pytest (a renamed or deleted test, or one that no longer imports, fails here)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Issue 19 regression map"
NAMED = re.compile(r"`((?:tests|backends)/[\w/.-]+\.py)::(\w+)`")


def named_tests(text: str) -> list[tuple[str, str]]:
    """The ``path::test`` references of the map section (up to the next ``## `` heading)."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return NAMED.findall(text[start : end if end != -1 else len(text)])


@pytest.fixture(scope="module")
def named() -> list[tuple[str, str]]:
    found = named_tests((REPO / "docs" / "security.md").read_text())
    assert len(found) >= 40, found  # the map is a table of every item, not a couple of lines
    return found


def test_the_parser_reads_only_the_section() -> None:
    text = "# t\n`tests/a.py::test_x`\n## Issue 19 regression map\n| `tests/b.py::test_y` |\n## Next\n`tests/c.py::test_z`\n"
    assert named_tests(text) == [("tests/b.py", "test_y")]


def test_every_named_test_exists(named: list[tuple[str, str]]) -> None:
    missing = []
    for path, name in named:
        file = REPO / path
        if not file.is_file():
            missing.append(f"{path} (no such file)")
            continue
        tree = ast.parse(file.read_text(), str(file))
        functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        if name not in functions:
            missing.append(f"{path}::{name}")
    assert not missing, "docs/security.md names tests that do not exist: " + ", ".join(missing)


def test_every_named_test_is_collected(named: list[tuple[str, str]]) -> None:
    ids = sorted({f"{path}::{name}" for path, name in named})
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *ids],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    collected = {line.split("[")[0] for line in done.stdout.splitlines() if "::" in line}
    assert set(ids) <= collected, sorted(set(ids) - collected)
