"""Fake Cambricon tools: executables on PATH that replay recorded output and log how they were called."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

_SCRIPT = '''#!{python}
"""Fake {name}: replays recordings (header stripped), logs argv as JSON lines."""
import json, sys
RECORDINGS = {recordings!r}
with open({log!r}, "a") as log:
    log.write(json.dumps([{name!r}, sys.argv[1:]]) + "\\n")
args = " ".join(sys.argv[1:])
if args not in RECORDINGS:
    sys.stderr.write("fake {name}: no recording for %r\\n" % args)
    sys.exit({missing_rc})
path = RECORDINGS[args]
if path is None:
    sys.exit(0)
text = open(path, encoding="utf-8").read()
if text.startswith("# source:"):
    text = text.split("# ---\\n", 1)[1]
sys.stdout.write(text)
'''


def recording(name: str) -> str:
    """The recorded output of a fixture, without its provenance header."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    assert text.startswith("# source:"), f"{name} must start with a '# source:' line"
    return text.split("# ---\n", 1)[1]


class FakeTools:
    def __init__(self, bin_dir: Path, log: Path) -> None:
        self.bin_dir = bin_dir
        self.log = log

    def install(self, name: str, recordings: Mapping[str, str | None], *, missing_rc: int = 2) -> Path:
        """``recordings`` maps the joined argv ('' for none) to a fixture name (None: succeed silently)."""
        paths = {args: (str(FIXTURES / f) if f else None) for args, f in recordings.items()}
        script = self.bin_dir / name
        script.write_text(_SCRIPT.format(python=sys.executable, name=name, recordings=paths, log=str(self.log), missing_rc=missing_rc))
        script.chmod(0o755)
        return script

    def calls(self, name: str | None = None) -> list[list[str]]:
        if not self.log.exists():
            return []
        entries = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [args for tool, args in entries if name is None or tool == name]


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv("HAMI_INVENTORY", raising=False)
    return FakeTools(bin_dir, tmp_path / "calls.jsonl")


@pytest.fixture
def read_recording() -> Callable[[str], str]:
    return recording
