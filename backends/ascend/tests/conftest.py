"""Fixtures for the Ascend tests: a fake ``npu-smi`` on PATH that replays recorded output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"


class FakeNpuSmi:
    def __init__(self, bin_dir: Path, log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bin_dir = bin_dir
        self.log = log
        self.monkeypatch = monkeypatch

    def replay_info(self, name: str) -> None:
        self.monkeypatch.setenv("FAKE_NPU_SMI_INFO", name)

    def fail(self, *rules: str) -> None:
        self.monkeypatch.setenv("FAKE_NPU_SMI_FAIL", ",".join(rules))

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def set_calls(self) -> list[list[str]]:
        return [c for c in self.calls() if c[:1] == ["set"]]


@pytest.fixture
def fake_npu_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeNpuSmi:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "npu-smi"
    exe.write_text(
        f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = 'npu-smi'\nrunpy.run_path({str(HERE / 'fake_npu_smi.py')!r}, run_name='__main__')\n"
    )
    exe.chmod(0o755)
    log = tmp_path / "npu-smi.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_NPU_SMI_DIR", str(FIXTURES))
    monkeypatch.setenv("FAKE_NPU_SMI_LOG", str(log))
    monkeypatch.delenv("FAKE_NPU_SMI_FAIL", raising=False)
    monkeypatch.delenv("HAMI_INVENTORY", raising=False)
    return FakeNpuSmi(bin_dir, log, monkeypatch)


@pytest.fixture
def fixture_text() -> Callable[[str], str]:
    """A recorded sample without its source header."""

    def read(name: str) -> str:
        lines = (FIXTURES / name).read_text().splitlines(keepends=True)
        while lines and lines[0].startswith("# "):
            lines.pop(0)
        return "".join(lines)

    return read
