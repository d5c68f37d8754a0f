"""pytest fixtures for backends whose discovery runs a vendor tool, made by a factory so that each
backend's ``conftest.py`` names its own recordings::

    fake_tools, read_recording = fake_tools_fixtures(Path(__file__).parent / "fixtures")

``fake_tools`` is a :class:`hami.fakes.tools.FakeTools` whose executables come first on a PATH that
holds only the system directories (so a real tool on the test machine is never run), with
``HAMI_INVENTORY`` unset (so the backend really runs the tool); ``read_recording(name)`` is a
fixture file's recorded output without its provenance header.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from hami.fakes.tools import FakeTools, recording


def fake_tools_fixtures(fixtures: Path) -> tuple[Any, Any]:
    """The ``fake_tools`` and ``read_recording`` fixtures over the recordings in ``fixtures``."""

    @pytest.fixture(name="fake_tools")
    def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
        monkeypatch.delenv("HAMI_INVENTORY", raising=False)
        return FakeTools(bin_dir, tmp_path / "calls.jsonl", fixtures)

    @pytest.fixture(name="read_recording")
    def read_recording() -> Callable[[str], str]:
        return partial(recording, fixtures)

    return fake_tools, read_recording
