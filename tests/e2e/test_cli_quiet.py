"""The terminal shows our messages, not gRPC's C core log or timestamps, unless the user asks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d", re.MULTILINE)
GRPC_CORE_LINE = re.compile(r"chttp2|\.cc:\d+\]")

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: fits}
spec: {containers: [{name: c, image: cuda, resources: {limits: {nvidia.com/gpu: 1, nvidia.com/gpumem: 1000}}}]}
"""


def hami(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("HAMI_", "GRPC_"))}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "hami.cli", *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=180)


@pytest.fixture
def pods(tmp_path: Path) -> Path:
    path = tmp_path / "pods.yaml"
    path.write_text(PODS)
    return path


def test_sandbox_prints_no_grpc_core_lines_by_default(pods):
    result = hami("sandbox", "--pods", str(pods), "--json")
    assert result.returncode == 0, result.stderr
    assert not GRPC_CORE_LINE.search(result.stderr), result.stderr[-2000:]


def test_the_users_grpc_verbosity_is_kept(pods):
    """The same run with GRPC_VERBOSITY=INFO shows gRPC's lines: the quiet default hides real output."""
    result = hami("sandbox", "--pods", str(pods), "--json", env={"GRPC_VERBOSITY": "INFO"})
    assert result.returncode == 0, result.stderr
    assert GRPC_CORE_LINE.search(result.stderr), result.stderr[-2000:]


def test_devices_prints_no_timestamped_lines(tmp_path):
    """A one-shot command is not a daemon: what it logs reads like kubectl's warnings."""
    result = hami("devices", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not TIMESTAMPED.search(result.stderr), result.stderr
