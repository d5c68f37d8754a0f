"""Pods leaving this node: run each backend's release step with the grants the pod held.

A list-and-watch (:mod:`hami.listwatch`) of the pods bound to this node (``spec.nodeName``); a pod
that is deleted, or that reaches ``Succeeded``/``Failed``, has every granted container released
once (``hami_release`` is idempotent, so a release seen twice after a relist is harmless). A deleted
pod that still holds the node lock frees it at once instead of blocking the node until the lock
expires. The watch resumes after errors, so deletions during an outage still arrive as events.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client import CoreV1Api

from hami.errors import AnnotationError
from hami.listwatch import ListWatch
from hami.node.allocate import describe_api_error, pod_key
from hami.node.devices import Discovery
from hami.node.registration import Backoff
from hami.plugin.manager import BackendManager
from hami.wire.allocation import ordered_containers, read_allocated
from hami.wire.annotations import ASSIGNED_NODE
from hami.wire.nodelock import NodeLock

log = logging.getLogger(__name__)

_TERMINAL = ("Succeeded", "Failed")
_REMEMBER = 10_000


class PodReleaser:
    """Watches this node's pods in a thread and calls ``hami_release`` for the ones that are gone."""

    def __init__(
        self,
        manager: BackendManager,
        core_v1: CoreV1Api,
        node: str,
        *,
        request_timeout: float = 5.0,
        watch_timeout: int = 300,
        backoff: Backoff | None = None,
        discovery: Callable[[], Discovery] | None = None,
    ) -> None:
        self.manager = manager
        self.discovery = discovery
        """The agent's current discovery: the devices and node contexts ``hami_release`` gets."""
        self.core_v1 = core_v1
        self.node = node
        self.request_timeout = request_timeout
        self.lock = NodeLock(core_v1, request_timeout=request_timeout)
        self._released: OrderedDict[str, None] = OrderedDict()
        delays = backoff or Backoff()
        self.watch = ListWatch(
            f"pods-on-{node}",
            core_v1.list_pod_for_all_namespaces,
            self._event,
            self._listed,
            selector={"field_selector": f"spec.nodeName={node}"},
            resync_seconds=None,
            watch_timeout=watch_timeout,
            request_timeout=request_timeout,
            backoff=(delays.initial, delays.maximum),
        )
        self.synced = self.watch.synced
        """Set once the first list has been processed (tests wait for it)."""

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.watch.start()

    def stop(self) -> None:
        self.watch.stop()

    # ------------------------------------------------------------ events
    def _listed(self, pods: list[Mapping[str, Any]]) -> None:
        for pod in pods:
            if (pod.get("status") or {}).get("phase") in _TERMINAL:
                self.release(pod)

    def _event(self, kind: str, pod: Mapping[str, Any]) -> None:
        if kind == "DELETED":
            self.release(pod)
            self._free_lock(pod)
        elif kind == "MODIFIED" and (pod.get("status") or {}).get("phase") in _TERMINAL:
            self.release(pod)

    # ------------------------------------------------------------ releasing
    def release(self, pod: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Call ``hami_release`` for every granted container of ``pod`` once; returns (vendor, container) pairs."""
        meta = pod.get("metadata") or {}
        uid = meta.get("uid") or pod_key(pod)
        annotations = meta.get("annotations") or {}
        if uid in self._released or annotations.get(ASSIGNED_NODE) != self.node:
            return []
        self._released[uid] = None
        while len(self._released) > _REMEMBER:
            self._released.popitem(last=False)
        try:
            allocated = read_allocated(annotations, self.manager.kinds)
        except AnnotationError as exc:
            log.warning("event=release_skipped pod=%s error=%r", pod_key(pod), str(exc))
            return []
        containers = ordered_containers(pod)
        done = []
        for vendor, per_container in sorted(allocated.items()):
            for index, grants in enumerate(per_container):
                if not grants:
                    continue
                container = containers[index] if index < len(containers) else {"name": f"#{index}"}
                try:
                    if self.discovery is None:
                        self.manager.release(grants, pod, container, self.node)
                    else:
                        found = self.discovery()
                        context = found.contexts.get(self.manager.owner(vendor).name) or self.node
                        self.manager.release(grants, pod, container, context, found.granted(grants, missing_ok=True))
                except Exception as exc:  # one backend's failure must not stop the others' release
                    log.warning("event=release_failed pod=%s container=%s vendor=%s error=%r", pod_key(pod), container.get("name"), vendor, f"{type(exc).__name__}: {exc}")
                    continue
                done.append((vendor, str(container.get("name"))))
        if done:
            log.info("event=pod_released pod=%s containers=%s", pod_key(pod), ",".join(f"{v}:{c}" for v, c in done))
        return done

    def _free_lock(self, pod: Mapping[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        try:
            if self.lock.release(self.node, meta.get("namespace") or "default", meta.get("name")):
                log.info("event=lock_freed_for_deleted_pod node=%s pod=%s", self.node, pod_key(pod))
        except Exception as exc:
            log.warning("event=lock_release_failed node=%s pod=%s error=%r", self.node, pod_key(pod), describe_api_error(exc))
