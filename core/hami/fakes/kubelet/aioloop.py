"""One asyncio loop per process for every fake kubelet's gRPC servers and ListAndWatch streams.

Why: a synchronous grpc server polls its completion queue every 200 ms on its own thread, and a
synchronous streaming call waits in 100 ms slices (plus a channel spin thread at 200 ms), so each
fake kubelet cost ~35 wake-ups a second while idle — at 500 simulated nodes that alone used half
of a 2-core machine (issue 29). grpc.aio serves all of them from one loop whose poller blocks
until there is work. Blocking work (API-server calls, dialling a plugin back) runs in the loop's
executor, never on the loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from concurrent import futures
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid = 0

BLOCKING_WORKERS = 16
"""Threads for the blocking parts (registration dial-back, node status writes) of all kubelets."""


def loop() -> asyncio.AbstractEventLoop:
    """The process's fake-kubelet loop, started on first use (and again in a forked child)."""
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid():
            new = asyncio.new_event_loop()
            new.set_default_executor(futures.ThreadPoolExecutor(BLOCKING_WORKERS, thread_name_prefix="fake-kubelet-blocking"))
            threading.Thread(target=new.run_forever, name="fake-kubelet-aio", daemon=True).start()
            _loop, _pid = new, os.getpid()
        return _loop


def run(coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
    """Run ``coro`` on the loop and wait for its result (from any thread but the loop's own)."""
    target = loop()
    if _on_loop(target):
        coro.close()
        raise RuntimeError("fake kubelet: a blocking call was made on its own event loop")
    return asyncio.run_coroutine_threadsafe(coro, target).result(timeout)


def spawn(coro: Coroutine[Any, Any, Any]) -> futures.Future[Any]:
    """Start ``coro`` on the loop without waiting for it."""
    return asyncio.run_coroutine_threadsafe(coro, loop())


def _on_loop(target: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is target
    except RuntimeError:
        return False


def on_loop() -> bool:
    """True in code running on the loop itself (which must not block)."""
    return _loop is not None and _on_loop(_loop)
