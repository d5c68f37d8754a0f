"""Keeps :class:`ClusterState` in step with the API server through two list-and-watch loops (nodes, pods)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, cast

from kubernetes.client import CoreV1Api

from hami.kube import release
from hami.listwatch import ListWatch
from hami.scheduler.informed import Informed
from hami.scheduler.state import ClusterState

log = logging.getLogger(__name__)
DUPLICATE_DEVICE_REASON = "DuplicateDeviceID"


class ClusterCache:
    def __init__(self, state: ClusterState, core_v1: CoreV1Api, *, resync_seconds: float = 300.0, watch_timeout: int = 240) -> None:
        self.state = state
        self.core_v1 = core_v1
        state.on_duplicate = self._duplicate_event
        self.informed = Informed()
        """The API server's copies of pending pods and node labels: what the extender decides on."""
        self.nodes = ListWatch(
            "nodes", core_v1.list_node, self._node_event, self._node_list, resync_seconds=resync_seconds, watch_timeout=watch_timeout
        )
        self.pods = ListWatch(
            "pods",
            core_v1.list_pod_for_all_namespaces,
            self._pod_event,
            self._pod_list,
            resync_seconds=resync_seconds,
            watch_timeout=watch_timeout,
        )

    def _node_list(self, items: list[Mapping[str, Any]]) -> None:
        self.informed.replace_nodes(items)
        self.state.replace_all(nodes=items)

    def _pod_list(self, items: list[Mapping[str, Any]]) -> None:
        self.informed.replace_pods(items)
        self.state.replace_all(pods=items)

    def _node_event(self, kind: str, node: Mapping[str, Any]) -> None:
        self.informed.apply_node(kind, node)
        if kind == "DELETED":
            self.state.delete_node((node.get("metadata") or {}).get("name", ""))
        else:
            self.state.apply_node(node)

    def _duplicate_event(self, node: str, other: str, device_id: str) -> None:
        """A Warning Event on the refused node naming the node that registered the id first (best effort)."""
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{node}.", "namespace": "default"},
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node},
            "reason": DUPLICATE_DEVICE_REASON,
            "message": f"device id {device_id!r} is already registered by node {other!r}: the devices of this node's registration "
            "that includes it are not schedulable until one of the two nodes stops registering it",
            "type": "Warning",
            "source": {"component": "hami-scheduler"},
            "reportingComponent": "hami-scheduler",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            release(self.core_v1.create_namespaced_event("default", cast(Any, body), _preload_content=False, _request_timeout=5.0))
        except Exception as exc:
            log.warning("event=event_write_failed node=%s error=%r", node, f"{type(exc).__name__}: {exc}")

    def _pod_event(self, kind: str, pod: Mapping[str, Any]) -> None:
        self.informed.apply_pod(kind, pod)
        if kind == "DELETED":
            self.state.delete_pod((pod.get("metadata") or {}).get("uid", ""))
        else:
            self.state.apply_pod(pod)

    def start(self) -> ClusterCache:
        self.nodes.start()
        self.pods.start()
        return self

    def wait_synced(self, timeout: float = 10.0) -> bool:
        return self.nodes.wait_synced(timeout) and self.pods.wait_synced(timeout)

    @property
    def synced(self) -> bool:
        return self.nodes.synced.is_set() and self.pods.synced.is_set()

    def stop(self) -> None:
        self.nodes.stop()
        self.pods.stop()
