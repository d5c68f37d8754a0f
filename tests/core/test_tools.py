"""Running vendor tools: every failure is a BackendError naming the command."""

from __future__ import annotations

import sys

import pytest

from hami.backendkit.tools import run_tool
from hami.errors import BackendError


def test_output_and_failures():
    assert run_tool([sys.executable, "-c", "print('ok')"], 10) == "ok\n"
    with pytest.raises(BackendError, match=r"'no-such-tool-xyz' not found on PATH \(install the driver\)"):
        run_tool(["no-such-tool-xyz"], 10, missing_hint="install the driver")
    with pytest.raises(BackendError, match="exited with 3: boom"):
        run_tool([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"], 10)
    with pytest.raises(BackendError, match=r"did not finish within 0\.2 s"):
        run_tool([sys.executable, "-c", "import time; time.sleep(5)"], 0.2)


def test_output_in_errors_shows_what_the_tool_printed_on_stdout():
    script = "import sys; print('Status : FAIL'); print('error code 3'); sys.stderr.write('warn'); sys.exit(1)"
    with pytest.raises(BackendError) as caught:
        run_tool([sys.executable, "-c", script], 10)
    assert str(caught.value).endswith("exited with 1: warn")  # stderr only by default
    with pytest.raises(BackendError, match=r"exited with 1: Status : FAIL \| error code 3 \| ?warn$"):
        run_tool([sys.executable, "-c", script], 10, output_in_errors=True)
