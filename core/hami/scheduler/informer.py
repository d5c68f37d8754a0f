"""List + watch one kind of object into the cache (client-go's informer pattern, minimal).

Objects stay raw JSON dicts (no model classes): decoding 5000 nodes into kubernetes' Python models
costs seconds. The watch resumes from the last resourceVersion it saw; a 410 Gone, or a periodic
resync, relists, and the cache drops whatever the list no longer holds. Errors back off exponentially
(jittered, capped), so an API server outage never spins.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)

ListFunction = Callable[..., Any]
Handler = Callable[[str, Mapping[str, Any]], None]
Relister = Callable[[list[Mapping[str, Any]]], None]


class _Expired(Exception):
    """The watch's resourceVersion is too old: relist."""


class Informer:
    def __init__(
        self,
        name: str,
        list_function: ListFunction,
        on_event: Handler,
        on_relist: Relister,
        *,
        resync_seconds: float = 300.0,
        watch_timeout: int = 240,
        backoff: tuple[float, float] = (0.2, 10.0),
    ) -> None:
        self.name = name
        self.list_function = list_function
        self.on_event = on_event
        self.on_relist = on_relist
        self.resync_seconds = resync_seconds
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.resource_version = ""
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self._next_resync = time.monotonic() + resync_seconds

    def start(self) -> Informer:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()  # unblocks the watch thread's read (urllib3 >= 2.3)
            except Exception:  # noqa: BLE001 - shutting down a dead socket may fail in many ways
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wait_synced(self, timeout: float = 10.0) -> bool:
        return self.synced.wait(timeout)

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        delay = self.backoff[0]
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                self._watch()
                delay = self.backoff[0]
            except _Expired:
                need_list = True
                continue
            except Exception as exc:  # noqa: BLE001 - the informer must outlive any API failure
                if self._stop.is_set():
                    return
                log.warning("event=informer_error informer=%s error=%r retry_in=%.2f", self.name, _describe(exc), delay)
                self._stop.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.backoff[1])
            if self._resync_due():
                need_list = True

    def _resync_due(self) -> bool:
        now = time.monotonic()
        if now >= self._next_resync:
            self._next_resync = now + self.resync_seconds
            return True
        return False

    def _list(self) -> None:
        response = self.list_function(_preload_content=False)
        body = json.loads(response.data)
        self.on_relist(body.get("items") or [])
        self.resource_version = (body.get("metadata") or {}).get("resourceVersion", "")
        self.synced.set()
        log.info("event=informer_listed informer=%s items=%d resource_version=%s", self.name, len(body.get("items") or []), self.resource_version)

    def _watch(self) -> None:
        try:
            response = self.list_function(
                watch=True,
                resource_version=self.resource_version,
                timeout_seconds=self.watch_timeout,
                allow_watch_bookmarks=True,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 410:
                raise _Expired() from None
            raise
        self._response = response
        try:
            for line in iter_resp_lines(response):
                if self._stop.is_set():
                    return
                self._handle(json.loads(line))
        finally:
            self._response = None
            response.release_conn()

    def _handle(self, event: Mapping[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired()
            raise RuntimeError(f"watch error: {obj.get('message')}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.on_event(kind, obj)
        if version:
            self.resource_version = version


def _describe(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
