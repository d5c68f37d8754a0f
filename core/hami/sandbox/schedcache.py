"""kube-scheduler's cache for the sandbox: nodes and what the pods on each ask, kept by watches.

Listing every node and every pod for each pod made a run grow with pods squared (5,000 pods: 12.5
million pod encodings). Like kube-scheduler, the sandbox watches nodes and pods once and keeps, per
node, the summed requests of its non-terminal pods; a pod it just bound counts at once ("assumed")
until the watch shows it bound, so the next pod never sees the capacity as still free.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from hami.errors import HamiError
from hami.listwatch import ListWatch
from hami.sandbox.kubescheduler import pod_requests

_TERMINAL = ("Succeeded", "Failed")


class SchedulerCache:
    """Node objects and per-node pod requests from a node and a pod watch; :meth:`assume` counts a bind at once."""

    def __init__(self, core_v1: Any, *, request_timeout: float = 30.0) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, Mapping[str, Any]] = {}
        self._pods: dict[str, tuple[str, dict[str, Decimal]]] = {}
        """uid → (node, requests) of every bound, non-terminal pod."""
        self._assumed: set[str] = set()
        self._requested: dict[str, dict[str, Decimal]] = {}
        self._counts: dict[str, int] = {}
        self._watches = (
            ListWatch("sandbox-nodes", core_v1.list_node, self._node_event, self._node_list, request_timeout=request_timeout),
            ListWatch(
                "sandbox-pods", core_v1.list_pod_for_all_namespaces, self._pod_event, self._pod_list, request_timeout=request_timeout
            ),
        )

    def start(self, timeout: float = 30.0) -> SchedulerCache:
        for watch in self._watches:
            watch.start()
        for watch in self._watches:
            if not watch.wait_synced(timeout):
                raise HamiError(f"sandbox: the {watch.name} watch did not sync within {timeout:.0f} s")
        return self

    def stop(self) -> None:
        for watch in self._watches:
            watch.stop()

    # ------------------------------------------------------------ what _schedule reads

    def snapshot(self) -> tuple[dict[str, Mapping[str, Any]], dict[str, dict[str, Decimal]], dict[str, int]]:
        """(node name → Node, node → summed requests, node → pod count), copied under the lock."""
        with self._lock:
            return dict(self._nodes), {n: dict(r) for n, r in self._requested.items()}, dict(self._counts)

    def assume(self, pod: Mapping[str, Any], node: str) -> None:
        """The sandbox bound ``pod`` to ``node``: count it now, before the watch says so."""
        uid = pod["metadata"]["uid"]
        with self._lock:
            self._assumed.add(uid)
            self._set(uid, (node, pod_requests(pod)))

    def forget(self, pod: Mapping[str, Any]) -> None:
        """The pod ended (kubelet failed it, or it was deleted): it stops counting now."""
        uid = pod["metadata"]["uid"]
        with self._lock:
            self._assumed.discard(uid)
            self._set(uid, None)

    # ------------------------------------------------------------ watch handlers

    def _set(self, uid: str, entry: tuple[str, dict[str, Decimal]] | None) -> None:
        old = self._pods.pop(uid, None)
        if old is not None:
            node, requests = old
            total = self._requested.setdefault(node, {})
            for name, value in requests.items():
                total[name] = total.get(name, Decimal(0)) - value
            self._counts[node] = self._counts.get(node, 1) - 1
        if entry is not None:
            node, requests = entry
            self._pods[uid] = entry
            total = self._requested.setdefault(node, {})
            for name, value in requests.items():
                total[name] = total.get(name, Decimal(0)) + value
            self._counts[node] = self._counts.get(node, 0) + 1

    def _apply_pod(self, kind: str, pod: Mapping[str, Any]) -> None:
        uid = (pod.get("metadata") or {}).get("uid")
        if not uid:
            return
        node = (pod.get("spec") or {}).get("nodeName")
        if kind == "DELETED" or (pod.get("status") or {}).get("phase") in _TERMINAL:
            self._assumed.discard(uid)
            self._set(uid, None)
        elif node:
            self._assumed.discard(uid)
            if self._pods.get(uid, ("",))[0] != node or uid not in self._pods:
                self._set(uid, (node, pod_requests(pod)))
        elif uid not in self._assumed:
            self._set(uid, None)

    def _pod_event(self, kind: str, pod: Mapping[str, Any]) -> None:
        with self._lock:
            self._apply_pod(kind, pod)

    def _pod_list(self, pods: list[Mapping[str, Any]]) -> None:
        with self._lock:
            seen = {(p.get("metadata") or {}).get("uid") for p in pods}
            for uid in [u for u in self._pods if u not in seen and u not in self._assumed]:
                self._set(uid, None)
            for pod in pods:
                self._apply_pod("ADDED", pod)

    def _node_event(self, kind: str, node: Mapping[str, Any]) -> None:
        name = node["metadata"]["name"]
        with self._lock:
            if kind == "DELETED":
                self._nodes.pop(name, None)
            else:
                self._nodes[name] = node

    def _node_list(self, nodes: list[Mapping[str, Any]]) -> None:
        with self._lock:
            self._nodes = {n["metadata"]["name"]: n for n in nodes}
