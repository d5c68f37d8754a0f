"""Keeps :class:`ClusterState` in step with the API server through two list-and-watch loops (nodes, pods)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes.client import CoreV1Api

from hami.listwatch import ListWatch
from hami.scheduler.informed import Informed
from hami.scheduler.state import ClusterState


class ClusterCache:
    def __init__(self, state: ClusterState, core_v1: CoreV1Api, *, resync_seconds: float = 300.0, watch_timeout: int = 240) -> None:
        self.state = state
        self.informed = Informed()
        """The API server's copies of pending pods and node labels: what the extender decides on."""
        self.nodes = ListWatch("nodes", core_v1.list_node, self._node_event, self._node_list,
                               resync_seconds=resync_seconds, watch_timeout=watch_timeout)
        self.pods = ListWatch("pods", core_v1.list_pod_for_all_namespaces, self._pod_event, self._pod_list,
                              resync_seconds=resync_seconds, watch_timeout=watch_timeout)

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

    def _pod_event(self, kind: str, pod: Mapping[str, Any]) -> None:
        self.informed.apply_pod(kind, pod)
        if kind == "DELETED":
            self.state.forget_pod((pod.get("metadata") or {}).get("uid", ""))
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
