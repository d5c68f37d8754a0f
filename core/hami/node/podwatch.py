"""Pods leaving this node: run each backend's release step with the grants the pod held.

A watch on the pods bound to this node (``spec.nodeName``); a pod that is deleted, or that reaches
``Succeeded``/``Failed``, has every granted container released once (``hami_release`` is
idempotent, so a release seen twice after a relist is harmless). A deleted pod that still holds
the node lock frees it at once instead of blocking the node until the lock expires.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from hami.errors import AnnotationError
from hami.node.allocate import describe_api_error, pod_key
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
    ) -> None:
        self.manager = manager
        self.core_v1 = core_v1
        self.node = node
        self.request_timeout = request_timeout
        self.watch_timeout = watch_timeout
        self.backoff = backoff or Backoff()
        self.lock = NodeLock(core_v1, request_timeout=request_timeout)
        self._released: OrderedDict[str, None] = OrderedDict()
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()
        """Set once the first list has been processed (tests wait for it)."""

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hami-pod-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()
            except Exception:  # closing a stream another thread reads: any error just ends it
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------ the loop
    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                    self.synced.set()
                version = self._watch(version)
                self.backoff.reset()
            except _Expired:
                log.info("event=pod_watch_expired node=%s", self.node)
                version = None
            except Exception as exc:
                if self._stop.is_set():
                    return
                delay = self.backoff.next()
                log.warning("event=pod_watch_failed node=%s error=%r retry_s=%.1f", self.node, describe_api_error(exc), delay)
                version = None  # relist: deletions during the gap are found as missing terminal pods only
                self._stop.wait(delay)

    def _selector(self) -> str:
        return f"spec.nodeName={self.node}"

    def _list(self) -> str:
        resp = self.core_v1.list_pod_for_all_namespaces(field_selector=self._selector(), _preload_content=False, _request_timeout=self.request_timeout)
        data = json.loads(resp.data)
        for pod in data.get("items") or []:
            if (pod.get("status") or {}).get("phase") in _TERMINAL:
                self.release(pod)
        return (data.get("metadata") or {}).get("resourceVersion") or "0"

    def _watch(self, version: str) -> str:
        resp = self.core_v1.list_pod_for_all_namespaces(
            field_selector=self._selector(),
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _preload_content=False,
        )
        self._resp = resp
        try:
            for line in iter_resp_lines(resp):
                if self._stop.is_set():
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                kind = event.get("type")
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired()
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind == "DELETED":
                    self.release(obj)
                    self._free_lock(obj)
                elif kind == "MODIFIED" and (obj.get("status") or {}).get("phase") in _TERMINAL:
                    self.release(obj)
        finally:
            self._resp = None
            resp.release_conn()
        return version

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
                    self.manager.release(grants, pod, container)
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


class _Expired(Exception):
    """The watch's resourceVersion is too old (410): relist."""
