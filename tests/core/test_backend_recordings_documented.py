"""Every recorded tool output a backend's tests replay is named in that backend's README and cites
where it came from (issue 25): an operator reading the README can tell which real machines, drivers
and published outputs the parser was checked against, and which inputs were constructed.

Recordings live under ``backends/<name>/tests/fixtures*``; a backend without such a directory has
nothing to list (its README is still required).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = sorted(p.name for p in (ROOT / "backends").iterdir() if (p / "pyproject.toml").is_file())
SOURCE_MARKS = ("http", "code index", "no public", "not a recording")
"""What a ``# source:`` line says: a URL, the code index's id where the page names no repository, or
that no public output exists and the file was constructed from documentation."""


def recordings(backend: str) -> list[Path]:
    tests = ROOT / "backends" / backend / "tests"
    dirs = [d for d in tests.glob("fixtures*") if d.is_dir()] if tests.is_dir() else []
    return sorted(f for d in dirs for f in d.rglob("*") if f.is_file() and f.name != "README.md" and "__pycache__" not in f.parts)


def test_all_thirteen_backends_are_checked() -> None:
    assert len(BACKENDS) == 13, BACKENDS


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_recording_is_named_in_the_readme(backend: str) -> None:
    readme = ROOT / "backends" / backend / "README.md"
    assert readme.is_file(), f"backends/{backend} has no README.md"
    text = readme.read_text(encoding="utf-8")
    missing = [f.name for f in recordings(backend) if f.name not in text]
    assert missing == [], f"backends/{backend}/README.md does not name the recordings {missing}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_recording_cites_its_source(backend: str) -> None:
    uncited = []
    for f in recordings(backend):
        first = f.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
        line = first[0].lower() if first else ""
        if not (line.startswith("# source:") and any(mark in line for mark in SOURCE_MARKS)):
            uncited.append(f.name)
    assert uncited == [], f"backends/{backend}: recordings without a '# source:' first line citing where they came from: {uncited}"
