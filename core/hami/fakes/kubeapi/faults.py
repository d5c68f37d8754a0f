"""Fault injection: make the API server fail, slow down, or drop watches on demand.

Code that talks to a real cluster has to survive 5xx answers, slow answers and watch streams that
end; these knobs let a test provoke each one deterministically. All methods are thread-safe and
take effect for the next request.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hami.fakes.kubeapi.errors import StatusError, injected

log = logging.getLogger(__name__)


@dataclass
class _Delay:
    seconds: float
    remaining: int | None  # requests left to delay, None = until cleared
    path: re.Pattern[str] | None
    method: str | None


@dataclass
class _Failure:
    status: int
    until: float | None  # monotonic deadline, None = no time limit
    remaining: int | None  # requests left to fail, None = no count limit
    path: re.Pattern[str] | None
    method: str | None
    message: str | None


class Faults:
    """``srv.faults``: ``fail``, ``latency``, ``delay``, ``cut_watches``, ``clear``."""

    def __init__(self, cut: Callable[[bool], int] | None = None) -> None:
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._delays: list[_Delay] = []
        self._latency = 0.0
        self._cut = cut
        self.injected = 0  # how many requests were failed on purpose so far
        self.delayed = 0  # how many requests met a :meth:`delay` so far (counted as they arrive)

    def fail(
        self,
        status: int = 503,
        seconds: float | None = None,
        count: int | None = None,
        *,
        path: str | None = None,
        method: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer requests with ``status`` and a matching ``Status`` body.

        Lasts ``seconds`` and/or ``count`` requests (whichever ends first; neither = until
        :meth:`clear`). ``path`` (a regular expression searched in the request path) and ``method``
        narrow which requests fail.
        """
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error code (400-599)")
        if count is not None and count < 1:
            raise ValueError("count must be positive")
        failure = _Failure(
            status,
            time.monotonic() + seconds if seconds is not None else None,
            count,
            re.compile(path) if path else None,
            method.upper() if method else None,
            message,
        )
        with self._lock:
            self._failures.append(failure)
        log.info("fault: fail with %d (seconds=%s count=%s path=%s method=%s)", status, seconds, count, path, method)

    def latency(self, seconds: float) -> None:
        """Delay every request by ``seconds`` (0 turns it off)."""
        if seconds < 0:
            raise ValueError("latency must be non-negative")
        with self._lock:
            self._latency = float(seconds)
        log.info("fault: latency %.3fs", seconds)

    def delay(self, seconds: float, count: int | None = None, *, path: str | None = None, method: str | None = None) -> None:
        """Hold matching requests ``seconds`` before serving them: a write that is sent now and lands
        later, after what the client did meanwhile. ``count`` requests (None = until :meth:`clear`);
        ``path`` (a regular expression searched in the request path) and ``method`` narrow which."""
        if seconds < 0:
            raise ValueError(f"delay must be non-negative, got {seconds!r}")
        if count is not None and count < 1:
            raise ValueError(f"count must be positive, got {count!r}")
        with self._lock:
            self._delays.append(_Delay(float(seconds), count, re.compile(path) if path else None, method.upper() if method else None))
        log.info("fault: delay %.3fs (count=%s path=%s method=%s)", seconds, count, path, method)

    def cut_watches(self, abrupt: bool = False) -> int:
        """End every open watch stream now; returns how many there were.

        By default the stream ends cleanly (like the server's own watch timeout); ``abrupt=True``
        drops the connection mid-stream instead, so clients see a protocol error.
        """
        if self._cut is None:
            return 0
        return self._cut(abrupt)

    def clear(self) -> None:
        """Remove every failure and the latency."""
        with self._lock:
            self._failures.clear()
            self._delays.clear()
            self._latency = 0.0
        log.info("fault: cleared")

    # ------------------------------------------------------------ used by the server

    def check(self, method: str, path: str) -> None:
        """Sleep for the latency, then raise the injected error if one applies to this request."""
        with self._lock:
            delay = self._latency
            for d in self._delays:
                if (
                    (d.remaining is None or d.remaining > 0)
                    and (not d.method or d.method == method)
                    and (not d.path or d.path.search(path))
                ):
                    delay = max(delay, d.seconds)
                    self.delayed += 1
                    if d.remaining is not None:
                        d.remaining -= 1
            self._delays = [d for d in self._delays if d.remaining is None or d.remaining > 0]
        if delay:
            time.sleep(delay)
        now = time.monotonic()
        with self._lock:
            self._failures = [f for f in self._failures if (f.until is None or f.until > now) and (f.remaining is None or f.remaining > 0)]
            for f in self._failures:
                if f.method and f.method != method:
                    continue
                if f.path and not f.path.search(path):
                    continue
                if f.remaining is not None:
                    f.remaining -= 1
                self.injected += 1
                raise_error: StatusError = injected(f.status, f.message)
                break
            else:
                return
        raise raise_error
