"""``hami devices`` on a machine without a vendor's tools is quiet about that vendor (issue 25).

The real CLI runs in a subprocess with every installed backend, PATH holding only a directory we
control and no inventory, the way an operator runs it on a node with none (or only some) of the
thirteen vendors' cards. A tool that is not installed is an INFO line at most; a tool that exists
and fails is exactly one WARNING naming the command, its exit code and its first error line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HAMI = [sys.executable, "-m", "hami.cli"]
BACKENDS = {
    "amd",
    "ascend",
    "awsneuron",
    "biren",
    "cambricon",
    "enflame",
    "hygon",
    "iluvatar",
    "kunlunxin",
    "metax",
    "mthreads",
    "nvidia",
    "vastai",
}


def run_hami(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with PATH = ``bin_dir`` only and none of hami's environment settings (no inventory)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMI_")}
    env["PATH"] = str(bin_dir)
    env["HOME"] = str(bin_dir.parent)
    return subprocess.run([*HAMI, *args], capture_output=True, text=True, env=env, timeout=120)


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "WARNING" in line or line.startswith("warning:")]


def fake_tool(bin_dir: Path, name: str) -> None:
    """A vendor tool that is installed and broken: exit 3 with two lines of error."""
    path = bin_dir / name
    path.write_text('#!/bin/sh\necho "error: boom" >&2\necho "more detail" >&2\nexit 3\n')
    path.chmod(0o755)


@pytest.fixture
def empty_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return bin_dir


def test_all_thirteen_backends_load(empty_bin: Path) -> None:
    """The quiet tests below mean something only if every backend is there to be noisy."""
    result = run_hami(empty_bin, "backends", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) >= BACKENDS
    assert {name: rows[name]["status"] for name in BACKENDS} == dict.fromkeys(BACKENDS, "ok")


@pytest.mark.parametrize("args", [("devices",), ("devices", "--json"), ("-v", "devices", "--json")])
def test_no_vendor_tools_no_warnings(empty_bin: Path, args: tuple[str, ...]) -> None:
    result = run_hami(empty_bin, *args)
    assert result.returncode == 0, result.stderr
    assert warnings_in(result.stderr) == []
    assert "ERROR" not in result.stderr
    if "--json" in args:
        assert json.loads(result.stdout) == []
    else:
        assert "No devices found" in result.stdout
    if "-v" in args:  # the absent tools are still said, at INFO, by every backend that was asked
        loaded = {line.split("backend=")[1].split()[0] for line in result.stderr.splitlines() if "event=backend_loaded" in line}
        assert loaded >= BACKENDS


@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_a_failing_tool_is_one_warning_each(empty_bin: Path, json_flag: tuple[str, ...]) -> None:
    fake_tool(empty_bin, "ixsmi")
    fake_tool(empty_bin, "mx-smi")
    result = run_hami(empty_bin, "devices", *json_flag)
    assert result.returncode == 0, result.stderr
    warnings = warnings_in(result.stderr)
    assert len(warnings) == 2, result.stderr
    for tool in ("ixsmi", "mx-smi"):
        about = [w for w in warnings if f"{tool} " in w]
        assert len(about) == 1, (tool, warnings)
        assert "exited with 3" in about[0]
        assert "error: boom" in about[0]
    if json_flag:
        assert json.loads(result.stdout) == []


def test_a_device_the_tool_lists_but_cannot_be_offered_is_shown_with_why(empty_bin: Path) -> None:
    """Issue 25's other half, end to end: the real CLI lists a device the vendor tool reported but the
    backend cannot advertise, with the reason, in the JSON and under the table, and still exits 0.
    The tool is a stand-in printing two rows in brsmi's documented CSV form, one without memory."""
    tool = empty_bin / "brsmi"
    tool.write_text("#!/bin/sh\nprintf '0, Biren 166M, GPU-a, 65024\\n1, Biren 166M, GPU-b, [N/A]\\n'\n")
    tool.chmod(0o755)
    result = run_hami(empty_bin, "devices", "--json")
    assert result.returncode == 0, result.stderr
    assert warnings_in(result.stderr) == []
    rows = [(r["backend"], r["index"], r["id"], r["advertised"], r["reason"]) for r in json.loads(result.stdout)]
    assert rows == [
        ("biren", 0, "GPU-a", True, ""),
        ("biren", 1, "GPU-b", False, "memory unknown: brsmi printed no memory.total for this GPU"),
    ]
    table = run_hami(empty_bin, "devices")
    assert table.returncode == 0, table.stderr
    assert "not advertised: biren Biren index 1 (GPU-b): memory unknown" in table.stdout
