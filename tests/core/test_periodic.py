"""Background loops keep running through failures and stop promptly."""

from __future__ import annotations

import threading
import time

from hami.periodic import Periodic


def test_runs_survives_failures_and_stops():
    calls = []
    done = threading.Event()

    def action():
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise RuntimeError("one bad round")
        if len(calls) >= 4:
            done.set()

    loop = Periodic("test", 0.01, action, run_first=True).start()
    assert done.wait(5), calls
    started = time.monotonic()
    loop.stop()
    assert time.monotonic() - started < 1
    count = len(calls)
    time.sleep(0.05)
    assert len(calls) == count  # nothing runs after stop
