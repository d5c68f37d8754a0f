"""Fake vendor tools for backend tests: executables on PATH that replay recorded output.

Record genuine tool output (a vendor's SMI tool …) as fixture files starting with a
``# source: <where it was published>`` line and a ``# ---`` line; :class:`FakeTools` installs a small
Python script per tool that prints the recording for an exact argument list and logs every call.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

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


def recording(fixtures: Path, name: str) -> str:
    """The recorded output of a fixture, without its provenance header (which must be there)."""
    text = (fixtures / name).read_text(encoding="utf-8")
    if not text.startswith("# source:"):
        raise AssertionError(f"{name} must start with a '# source:' line naming where the output was published")
    return text.split("# ---\n", 1)[1]


class FakeTools:
    def __init__(self, bin_dir: Path, log: Path, fixtures: Path) -> None:
        self.bin_dir = bin_dir
        self.log = log
        self.fixtures = fixtures

    def install(self, name: str, recordings: Mapping[str, str | None], *, missing_rc: int = 2) -> Path:
        """``recordings`` maps the joined argv ('' for none) to a fixture name (None: succeed silently)."""
        paths = {args: (str(self.fixtures / f) if f else None) for args, f in recordings.items()}
        script = self.bin_dir / name
        script.write_text(_SCRIPT.format(python=sys.executable, name=name, recordings=paths, log=str(self.log), missing_rc=missing_rc))
        script.chmod(0o755)
        return script

    def calls(self, name: str | None = None) -> list[list[str]]:
        if not self.log.exists():
            return []
        entries = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [args for tool, args in entries if name is None or tool == name]
