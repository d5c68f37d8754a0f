"""docs/backends.md's vendor table is generated from ``hami backends --json`` (tools/vendor_table.py,
``make docs``): the committed table must equal a fresh generation, and a full install (``make install``
installs every ``backends/*``) loads one backend per directory, thirteen today (issue 22)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_generator():
    spec = importlib.util.spec_from_file_location("hami_vendor_table", REPO / "tools" / "vendor_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


vendor_table = _load_generator()


@pytest.fixture(scope="module")
def records():
    return vendor_table.backends_json()


def test_a_full_install_loads_a_backend_per_directory(records):
    directories = sorted(p.parent.name for p in (REPO / "backends").glob("*/pyproject.toml"))
    assert [r["name"] for r in records] == directories
    assert len(records) == 13 and all(r["status"] == "ok" and r["distribution"] == f"hami-{r['name']}" for r in records)


def test_the_committed_table_is_a_fresh_generation(records):
    committed = vendor_table.DOC.read_text()
    assert vendor_table.render(committed, records) == committed, "docs/backends.md's vendor table is stale: run `make docs`"


def test_every_backend_and_resource_has_its_row(records):
    text = vendor_table.DOC.read_text()
    for r in records:
        (row,) = [line for line in text.splitlines() if line.startswith(f"| {r['name']} |")]
        assert all(f"`{name}`" in row for name in [*r["vendors"], *r["resources"]])
        assert (REPO / "backends" / r["name"] / "README.md").is_file()


def test_only_the_marked_block_is_rewritten():
    record = {"name": "acme", "distribution": "hami-acme", "vendors": ["ACME"], "resources": ["acme.com/npu"]}
    document = f"# Title\nprose before\n{vendor_table.BEGIN}\nold rows\n{vendor_table.END}\nprose after\n"
    fresh = vendor_table.render(document, [record])
    assert fresh.startswith("# Title\nprose before\n") and fresh.endswith(f"{vendor_table.END}\nprose after\n")
    assert "old rows" not in fresh and "| acme | `hami-acme` | `ACME` | `acme.com/npu` |" in fresh
    assert vendor_table.render(fresh, [record]) == fresh
    with pytest.raises(SystemExit, match="markers"):
        vendor_table.render("# no markers\n", [record])


def test_check_mode_fails_on_a_stale_table(monkeypatch, tmp_path, records):
    stale = tmp_path / "backends.md"
    stale.write_text(vendor_table.DOC.read_text().replace("| amd |", "| amd-old |"))
    monkeypatch.setattr(vendor_table, "DOC", stale)
    monkeypatch.setattr(vendor_table, "REPO", tmp_path)
    monkeypatch.setattr(vendor_table, "backends_json", lambda: records)
    assert vendor_table.main(["--check"]) == 1
    assert vendor_table.main([]) == 0 and vendor_table.main(["--check"]) == 0
