"""The API server's copies of what an extender request names: pending pods and node labels.

kube-scheduler sends the whole Pod in ``/filter``; whoever reaches the extender could send any body.
So the request only *names* the pod (namespace, name, UID) and the extender decides on the copy its
informer received from the API server (:class:`Informed`, fed by the cluster cache's watches). Only
pods not yet bound are kept: the ones filter, prioritize and bind are ever asked about.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from hami.errors import HamiError
from hami.wire.annotations import NODE_LOCK

Pod = Mapping[str, Any]


class UnknownPod(HamiError):
    """The informer has no pending pod by that name and UID (yet, or any more)."""


def _key(pod: Pod) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return meta.get("namespace") or "default", meta.get("name") or ""


def _pending(pod: Pod) -> bool:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    meta = pod.get("metadata") or {}
    return not spec.get("nodeName") and not meta.get("deletionTimestamp") and status.get("phase") not in ("Succeeded", "Failed")


class Informed:
    """Pending pods by namespace/name and node labels by name, as the watches deliver them."""

    def __init__(self) -> None:
        self._pods: dict[tuple[str, str], Pod] = {}
        self._labels: dict[str, dict[str, str]] = {}
        self._locks: dict[str, tuple[str | None, str]] = {}
        self._changed = threading.Condition()

    # ------------------------------------------------------------ fed by the cluster cache

    def apply_pod(self, kind: str, pod: Pod) -> None:
        key = _key(pod)
        with self._changed:
            if kind != "DELETED" and _pending(pod):
                self._pods[key] = pod
            elif (current := self._pods.get(key)) is not None and _uid(current) == _uid(pod):
                del self._pods[key]
            self._changed.notify_all()

    def replace_pods(self, pods: Iterable[Pod]) -> None:
        with self._changed:
            self._pods = {_key(p): p for p in pods if _pending(p)}
            self._changed.notify_all()

    def apply_node(self, kind: str, node: Mapping[str, Any]) -> None:
        meta = node.get("metadata") or {}
        with self._changed:
            if kind == "DELETED":
                self._labels.pop(meta.get("name") or "", None)
                self._locks.pop(meta.get("name") or "", None)
            else:
                self._labels[meta.get("name") or ""] = dict(meta.get("labels") or {})
                self._locks[meta.get("name") or ""] = _lock_of(meta)

    def replace_nodes(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        with self._changed:
            metas = [n.get("metadata") or {} for n in nodes]
            self._labels = {m.get("name") or "": dict(m.get("labels") or {}) for m in metas}
            self._locks = {m.get("name") or "": _lock_of(m) for m in metas}

    # ------------------------------------------------------------ read by the extender

    def pod(self, namespace: str, name: str, uid: str = "", *, wait: float = 0.0) -> Pod:
        """The pending pod ``namespace/name`` (with ``uid`` when given), waiting up to ``wait`` seconds
        for the informer to deliver it; raises :class:`UnknownPod` naming it."""
        deadline = time.monotonic() + wait
        with self._changed:
            while True:
                found = self._pods.get((namespace, name))
                if found is not None and (not uid or _uid(found) == uid):
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        which = f"pod {namespace}/{name}" + (f" (uid {uid})" if uid else "")
        if found is not None:
            raise UnknownPod(f"{which} is not the pod the API server has (uid {_uid(found)}): the request does not match the cluster")
        raise UnknownPod(f"{which} is not a pending pod the scheduler's informer knows: it is not scheduled from a request body alone")

    def node_lock(self, name: str) -> tuple[str | None, str] | None:
        """The node's lock annotation (None when free) and the resourceVersion it was read at, as the
        watch last delivered the node; None for a node not seen. The version makes a write based on
        it conditional: a copy the watch has not caught up with gets a 409, never a wrong answer."""
        with self._changed:
            return self._locks.get(name)

    def node_labels(self, name: str) -> dict[str, str] | None:
        with self._changed:
            labels = self._labels.get(name)
            return dict(labels) if labels is not None else None


def _uid(pod: Pod) -> str:
    return str((pod.get("metadata") or {}).get("uid") or "")


def _lock_of(meta: Mapping[str, Any]) -> tuple[str | None, str]:
    return (meta.get("annotations") or {}).get(NODE_LOCK), str(meta.get("resourceVersion") or "")
