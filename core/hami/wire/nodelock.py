"""HAMi's node lock: one pod at a time between bind and Allocate on a node.

The lock is the node annotation ``hami.io/mutex.lock = "<RFC3339 time>,<namespace>,<pod>"``, taken
and released with a merge patch that carries the node's ``resourceVersion``: the API server answers
409 to everyone but the first writer, so two schedulers (or a scheduler and an agent) never both
hold it. A lock older than ``expiry``, or whose owner pod is gone, may be taken over.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import attrs
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from hami.errors import HamiError
from hami.wire.annotations import NODE_LOCK

log = logging.getLogger(__name__)

DEFAULT_EXPIRY = timedelta(minutes=5)


class NodeLockError(HamiError):
    """The node lock could not be taken or released; the message says who holds it."""


class NodeChanged(NodeLockError):
    """The node was written between our read and our patch (409): read again and retry."""


@attrs.frozen
class LockHolder:
    since: datetime
    namespace: str
    name: str

    def encode(self) -> str:
        return f"{self.since.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')},{self.namespace},{self.name}"

    @classmethod
    def decode(cls, value: str) -> LockHolder | None:
        """None for a value that is not a lock (corrupt locks must not wedge a node forever)."""
        parts = value.split(",")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            return None
        try:
            since = datetime.fromisoformat(parts[0].replace("Z", "+00:00"))
        except ValueError:
            return None
        return cls(since if since.tzinfo else since.replace(tzinfo=timezone.utc), parts[1], parts[2])


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class NodeLock:
    def __init__(
        self,
        core_v1: CoreV1Api,
        *,
        expiry: timedelta = DEFAULT_EXPIRY,
        pod_exists: Callable[[str, str], bool] | None = None,
        clock: Callable[[], datetime] = _now,
        request_timeout: float = 5.0,
    ) -> None:
        self.core_v1 = core_v1
        self.expiry = expiry
        self.pod_exists = pod_exists or self._pod_exists
        self.clock = clock
        self.request_timeout = request_timeout

    def _pod_exists(self, namespace: str, name: str) -> bool:
        try:
            self.core_v1.read_namespaced_pod(name, namespace, _preload_content=False, _request_timeout=self.request_timeout)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _annotations(self, node: str) -> tuple[dict[str, str], str]:
        # Raw JSON: deserialising a Node (whose annotations carry every device list) costs more than the request.
        response = self.core_v1.read_node(node, _preload_content=False, _request_timeout=self.request_timeout)
        meta = json.loads(cast(Any, response).data).get("metadata") or {}
        return meta.get("annotations") or {}, meta.get("resourceVersion") or ""

    def holder(self, node: str) -> tuple[LockHolder | None, str]:
        """The current holder (None when free or corrupt) and the node's resourceVersion."""
        annotations, version = self._annotations(node)
        value = annotations.get(NODE_LOCK)
        return (LockHolder.decode(value) if value else None), version

    def acquire(self, node: str, namespace: str, name: str, *, timeout: float = 0.0, interval: float = 0.1, conflicts: int = 5) -> LockHolder:
        """Take the lock for pod ``namespace/name``; retry until ``timeout`` seconds while another pod
        holds it. A 409 because the node changed for another reason (an agent's heartbeat) is retried
        at once, up to ``conflicts`` times: only a lock held by someone else is a reason to give up."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._try_acquire(node, namespace, name)
            except NodeChanged:
                conflicts -= 1
                if conflicts < 0:
                    raise
                continue
            except NodeLockError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(interval)

    def _try_acquire(self, node: str, namespace: str, name: str) -> LockHolder:
        current, version = self.holder(node)
        now = self.clock()
        if current is not None and (current.namespace, current.name) != (namespace, name):
            expired = now - current.since >= self.expiry
            if not expired and self.pod_exists(current.namespace, current.name):
                raise NodeLockError(f"node {node!r} is locked by pod {current.namespace}/{current.name} since {current.since.isoformat()}")
            log.info("event=node_lock_taken_over node=%s previous=%s/%s expired=%s", node, current.namespace, current.name, expired)
        mine = LockHolder(now, namespace, name)
        self._patch(node, version, mine.encode())
        return mine

    def release(self, node: str, namespace: str | None = None, name: str | None = None, *, attempts: int = 5) -> bool:
        """Free the lock if ``namespace/name`` holds it (any holder when not given); True if released."""
        for _ in range(attempts):
            current, version = self.holder(node)
            if current is None and not self._has_annotation(node):
                return False
            if current is not None and name is not None and (current.namespace, current.name) != (namespace, name):
                return False
            try:
                self._patch(node, version, None)
                return True
            except NodeLockError:
                continue  # someone wrote the node in between: read again
        raise NodeLockError(f"could not release the lock on node {node!r} after {attempts} attempts (node keeps changing)")

    def release_at(self, node: str, version: str, namespace: str, name: str) -> bool:
        """Release with the resourceVersion the caller read the lock at (one request instead of two);
        when the node changed since, fall back to :meth:`release`."""
        try:
            self._patch(node, version, None)
            return True
        except NodeLockError:
            return self.release(node, namespace, name)

    def _has_annotation(self, node: str) -> bool:
        return NODE_LOCK in self._annotations(node)[0]

    def _patch(self, node: str, version: str, value: str | None) -> None:
        body = {"metadata": {"resourceVersion": version, "annotations": {NODE_LOCK: value}}}
        try:
            self.core_v1.patch_node(node, body, _preload_content=False, _request_timeout=self.request_timeout,
                                    _content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 409:
                raise NodeChanged(f"node {node!r} changed while its lock was being written (409 Conflict)") from None
            raise
