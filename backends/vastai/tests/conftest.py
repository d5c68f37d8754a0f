"""Fake Vastai tools: executables on PATH that replay recorded output and log how they were called."""

from __future__ import annotations

from pathlib import Path

from hami.testing.tools import fake_tools_fixtures

fake_tools, read_recording = fake_tools_fixtures(Path(__file__).parent / "fixtures")
