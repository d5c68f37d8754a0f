"""Pods leaving this node: run each backend's release step with the grants the pod held.

A list-and-watch (:mod:`hami.listwatch`) of the pods bound to this node (``spec.nodeName``); a pod
that is deleted, or that reaches ``Succeeded``/``Failed``, has every granted container released
once. A deleted pod that still holds the node lock frees it at once instead of blocking the node
until the lock expires.

A pod deleted while the agent is down leaves no trace in the API server, so the agent keeps a
:class:`PodLedger` in its state directory: every pod on this node with an allocation record
(written when the watch first sees it, before kubelet's Allocate) and the pods already released.
Every list (start-up, and each relist after a watch outage) *reconciles*: a ledger pod the API
server no longer has is released with the record it had, unless kubelet's PodResources API still
lists it (a force-deleted pod being torn down: retried later); a pod still running is re-adopted —
nothing is prepared or released again. Released pods are remembered while the API server still
has them, so a restart does not release a finished pod twice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from kubernetes.client import CoreV1Api

from hami.errors import AnnotationError
from hami.listwatch import ListWatch
from hami.node.allocate import describe_api_error, pod_key
from hami.node.devices import Discovery
from hami.node.podresources import PodResources, PodResourcesClient, PodResourcesError
from hami.node.registration import Backoff
from hami.plugin.manager import BackendManager
from hami.wire.allocation import ordered_containers, read_allocated
from hami.wire.annotations import ASSIGNED_NODE
from hami.wire.nodelock import NodeLock

log = logging.getLogger(__name__)

_TERMINAL = ("Succeeded", "Failed")
_REMEMBER = 10_000
LEDGER_FILE = "hami-agent/pods.json"
"""The ledger's path under the agent's state directory (``AgentOptions.state_dir``)."""


def _ledger_copy(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What a release needs of a pod, and what the backends' ``hami_release`` reads: identity,
    annotations (the allocation record), labels and the containers."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    return {
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "annotations", "labels") if k in meta},
        "spec": {k: spec[k] for k in ("nodeName", "initContainers", "containers") if k in spec},
    }


class PodLedger:
    """The pods this node holds devices for, and the ones already released, kept in a JSON file.

    Written atomically (temp file + rename) on every change; a file that cannot be read starts an
    empty ledger (logged), one that cannot be written keeps the ledger in memory (logged): the
    watch still releases what it sees, only a deletion while the agent is down would be missed.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.held: dict[str, dict[str, Any]] = {}
        self.released: dict[str, str] = {}  # uid -> namespace/name
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            held, released = data.get("held") or {}, data.get("released") or {}
            if isinstance(held, dict) and isinstance(released, dict):
                self.held = {str(k): v for k, v in held.items() if isinstance(v, dict)}
                self.released = {str(k): str(v) for k, v in released.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("event=ledger_unreadable path=%s error=%r", path, f"{type(exc).__name__}: {exc}")

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps({"held": self.held, "released": self.released}, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("event=ledger_write_failed path=%s error=%r", self.path, f"{type(exc).__name__}: {exc}")

    def hold(self, uid: str, pod: Mapping[str, Any]) -> None:
        copy = _ledger_copy(pod)
        with self._lock:
            if uid in self.released or self.held.get(uid) == copy:
                return
            self.held[uid] = copy
            self._save()

    def mark_released(self, uid: str, key: str) -> None:
        with self._lock:
            self.held.pop(uid, None)
            self.released[uid] = key
            self._save()

    def is_released(self, uid: str) -> bool:
        with self._lock:
            return uid in self.released

    def forget(self, uid: str) -> None:
        with self._lock:
            if self.held.pop(uid, None) is not None or self.released.pop(uid, None) is not None:
                self._save()

    def forget_released(self, keep: set[str]) -> None:
        """Drop the memory of released pods the API server no longer has (they cannot come back)."""
        with self._lock:
            gone = [uid for uid in self.released if uid not in keep]
            for uid in gone:
                del self.released[uid]
            if gone:
                self._save()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self.held)


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
        ledger: Path | None = None,
        pod_resources: PodResourcesClient | None = None,
        deferred_retry: float = 10.0,
    ) -> None:
        self.manager = manager
        self.ledger = PodLedger(ledger)
        """Pods with devices on this node and pods released (file ``ledger``; None: in memory only)."""
        self.pod_resources = pod_resources
        """Kubelet's PodResources API: a pod it still lists keeps its devices (None: not asked)."""
        self.deferred_retry = deferred_retry
        """Seconds until a reconcile again when kubelet still held a deleted pod's devices."""
        self._retry: threading.Timer | None = None
        self._stopped = False
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
        self._stopped = True
        if self._retry is not None:
            self._retry.cancel()
        self.watch.stop()

    def _schedule_retry(self) -> None:
        if self._stopped or (self._retry is not None and self._retry.is_alive()):
            return
        self._retry = threading.Timer(self.deferred_retry, self._reconcile_now)
        self._retry.daemon = True
        self._retry.start()

    def _reconcile_now(self) -> None:
        """List this node's pods and reconcile (a deferred release's retry); failures retry later."""
        if self._stopped:
            return
        try:
            response = self.core_v1.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self.node}", _preload_content=False, _request_timeout=self.request_timeout
            )
            self.reconcile(list(json.loads(cast(Any, response).data).get("items") or []))
        except Exception as exc:
            log.warning("event=reconcile_failed node=%s error=%r", self.node, describe_api_error(exc))
            self._schedule_retry()

    # ------------------------------------------------------------ events
    def _listed(self, pods: list[Mapping[str, Any]]) -> None:
        self.reconcile(pods)

    def _event(self, kind: str, pod: Mapping[str, Any]) -> None:
        if kind == "DELETED":
            self.release(pod)
            self._free_lock(pod)
            uid = (pod.get("metadata") or {}).get("uid")
            if uid:
                self.ledger.forget(uid)  # deleted: it cannot come back, the ledger need not remember it
        elif (pod.get("status") or {}).get("phase") in _TERMINAL:
            self.release(pod)
        else:
            self._adopt(pod)

    # ------------------------------------------------------------ reconciling
    def _adopt(self, pod: Mapping[str, Any]) -> bool:
        """Record a pod of this node that carries an allocation record; True when it does."""
        meta = pod.get("metadata") or {}
        uid = meta.get("uid")
        annotations = meta.get("annotations") or {}
        if not uid or annotations.get(ASSIGNED_NODE) != self.node:
            return False
        try:
            allocated = read_allocated(annotations, self.manager.kinds)
        except AnnotationError:
            return False
        if not any(grants for per in allocated.values() for grants in per):
            return False
        self.ledger.hold(uid, pod)
        return True

    def _kubelet_pods(self) -> dict[str, PodResources] | None:
        if self.pod_resources is None:
            return None
        try:
            return {p.key: p for p in self.pod_resources.list()}
        except PodResourcesError as exc:
            log.warning("event=pod_resources_unavailable node=%s error=%r", self.node, str(exc))
            return None

    def reconcile(self, pods: list[Mapping[str, Any]]) -> dict[str, list[str]]:
        """Bring the ledger in line with a full list of this node's pods (see the module docstring).

        Returns the pod keys per outcome: ``released``, ``adopted``, ``deferred`` (kubelet still holds them).
        """
        outcome: dict[str, list[str]] = {"released": [], "adopted": [], "deferred": []}
        listed: dict[str, Mapping[str, Any]] = {}
        for pod in pods:
            uid = (pod.get("metadata") or {}).get("uid")
            if uid:
                listed[uid] = pod
            if (pod.get("status") or {}).get("phase") in _TERMINAL:
                if self.release(pod):
                    outcome["released"].append(pod_key(pod))
            elif self._adopt(pod):
                outcome["adopted"].append(pod_key(pod))
        gone = {uid: pod for uid, pod in self.ledger.snapshot().items() if uid not in listed}
        kubelet = self._kubelet_pods() if gone else None
        for uid, pod in sorted(gone.items(), key=lambda item: pod_key(item[1])):
            key = pod_key(pod)
            if kubelet is not None and key in kubelet and kubelet[key].device_ids():
                log.info("event=release_deferred pod=%s reason=%r", key, "deleted from the API server but kubelet still lists its devices")
                outcome["deferred"].append(key)
                continue
            log.info("event=release_missed_deletion pod=%s uid=%s", key, uid)
            self.release(pod)
            self.ledger.mark_released(uid, key)  # even when nothing could be released: the record is all there was
            outcome["released"].append(key)
        self.ledger.forget_released(set(listed))
        if outcome["deferred"]:
            self._schedule_retry()
        if any(outcome.values()):
            log.info("event=pods_reconciled node=%s %s", self.node, " ".join(f"{k}={','.join(v) or '-'}" for k, v in outcome.items()))
        return outcome

    # ------------------------------------------------------------ releasing
    def release(self, pod: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Call ``hami_release`` for every granted container of ``pod`` once; returns (vendor, container) pairs."""
        meta = pod.get("metadata") or {}
        uid = meta.get("uid") or pod_key(pod)
        annotations = meta.get("annotations") or {}
        if uid in self._released or annotations.get(ASSIGNED_NODE) != self.node or self.ledger.is_released(uid):
            return []
        self._released[uid] = None
        while len(self._released) > _REMEMBER:
            self._released.popitem(last=False)
        if meta.get("uid"):
            self.ledger.mark_released(uid, pod_key(pod))
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
                    log.warning(
                        "event=release_failed pod=%s container=%s vendor=%s error=%r",
                        pod_key(pod),
                        container.get("name"),
                        vendor,
                        f"{type(exc).__name__}: {exc}",
                    )
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
