"""docs/hami-compatibility.md cannot rot: every test its table names is collected by pytest, and quotes at
least one upstream path of its row (Project-HAMi/HAMi ``pkg/…``, ``cmd/…``, ``charts/hami/…``,
``dashboards/…``; HAMi-core ``src/…``) in its docstring, its comments, the comment block or
``# ----`` section header above it, or its module docstring."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "hami-compatibility.md"
UPSTREAM = re.compile(r"(pkg|cmd|charts/hami|dashboards|src)/[\w./-]+\.(go|yaml|tpl|json|c)")
SECTIONS = {"R", "P", "N", "C", "M", "H", "K", "D"}  # requests, policies, node protocol, HAMi-core, metrics, Helm, names, docs


@attrs.frozen
class Row:
    key: str
    upstream: tuple[str, ...]
    tests: tuple[str, ...]


def parse_table(text: str) -> list[Row]:
    """The rows under the ``| # | sub-point | upstream source | our test(s) | |`` header."""
    lines = text.split("| # | sub-point |", 1)[1].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5:
            raise ValueError(f"docs/hami-compatibility.md: a row needs 5 cells, got {len(cells)}: {line!r}")
        rows.append(Row(cells[0], tuple(re.findall(r"`([^`]+)`", cells[2])), tuple(re.findall(r"`([^`]+::\w+)`", cells[3]))))
    return rows


ROWS = parse_table(TABLE.read_text())


def test_the_table_covers_every_part_of_issue_18():
    keys = [row.key for row in ROWS]
    assert len(keys) == len(set(keys)), "row numbers repeat"
    assert {re.match(r"[A-Z]+", k).group(0) for k in keys} == SECTIONS  # type: ignore[union-attr]
    assert len(ROWS) >= 45


@pytest.mark.parametrize("row", ROWS, ids=[r.key for r in ROWS])
def test_each_row_names_upstream_paths_and_tests(row: Row):
    assert row.tests, f"{row.key}: no test named"
    assert row.upstream, f"{row.key}: no upstream source"
    bad = [p for p in row.upstream if not UPSTREAM.fullmatch(p)]
    assert not bad, f"{row.key}: not an upstream path: {bad}"


@pytest.fixture(scope="module")
def collected() -> set[str]:
    """Node ids pytest collects from every file the table names, parameters cut off."""
    files = sorted({t.split("::")[0] for row in ROWS for t in row.tests if (ROOT / t.split("::")[0]).is_file()})
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    ids = {line.split("[", 1)[0] for line in done.stdout.splitlines() if "::" in line}
    assert ids, done.stdout[-2000:] + done.stderr[-2000:]
    return ids


@pytest.mark.parametrize("test", sorted({t for row in ROWS for t in row.tests}))
def test_every_named_test_is_collected(test: str, collected: set[str]):
    assert test in collected, f"docs/hami-compatibility.md names {test}, which pytest does not collect"


def test_text(path: Path, name: str) -> str:
    """What a test says about itself: module docstring, comment block and section header above it, its source."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name]
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
    above = first
    while above > 0 and (lines[above - 1].startswith("#") or not lines[above - 1].strip()):
        above -= 1
    section = next((line for line in reversed(lines[:first]) if line.startswith("# ----")), "")
    return "\n".join([ast.get_docstring(tree) or "", section, *lines[above : node.end_lineno]])


test_text.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def _quoted(path: str, text: str) -> bool:
    return path in text or (path.startswith("charts/hami/") and path.removeprefix("charts/hami/") in text)


@pytest.mark.parametrize(
    ("row", "test"), [(row, test) for row in ROWS for test in row.tests], ids=[f"{r.key}-{t.split('::')[1]}" for r in ROWS for t in r.tests]
)
def test_every_named_test_quotes_its_upstream_source(row: Row, test: str):
    path, name = test.split("::")
    text = test_text(ROOT / path, name)
    assert any(_quoted(p, text) for p in row.upstream), f"{test} quotes none of {row.upstream} ({row.key})"


def test_the_citation_check_can_fail(tmp_path: Path):
    module = tmp_path / "test_x.py"
    module.write_text(
        '"""Nothing upstream here."""\n\n# ---- requests (pkg/device/nvidia/device.go)\n\n\n'
        "def test_a():\n    pass\n\n\n# ---- other\n\n# templates/scheduler/webhook.yaml\ndef test_b():\n    pass\n"
    )
    assert _quoted("pkg/device/nvidia/device.go", test_text(module, "test_a"))
    assert not _quoted("pkg/device/nvidia/device.go", test_text(module, "test_b"))
    assert _quoted("charts/hami/templates/scheduler/webhook.yaml", test_text(module, "test_b"))
    assert not _quoted("cmd/scheduler/metrics.go", test_text(module, "test_a"))
    with pytest.raises(ValueError, match="5 cells"):
        parse_table("| # | sub-point |\n|---|\n|---|\n| R1 | a | b |\n")
