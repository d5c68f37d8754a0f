"""The dashboard's copy of the cluster: nodes, pods and (optionally) events, listed then watched.

Every change bumps :attr:`ClusterWatch.version` and wakes whoever waits in :meth:`wait_change` (the
server-sent event streams), and :meth:`view` builds the page data once per version however many
browsers ask. Objects stay raw JSON (as :mod:`hami.listwatch` keeps them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hami.kube import release
from hami.listwatch import ListWatch
from hami.ui.model import build

if TYPE_CHECKING:
    from hami.plugin.model import DeviceKind

log = logging.getLogger(__name__)


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


class _Store:
    """One kind of object by namespace/name, fed by a :class:`ListWatch`."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self.items: dict[str, Mapping[str, Any]] = {}
        self.changed = changed

    def on_list(self, items: list[Mapping[str, Any]]) -> None:
        self.items = {_key(item): item for item in items}
        self.changed()

    def on_event(self, kind: str, obj: Mapping[str, Any]) -> None:
        if kind == "DELETED":
            self.items.pop(_key(obj), None)
        else:
            self.items[_key(obj)] = obj
        self.changed()


class ClusterWatch:
    """Lists and watches nodes, pods and events through ``api`` until :meth:`stop`.

    ``events=False`` (or an API server that forbids listing events) leaves the Pending reasons to the
    pods' own ``PodScheduled`` conditions, which kube-scheduler writes with every node's reasons."""

    def __init__(
        self, api: client.ApiClient, kinds: Mapping[str, DeviceKind], *, events: bool = True, resync_seconds: float | None = 300.0
    ) -> None:
        self.kinds = kinds
        self.core_v1 = client.CoreV1Api(api)
        self.version = 0
        self._condition = threading.Condition()
        self._built: tuple[int, dict[str, Any]] | None = None
        self._build_lock = threading.Lock()
        self.build_seconds = 0.0
        """How long the last :meth:`view` build took (reported on /api/view as ``build_seconds``)."""
        self.nodes, self.pods, self.events = _Store(self._changed), _Store(self._changed), _Store(self._changed)
        self._watches = [
            ListWatch("ui-nodes", self.core_v1.list_node, self.nodes.on_event, self.nodes.on_list, resync_seconds=resync_seconds),
            ListWatch(
                "ui-pods", self.core_v1.list_pod_for_all_namespaces, self.pods.on_event, self.pods.on_list, resync_seconds=resync_seconds
            ),
        ]
        self.events_enabled = events and self._may_list_events()
        if self.events_enabled:
            self._watches.append(
                ListWatch(
                    "ui-events",
                    self.core_v1.list_event_for_all_namespaces,
                    self.events.on_event,
                    self.events.on_list,
                    selector={"field_selector": "involvedObject.kind=Pod"},
                    resync_seconds=resync_seconds,
                )
            )

    def _may_list_events(self) -> bool:
        try:
            release(self.core_v1.list_event_for_all_namespaces(limit=1, _preload_content=False, _request_timeout=10))
        except ApiException as exc:
            if exc.status in (401, 403):
                log.info("event=ui_events_forbidden status=%s: Pending reasons come from the pods' conditions only", exc.status)
                return False
        except Exception:  # the list-and-watch loop retries and reports it
            pass
        return True

    def _changed(self) -> None:
        with self._condition:
            self.version += 1
            self._condition.notify_all()

    def start(self, timeout: float = 30.0) -> ClusterWatch:
        for watch in self._watches:
            watch.start()
        deadline = time.monotonic() + timeout
        for watch in self._watches:
            watch.wait_synced(max(deadline - time.monotonic(), 0.1))
        return self

    def stop(self) -> None:
        for watch in self._watches:
            watch.stop()
        self.wake()

    def wake(self) -> None:
        """Wake every :meth:`wait_change` caller now (a server shutting down)."""
        with self._condition:
            self._condition.notify_all()

    @property
    def synced(self) -> bool:
        return all(w.synced.is_set() for w in self._watches)

    def wait_change(self, seen: int, timeout: float) -> int:
        """The current version, once it differs from ``seen``, after ``timeout`` seconds or a :meth:`wake`."""
        with self._condition:
            if self.version == seen:
                self._condition.wait(timeout)
            return self.version

    def view(self) -> dict[str, Any]:
        """The page data of the current version (built at most once per version)."""
        with self._build_lock:
            version = self.version
            if self._built is not None and self._built[0] == version:
                return self._built[1]
            started = time.perf_counter()
            nodes = [dict(n) for n in self.nodes.items.copy().values()]
            view = build(self.kinds, nodes, [dict(p) for p in self.pods.items.copy().values()], list(self.events.items.copy().values()))
            self.build_seconds = time.perf_counter() - started
            view["version"] = version
            view["synced"] = self.synced
            view["events"] = self.events_enabled
            self._built = (version, view)
            return view
