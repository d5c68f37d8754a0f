"""Fake Hygon tools: executables on PATH that replay recorded output and log how they were called."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from hami.fakes.tools import FakeTools, recording

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv("HAMI_INVENTORY", raising=False)
    return FakeTools(bin_dir, tmp_path / "calls.jsonl", FIXTURES)


@pytest.fixture
def read_recording() -> Callable[[str], str]:
    return partial(recording, FIXTURES)
