"""HAMi's node lock: one pod at a time between bind and Allocate on a node.

The lock is the node annotation ``hami.io/mutex.lock = "<RFC3339 time>,<namespace>,<pod>"``, taken
and released with a merge patch that carries the node's ``resourceVersion``: the API server answers
409 to everyone but the first writer, so two schedulers (or a scheduler and an agent) never both
hold it. A lock older than ``expiry`` may be taken over, and so, at once, may a lock whose holder
pod is no longer between bind and Allocate: gone, finished (``Succeeded``/``Failed``), being
deleted, ``bind-phase`` ``failed`` or ``success``, or a newer pod of the same name. A bare
``<RFC3339 time>`` lock, written by older HAMi (``pkg/util/nodelock/nodelock.go``, ParseNodeLock's
comma-less form), names no holder and counts as held until it expires, as upstream treats it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import attrs
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from hami.errors import HamiError
from hami.wire.annotations import BIND_PHASE, NODE_LOCK, BindPhase

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
        stamp = self.since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{stamp},{self.namespace},{self.name}" if self.name else stamp

    @property
    def anonymous(self) -> bool:
        """A bare-timestamp lock of older HAMi: no pod to ask, held until it expires."""
        return not self.name

    @classmethod
    def decode(cls, value: str) -> LockHolder | None:
        """None for a value that is not a lock (corrupt locks must not wedge a node forever)."""
        parts = value.split(",")
        if len(parts) == 1:  # older HAMi's bare "<RFC3339>" lock
            parts = [parts[0], "", ""]
        elif len(parts) != 3 or not parts[1] or not parts[2]:
            return None
        try:
            since = datetime.fromisoformat(parts[0].replace("Z", "+00:00"))
        except ValueError:
            return None
        return cls(since if since.tzinfo else since.replace(tzinfo=timezone.utc), parts[1], parts[2])


def stale_reason(pod: Mapping[str, Any], holder: LockHolder) -> str | None:
    """Why ``pod`` (the lock holder, as read from the API) no longer needs the node lock; None while
    it may still be between bind and Allocate."""
    meta = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        return f"pod {phase.lower()}"
    if meta.get("deletionTimestamp"):
        return "pod being deleted"
    bind_phase = (meta.get("annotations") or {}).get(BIND_PHASE)
    if bind_phase in (BindPhase.FAILED, BindPhase.SUCCESS):
        return f"bind-phase {bind_phase}"
    created = meta.get("creationTimestamp")
    if bind_phase is None and isinstance(created, str):
        try:
            born = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            return None
        if born > holder.since:
            return "a newer pod of the same name"
    return None


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class NodeLock:
    def __init__(
        self,
        core_v1: CoreV1Api,
        *,
        expiry: timedelta = DEFAULT_EXPIRY,
        holder_active: Callable[[LockHolder], str | None] | None = None,
        clock: Callable[[], datetime] = _now,
        request_timeout: float = 5.0,
    ) -> None:
        self.core_v1 = core_v1
        self.expiry = expiry
        self.holder_active = holder_active or self._holder_active
        """None while the holder may still be binding or allocating, else why its lock is stale."""
        self.clock = clock
        self.request_timeout = request_timeout

    def _holder_active(self, holder: LockHolder) -> str | None:
        try:
            response = self.core_v1.read_namespaced_pod(
                holder.name, holder.namespace, _preload_content=False, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return "pod gone"
            raise
        return stale_reason(json.loads(cast(Any, response).data), holder)

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

    def acquire(
        self, node: str, namespace: str, name: str, *, timeout: float = 0.0, interval: float = 0.1, conflicts: int = 5
    ) -> LockHolder:
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
            stale = "expired" if now - current.since >= self.expiry else None
            if stale is None and current.anonymous:
                raise NodeLockError(
                    f"node {node!r} is locked since {current.since.isoformat()} by an older HAMi (no holder named); it expires after {self.expiry}"
                )
            if stale is None:
                stale = self.holder_active(current)
            if stale is None:
                raise NodeLockError(f"node {node!r} is locked by pod {current.namespace}/{current.name} since {current.since.isoformat()}")
            log.info("event=node_lock_taken_over node=%s previous=%s/%s why=%r", node, current.namespace, current.name, stale)
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
            response = self.core_v1.patch_node(
                node, body, _preload_content=False, _request_timeout=self.request_timeout, _content_type="application/merge-patch+json"
            )
            cast(Any, response).drain_conn()  # read to the end: an unread answer keeps its connection out of the pool
        except ApiException as exc:
            if exc.status == 409:
                raise NodeChanged(f"node {node!r} changed while its lock was being written (409 Conflict)") from None
            raise
