"""``hami backends``: what an operator sees, in a table and as JSON, including broken backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HAMI = [sys.executable, "-m", "hami.cli"]


def run_hami(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HAMI_")}
    full_env.update(env or {})
    return subprocess.run([*HAMI, *args], capture_output=True, text=True, env=full_env, timeout=60)


def test_json_lists_the_four_backends_ok():
    result = run_hami("backends", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {"nvidia", "ascend", "cambricon", "hygon"} <= set(rows)
    for row in rows.values():
        assert {"name", "vendor", "distribution", "version", "resources", "status"} <= set(row)
    assert rows["nvidia"]["status"] == "ok"
    assert rows["nvidia"]["vendor"] == "NVIDIA"
    assert rows["nvidia"]["distribution"] == "hami-nvidia"
    assert "nvidia.com/gpumem" in rows["nvidia"]["resources"]
    assert "huawei.com/Ascend910B3" in rows["ascend"]["resources"]
    assert "hami.policies" not in rows  # built-ins only with --all


def test_table_shows_each_vendor_key():
    result = run_hami("backends")
    assert result.returncode == 0, result.stderr
    for text in ("nvidia", "NVIDIA", "hygon.com/dcumem", "Ascend910B4-1", "hami-cambricon", "ok"):
        assert text in result.stdout


def broken_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "hami_brokenbackend.py").write_text("raise RuntimeError('SDK missing on this node')\n")
    info = site / "hami_brokenbackend-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hami-brokenbackend\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[hami.backends]\nbroken = hami_brokenbackend\n")
    return site


def test_a_broken_backend_is_listed_with_its_error_and_the_rest_serve(tmp_path):
    result = run_hami("backends", "--json", env={"PYTHONPATH": str(broken_site(tmp_path))})
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["broken"]["status"] == "failed"
    assert rows["broken"]["distribution"] == "hami-brokenbackend" and rows["broken"]["version"] == "0.0.1"
    assert "SDK missing on this node" in rows["broken"]["error"]
    assert rows["nvidia"]["status"] == "ok"


def test_strict_mode_exits_non_zero_with_a_clear_message(tmp_path):
    result = run_hami("backends", env={"PYTHONPATH": str(broken_site(tmp_path)), "HAMI_STRICT_PLUGINS": "1"})
    assert result.returncode == 2
    assert "error:" in result.stderr and "SDK missing on this node" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("variable", ["HAMI_DISABLED_BACKENDS", "HAMI_BACKENDS"])
def test_allow_and_deny_lists(variable):
    value = "hygon" if variable == "HAMI_DISABLED_BACKENDS" else "nvidia,ascend,cambricon"
    rows = {row["name"]: row["status"] for row in json.loads(run_hami("backends", "--json", env={variable: value}).stdout)}
    assert rows["hygon"] == "disabled" and rows["nvidia"] == "ok"


def test_all_includes_the_builtin_policies():
    rows = {row["name"]: row for row in json.loads(run_hami("backends", "--json", "--all").stdout)}
    assert rows["hami.policies"]["status"] == "ok"
