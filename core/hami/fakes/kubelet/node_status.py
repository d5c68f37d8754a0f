"""Mirror the device plugin resources into the Node object, as kubelet's node status updater does.

Kubelet reports ``capacity`` = all devices (healthy and unhealthy) and ``allocatable`` = healthy devices
for each device plugin resource, via a strategic-merge patch on the node's ``status`` subresource; a
resource that disappeared is removed (patched to null).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

#: Capacity a freshly registered fake node reports besides device plugin resources.
DEFAULT_NODE_CAPACITY = {"cpu": "16", "memory": "64Gi", "pods": "110"}


class NodeStatusMirror:
    """Writes per-resource counts into ``status.capacity``/``status.allocatable`` of one node."""

    def __init__(self, core_v1: Any, node_name: str) -> None:
        self.core_v1 = core_v1
        self.node_name = node_name
        self._lock = threading.Lock()
        self._reported: set[str] = set()

    def register_node(self) -> None:
        """Create the Node if it does not exist yet (kubelet self-registration)."""
        from kubernetes.client import ApiException

        try:
            self.core_v1.read_node(self.node_name)
            return
        except ApiException as err:
            if err.status != 404:
                raise
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux"},
            },
        }
        try:
            self.core_v1.create_node(body)
        except ApiException as err:
            if err.status != 409:
                raise
        self.core_v1.patch_node_status(
            self.node_name,
            {
                "status": {
                    "capacity": dict(DEFAULT_NODE_CAPACITY),
                    "allocatable": dict(DEFAULT_NODE_CAPACITY),
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                }
            },
        )
        log.info("registered node %s", self.node_name)

    def sync(self, counts: dict[str, tuple[int, int]]) -> None:
        """Report ``{resource: (capacity, allocatable)}``; resources reported before and absent now are removed."""
        with self._lock:
            capacity: dict[str, str | None] = {r: str(c) for r, (c, _) in counts.items()}
            allocatable: dict[str, str | None] = {r: str(a) for r, (_, a) in counts.items()}
            for gone in self._reported - counts.keys():
                capacity[gone] = None
                allocatable[gone] = None
            if not capacity:
                return
            try:
                self.core_v1.patch_node_status(self.node_name, {"status": {"capacity": capacity, "allocatable": allocatable}})
            except Exception:
                log.exception("patching status of node %s failed", self.node_name)
                return
            self._reported = set(counts)
            log.debug("node %s: capacity %s allocatable %s", self.node_name, capacity, allocatable)
