"""A function run every N seconds on a daemon thread, surviving its own failures (background loops)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, interval: float, action: Callable[[], object], *, run_first: bool = False) -> None:
        self.name = name
        self.interval = interval
        self.action = action
        self.run_first = run_first
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        if self.run_first:
            self._run_once()
        while not self._stop.wait(self.interval):
            self._run_once()

    def _run_once(self) -> None:
        try:
            self.action()
        except Exception as exc:
            log.warning("event=periodic_error loop=%s error=%r", self.name, f"{type(exc).__name__}: {exc}")

    def start(self) -> Periodic:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
