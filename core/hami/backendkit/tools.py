"""Running a vendor's command-line tool (``<vendor>-smi`` and the like) for discovery and health."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from hami.errors import BackendError


class ToolNotFound(BackendError):
    """The tool is not installed: on a node without that vendor's cards this is the normal case, which
    discovery logs quietly, unlike a tool that is there and fails."""


def run_tool(argv: Sequence[str], timeout: float, *, missing_hint: str = "", output_in_errors: bool = False) -> str:
    """The tool's stdout; a :class:`BackendError` names the command and why it failed (not found,
    timed out, could not start, non-zero exit with the start of its stderr — and of its stdout too
    with ``output_in_errors``, for tools that print their errors there)."""
    command = " ".join(argv)
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ToolNotFound(f"{argv[0]!r} not found on PATH{f' ({missing_hint})' if missing_hint else ''}") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{command} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise BackendError(f"{command} could not start: {exc}") from None
    if done.returncode != 0:
        said = (done.stdout + done.stderr) if output_in_errors else done.stderr
        raise BackendError(f"{command} exited with {done.returncode}: {said.strip().replace(chr(10), ' | ')[:300]}")
    return done.stdout
