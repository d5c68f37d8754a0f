"""List + watch one kind of object (client-go's reflector, minimal): the one loop behind the
scheduler's cluster cache and the node agent's pod watch.

Objects stay raw JSON dicts (decoding 5000 nodes into kubernetes' Python models costs seconds). The
watch resumes from the last resourceVersion it saw (bookmarks included), so an error or a stream the
server ended loses no event; a 410 Gone, or an optional periodic resync, relists. Errors back off
exponentially (jittered, capped), so an API server outage never spins.
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
"""A generated client's list method (``CoreV1Api.list_node``…); called with ``_preload_content=False``."""
EventHandler = Callable[[str, Mapping[str, Any]], None]
"""``(ADDED | MODIFIED | DELETED, object)``."""
ListHandler = Callable[[list[Mapping[str, Any]]], None]
"""Every object the (re)list returned: the caller replaces its view with them."""


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist."""


class ListWatch:
    """Lists, then watches, in a daemon thread until :meth:`stop`.

    ``selector`` keyword arguments (``field_selector=…``) go to both the list and the watch;
    ``request_timeout`` bounds the list request; ``resync_seconds`` (None = never) relists
    periodically, as client-go's informers do.
    """

    def __init__(
        self,
        name: str,
        list_function: ListFunction,
        on_event: EventHandler,
        on_list: ListHandler,
        *,
        selector: Mapping[str, str] | None = None,
        resync_seconds: float | None = 300.0,
        watch_timeout: int = 240,
        request_timeout: float | None = None,
        backoff: tuple[float, float] = (0.2, 10.0),
    ) -> None:
        if not 0 < backoff[0] <= backoff[1]:
            raise ValueError(f"backoff={backoff!r}: needs 0 < initial <= maximum seconds")
        self.name = name
        self.list_function = list_function
        self.on_event = on_event
        self.on_list = on_list
        self.selector = dict(selector or {})
        self.resync_seconds = resync_seconds
        self.watch_timeout = watch_timeout
        self.request_timeout = request_timeout
        self.backoff = backoff
        self.resource_version = ""
        self.lists = 0
        """How many lists have completed (the first sets :attr:`synced`)."""
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self._next_resync = time.monotonic() + resync_seconds if resync_seconds else float("inf")

    def start(self) -> ListWatch:
        self._thread = threading.Thread(target=self._run, name=f"listwatch-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()  # unblocks the watch thread's read (urllib3 >= 2.3)
            except Exception:  # shutting down a dead socket may fail in many ways
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
            except Expired:
                log.info("event=watch_expired watch=%s resource_version=%s", self.name, self.resource_version)
                need_list = True
                continue
            except Exception as exc:  # the loop must outlive any API failure
                if self._stop.is_set():
                    return
                log.warning("event=watch_failed watch=%s error=%r retry_in=%.2f", self.name, describe(exc), delay)
                self._stop.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.backoff[1])
            if self._resync_due():
                need_list = True

    def _resync_due(self) -> bool:
        now = time.monotonic()
        if self.resync_seconds and now >= self._next_resync:
            self._next_resync = now + self.resync_seconds
            return True
        return False

    def _list(self) -> None:
        extra = {"_request_timeout": self.request_timeout} if self.request_timeout else {}
        response = self.list_function(**self.selector, _preload_content=False, **extra)
        body = json.loads(response.data)
        items = body.get("items") or []
        self.on_list(items)
        self.resource_version = (body.get("metadata") or {}).get("resourceVersion") or ""
        self.lists += 1
        self.synced.set()
        log.info("event=watch_listed watch=%s items=%d resource_version=%s", self.name, len(items), self.resource_version)

    def _watch(self) -> None:
        try:
            response = self.list_function(
                **self.selector,
                watch=True,
                resource_version=self.resource_version,
                timeout_seconds=self.watch_timeout,
                allow_watch_bookmarks=True,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 410:
                raise Expired() from None
            raise
        self._response = response
        try:
            for line in iter_resp_lines(response):
                if self._stop.is_set():
                    return
                if line.strip():
                    self._handle(json.loads(line))
        finally:
            self._response = None
            response.release_conn()

    def _handle(self, event: Mapping[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Expired()
            raise ApiException(status=obj.get("code"), reason=obj.get("message"))
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.on_event(kind, obj)
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:  # after the handler: an event it failed on is seen again when the watch resumes
            self.resource_version = version


def describe(exc: BaseException) -> str:
    """A short, log-friendly description of an API failure."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
