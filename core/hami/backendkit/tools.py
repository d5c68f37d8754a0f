"""Running a vendor's command-line tool (``<vendor>-smi`` and the like) for discovery and health."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from hami.errors import BackendError


def run_tool(argv: Sequence[str], timeout: float, *, missing_hint: str = "") -> str:
    """The tool's stdout; a :class:`BackendError` names the command and why it failed (not found,
    timed out, could not start, non-zero exit with the start of its stderr)."""
    command = " ".join(argv)
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise BackendError(f"{argv[0]!r} not found on PATH{f' ({missing_hint})' if missing_hint else ''}") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{command!r} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise BackendError(f"{command!r} could not start: {exc}") from None
    if done.returncode != 0:
        raise BackendError(f"{command!r} exited with {done.returncode}: {done.stderr.strip()[:200]}")
    return done.stdout
