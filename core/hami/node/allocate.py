"""Allocate: which pod kubelet is asking for, and what its next container gets.

Kubelet's Allocate names devices but not the pod. Like HAMi, the agent finds the pod through state
the scheduler left in the API objects: the pod named in the node lock, else the pods on this node in
``bind-phase=allocating``. Nothing is kept in memory between calls, so an agent restart loses
nothing. Every failure is an :class:`AllocateError` carrying the gRPC code and a message a person can
act on. Kubelet does not call Allocate again for a pod whose Allocate failed (the pod fails with
``UnexpectedAdmissionError``), so *every* failure once the pod is known marks it
``bind-phase=failed``, releases the node lock and leaves an ``AllocationFailed`` event. Errors of the
API client (:func:`is_transient`: no connection, a timeout, 5xx, 429) are first retried inside the
call (``api_retries``); when the budget is spent kubelet gets UNAVAILABLE and those three writes,
if the API server refuses them too, are retried in the background until ``cleanup_deadline``
(then the lock's expiry and the scheduler's takeover of a failed pod's lock take over). A backend's
failure, even an ``OSError`` from its host, is the backend's and is not retried.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, cast

import grpc
import urllib3
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from hami.errors import AnnotationError, ContractError, HamiError
from hami.kube import release
from hami.node.deviceplugin.v1beta1 import api_pb2
from hami.node.devices import Discovery, device_of_slot
from hami.node.edits import to_response
from hami.plugin.manager import BackendManager
from hami.plugin.model import DeviceKind, Grant, NodeContext
from hami.wire import partitions
from hami.wire.allocation import (
    is_fully_allocated,
    next_container,
    ordered_containers,
    verify_allocation,
)
from hami.wire.annotations import ASSIGNED_NODE, BIND_PHASE, BIND_TIME, BindPhase
from hami.wire.nodelock import LockHolder, NodeLock
from hami.wire.signing import SignatureError, SigningKeys

log = logging.getLogger(__name__)

Pod = dict[str, Any]
EVENT_REASON = "AllocationFailed"
MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "hami-agent"


class AllocateError(HamiError):
    """Allocate cannot be served; ``code`` is the gRPC status kubelet sees, the message is the reason."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.permanent = permanent


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def _annotations(pod: Mapping[str, Any]) -> dict[str, str]:
    value = (pod.get("metadata") or {}).get("annotations") or {}
    return {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else {}


def _bind_time(pod: Mapping[str, Any]) -> float:
    try:
        return float(_annotations(pod).get(BIND_TIME, ""))
    except ValueError:
        return float("inf")


def is_transient(exc: BaseException) -> bool:
    """An API client failure worth retrying: no connection, a timeout, 5xx or 429. Anything else
    (a backend's ``PermissionError``, a bug) is not the API server's and retrying will not help."""
    if isinstance(exc, ApiException):
        return exc.status in (0, None, 429) or (exc.status or 0) >= 500
    return isinstance(exc, urllib3.exceptions.HTTPError)


def describe_api_error(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            message = ""
        return f"HTTP {exc.status} {exc.reason or ''}{': ' + message if message else ''}".strip()
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


class Allocator:
    """The Allocate and GetPreferredAllocation logic of every resource the agent serves."""

    def __init__(
        self,
        manager: BackendManager,
        core_v1: CoreV1Api,
        node: str,
        keys: SigningKeys | None,
        *,
        request_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        discovery: Callable[[], Discovery] | None = None,
        api_retries: int = 3,
        retry_interval: float = 0.2,
        cleanup_deadline: float = 300.0,
    ) -> None:
        self.manager = manager
        self.api_retries = api_retries
        self.retry_interval = retry_interval
        self.cleanup_deadline = cleanup_deadline
        """Seconds the background clean-up of a pod failed by an unreachable API server keeps trying."""
        self.discovery = discovery
        """The agent's current discovery: the granted devices and node contexts the runtime hooks get
        (None: the manager discovers the node named in the pod's annotations itself)."""
        self.core_v1 = core_v1
        self.node = node
        self.keys = keys.verifier() if keys is not None else None  # an agent only verifies, even if handed a private key
        self.request_timeout = request_timeout
        self.clock = clock
        self.lock = NodeLock(core_v1, request_timeout=request_timeout)
        self._mutex = threading.Lock()  # kubelet admits one pod at a time; so do we
        self._lock_seen: tuple[LockHolder | None, str] = (None, "")  # the lock as the current call read it
        self._event_written: dict[str, bool] = {}  # per pod failed in the background: its event is recorded

    # ------------------------------------------------------------ API access (raw JSON: what hooks take)
    def _read_pod(self, namespace: str, name: str) -> Pod | None:
        try:
            resp = self.core_v1.read_namespaced_pod(name, namespace, _preload_content=False, _request_timeout=self.request_timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(cast(Any, resp).data)

    def _node_pods(self) -> list[Pod]:
        resp = self.core_v1.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.node}", _preload_content=False, _request_timeout=self.request_timeout
        )
        return list(json.loads(cast(Any, resp).data).get("items") or [])

    def _lock_holder(self) -> LockHolder | None:
        holder, version = self.lock.holder(self.node)
        self._lock_seen = (holder, version)
        return holder

    # ------------------------------------------------------------ finding the pod
    def _is_pending(self, pod: Mapping[str, Any], kind: DeviceKind) -> bool:
        """Allocating on this node with a container left for ``kind``; garbage raises AnnotationError."""
        ann = _annotations(pod)
        if ann.get(BIND_PHASE) != BindPhase.ALLOCATING or ann.get(ASSIGNED_NODE) != self.node:
            return False
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            return False
        return next_container(ann, kind) is not None

    def find_pending_pod(self, kind: DeviceKind) -> Pod:
        """The pod kubelet is admitting for ``kind``: the lock holder, else the oldest allocating pod."""
        resource = kind.resources.count
        holder = self._lock_holder()
        lock_state = "lock free"
        if holder is not None and holder.anonymous:
            lock_state = "lock held by an older HAMi (no pod named)"
        elif holder is not None:
            lock_state = f"lock held by {holder.namespace}/{holder.name}"
            pod = self._read_pod(holder.namespace, holder.name)
            if pod is None:
                lock_state += " (pod gone)"
            else:
                try:
                    if self._is_pending(pod, kind):
                        return pod
                except AnnotationError:
                    return pod  # the holder itself carries garbage: Allocate fails it with the reason
                lock_state += f" (nothing left to allocate for {resource})"
        candidates = []
        for pod in self._node_pods():
            try:
                if self._is_pending(pod, kind):
                    candidates.append(pod)
            except AnnotationError as exc:
                log.warning("event=pod_annotation_garbage pod=%s error=%r", pod_key(pod), str(exc))
        if not candidates:
            raise AllocateError(
                f"no pending pod on node {self.node} for {resource} ({lock_state}, no pod in bind-phase {BindPhase.ALLOCATING})",
                grpc.StatusCode.NOT_FOUND,
            )
        candidates.sort(key=lambda p: (_bind_time(p), (p.get("metadata") or {}).get("creationTimestamp") or "", pod_key(p)))
        if len(candidates) > 1:
            log.info(
                "event=several_pending_pods node=%s resource=%s chosen=%s others=%s",
                self.node,
                resource,
                pod_key(candidates[0]),
                ",".join(pod_key(p) for p in candidates[1:]),
            )
        return candidates[0]

    # ------------------------------------------------------------ Allocate
    def allocate(self, resource: str, devices_ids: Sequence[str]) -> api_pb2.ContainerAllocateResponse:
        kind = self._kind(resource)
        with self._mutex:
            started = time.perf_counter()
            pod = self._retrying(lambda: self.find_pending_pod(kind), f"cannot find the pod to allocate {resource} for on node {self.node}")
            conflicts = 3
            api_errors = 0
            while True:
                try:
                    response, container = self._allocate_for(pod, kind, devices_ids)
                    log.info(
                        "event=allocated pod=%s container=%s resource=%s devices=%s ms=%.1f",
                        pod_key(pod),
                        container,
                        resource,
                        ",".join(devices_ids),
                        1000 * (time.perf_counter() - started),
                    )
                    return response
                except _Conflict:
                    conflicts -= 1
                    if conflicts <= 0:
                        raise self._give_up(
                            pod,
                            AllocateError(
                                f"pod {pod_key(pod)}: the pod kept changing while its {resource} devices were allocated",
                                grpc.StatusCode.ABORTED,
                            ),
                        ) from None
                    try:  # someone wrote the pod in between: start over from what is there now
                        reread = self._retrying(functools.partial(self._reread, pod), f"pod {pod_key(pod)}: cannot re-read it")
                    except AllocateError as exc:
                        raise self._give_up(pod, exc) from None
                    if reread is None:
                        raise self._give_up(
                            pod, AllocateError(f"pod {pod_key(pod)} was deleted while it was being allocated", grpc.StatusCode.NOT_FOUND)
                        ) from None
                    if not self._safe_pending(reread, kind):
                        raise self._give_up(
                            reread,
                            AllocateError(
                                f"pod {pod_key(pod)} is no longer waiting for {resource} devices on {self.node} (changed while it was being allocated)",
                                grpc.StatusCode.ABORTED,
                            ),
                        ) from None
                    pod = reread
                except AllocateError as exc:
                    raise self._give_up(pod, exc) from None
                except Exception as exc:
                    if is_transient(exc) and api_errors < self.api_retries:
                        api_errors += 1
                        time.sleep(self.retry_interval * api_errors)
                        continue
                    if is_transient(exc):
                        raise self._give_up(pod, self._api_error(exc, f"pod {pod_key(pod)}: cannot update its allocation")) from None
                    raise self._give_up(
                        pod, AllocateError(f"pod {pod_key(pod)}: {type(exc).__name__}: {exc}", grpc.StatusCode.INTERNAL, permanent=True)
                    ) from None

    def _retrying(self, call: Callable[[], Any], what: str) -> Any:
        """``call()``, retried ``api_retries`` times on a transient API error; AllocateError saying why."""
        for attempt in range(self.api_retries + 1):
            try:
                return call()
            except AllocateError:
                raise
            except Exception as exc:
                if not is_transient(exc) or attempt == self.api_retries:
                    raise self._api_error(exc, what) from None
                time.sleep(self.retry_interval * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _give_up(self, pod: Pod, exc: AllocateError) -> AllocateError:
        """End the pod's bind: kubelet will not ask again for it. Returns ``exc`` for the caller to raise."""
        self.fail(pod, str(exc))
        return exc

    def _kind(self, resource: str) -> DeviceKind:
        kind = self.manager.kind_for_resource(resource)
        if kind is None:
            raise AllocateError(f"{resource} is not served by any loaded backend", grpc.StatusCode.INVALID_ARGUMENT)
        return kind

    def _safe_pending(self, pod: Pod, kind: DeviceKind) -> bool:
        try:
            return self._is_pending(pod, kind)
        except AnnotationError:
            return True

    def _reread(self, pod: Pod) -> Pod | None:
        meta = pod.get("metadata") or {}
        try:
            return self._read_pod(meta.get("namespace") or "default", meta.get("name") or "")
        except Exception as exc:
            raise self._api_error(exc, f"pod {pod_key(pod)}: cannot re-read it") from None

    def _api_error(self, exc: BaseException, what: str) -> AllocateError:
        if is_transient(exc):
            return AllocateError(
                f"{what}: the API server is unreachable ({describe_api_error(exc)}); retry when it is back", grpc.StatusCode.UNAVAILABLE
            )
        return AllocateError(f"{what}: {describe_api_error(exc)}", grpc.StatusCode.UNKNOWN)

    def _allocate_for(self, pod: Pod, kind: DeviceKind, devices_ids: Sequence[str]) -> tuple[api_pb2.ContainerAllocateResponse, str]:
        key = pod_key(pod)
        meta = pod.get("metadata") or {}
        ann = _annotations(pod)
        resource = kind.resources.count

        def refuse(reason: str, code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION) -> AllocateError:
            return AllocateError(f"pod {key}: {reason}", code, permanent=True)

        if ann.get(ASSIGNED_NODE) != self.node:
            raise refuse(f"it was scheduled to node {ann.get(ASSIGNED_NODE)!r}, not to {self.node!r}")
        try:
            if self.keys is not None:
                verify_allocation(ann, self.manager.kinds, self.keys, meta.get("uid") or "")
            step = next_container(ann, kind)
        except SignatureError as exc:
            raise refuse(str(exc), grpc.StatusCode.PERMISSION_DENIED) from None
        except AnnotationError as exc:
            raise refuse(f"its allocation annotation cannot be read: {exc}", grpc.StatusCode.INVALID_ARGUMENT) from None
        if step is None:
            raise refuse(f"nothing is left to allocate for {resource}")
        containers = ordered_containers(pod)
        if step.index >= len(containers):
            raise refuse(f"{kind.annotations.to_allocate} names container #{step.index} but the pod has {len(containers)} containers")
        container = containers[step.index]
        name = container.get("name", f"#{step.index}")
        wrong = sorted({g.vendor for g in step.grants} - {kind.vendor})
        if wrong:
            raise refuse(
                f'{kind.annotations.to_allocate} grants devices of vendor {wrong} to container "{name}"; {resource} serves {kind.vendor!r}'
            )
        if len(step.grants) != len(devices_ids):
            raise refuse(
                f'kubelet asked for {len(devices_ids)} devices of {resource} but the scheduler granted {len(step.grants)} to container "{name}"'
            )
        self._note_slot_mismatch(key, name, step.grants, devices_ids)
        try:
            node: NodeContext | str
            if self.discovery is None:
                node, devices = self.node, None
            else:
                found = self.discovery()
                node = found.contexts.get(self.manager.owner(kind.vendor).name) or self.node
                devices = found.granted(step.grants)
            self.manager.prepare(step.grants, pod, container, node, devices)
            edits = self.manager.container_edits(step.grants, pod, container, node, devices)
            response = to_response(edits)
        except ContractError as exc:  # a bug in the backend, not something the pod can change
            raise refuse(f'container "{name}": {exc}', grpc.StatusCode.INTERNAL) from None
        except HamiError as exc:  # refused or crashed: named by the manager, with the backend's reason
            raise refuse(f'container "{name}": {exc}') from None
        update = {kind.annotations.to_allocate: step.remaining}
        if edits.partitions:  # the instances this container got, in HAMi's annotation (hami.wire.partitions)
            update[partitions.ANNOTATION] = partitions.with_container(ann.get(partitions.ANNOTATION), step.index, edits.partitions)
        done = is_fully_allocated({**ann, **update}, self.manager.kinds)
        if done:
            update[BIND_PHASE] = BindPhase.SUCCESS
        self._patch_annotations(pod, update, with_version=True)
        if done:
            self._release_lock(pod)
            log.info("event=pod_allocated pod=%s node=%s", key, self.node)
        return response, name

    def _note_slot_mismatch(self, key: str, container: str, grants: Sequence[Grant], devices_ids: Sequence[str]) -> None:
        asked = sorted(device_of_slot(d) for d in devices_ids)
        granted = sorted(g.id for g in grants)
        if asked != granted:  # kubelet's slot accounting differs from the scheduler's choice; the grants win
            log.info("event=slot_mismatch pod=%s container=%s kubelet=%s scheduler=%s", key, container, ",".join(asked), ",".join(granted))

    # ------------------------------------------------------------ writes
    def _patch_annotations(self, pod: Pod, annotations: Mapping[str, str | None], *, with_version: bool) -> None:
        meta = pod.get("metadata") or {}
        body: dict[str, Any] = {"metadata": {"annotations": dict(annotations)}}
        if with_version and meta.get("resourceVersion"):
            body["metadata"]["resourceVersion"] = meta["resourceVersion"]
        try:
            release(  # read to its end: an unread answer keeps its connection out of the pool (a new TCP connection per Allocate)
                self.core_v1.patch_namespaced_pod(
                    cast(str, meta.get("name")),
                    meta.get("namespace") or "default",
                    body,
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                    _content_type=MERGE_PATCH,
                )
            )
        except ApiException as exc:
            if exc.status == 409:
                raise _Conflict() from None
            if exc.status == 404:
                raise AllocateError(f"pod {pod_key(pod)} was deleted while it was being allocated", grpc.StatusCode.NOT_FOUND) from None
            raise

    def _release_lock(self, pod: Pod) -> None:
        meta = pod.get("metadata") or {}
        namespace, name = meta.get("namespace") or "default", meta.get("name") or ""
        holder, version = self._lock_seen
        try:
            if holder is not None and (holder.namespace, holder.name) == (namespace, name) and version:
                self.lock.release_at(self.node, version, namespace, name)
            else:
                self.lock.release(self.node, namespace, name)
        except Exception as exc:  # the lock expires on its own; the allocation itself succeeded
            log.warning("event=lock_release_failed node=%s pod=%s error=%r", self.node, pod_key(pod), describe_api_error(exc))

    def fail(self, pod: Pod, message: str) -> None:
        """``bind-phase=failed``, lock released, event. What the API server refuses for a transient
        reason is retried in the background (kubelet will not call again, so nothing else would)."""
        log.warning("event=pod_allocation_failed pod=%s node=%s reason=%r", pod_key(pod), self.node, message)
        if not self._try_fail(pod, message):
            thread = threading.Thread(target=self._fail_later, args=(pod, message), name=f"fail-{pod_key(pod)}", daemon=True)
            thread.start()

    def _try_fail(self, pod: Pod, message: str, *, recheck: bool = False) -> bool:
        """One round of the three writes; False when one of them failed for a transient reason."""
        done = True
        try:
            if recheck:  # later, from the background: only a pod still stuck in allocating
                current = self._read_pod(*_name(pod))
                if current is not None and _annotations(current).get(BIND_PHASE) == BindPhase.ALLOCATING:
                    self._patch_annotations(current, {BIND_PHASE: BindPhase.FAILED}, with_version=True)
            else:
                self._patch_annotations(pod, {BIND_PHASE: BindPhase.FAILED}, with_version=False)
        except Exception as exc:
            done = not (is_transient(exc) or isinstance(exc, _Conflict))
            log.warning("event=bind_phase_write_failed pod=%s error=%r retry=%s", pod_key(pod), describe_api_error(exc), not done)
        try:
            self.lock.release(self.node, *_name(pod))
        except Exception as exc:
            done = done and not is_transient(exc)
            log.warning("event=lock_release_failed node=%s pod=%s error=%r", self.node, pod_key(pod), describe_api_error(exc))
        if not recheck or not self._event_written.get(pod_key(pod), False):
            written = self.event(pod, message)
            self._event_written[pod_key(pod)] = written
            done = done and written
        return done

    def _fail_later(self, pod: Pod, message: str) -> None:
        deadline = self.clock() + self.cleanup_deadline
        delay = self.retry_interval
        try:
            while self.clock() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                if self._try_fail(pod, message, recheck=True):
                    log.info("event=pod_allocation_failure_recorded pod=%s node=%s", pod_key(pod), self.node)
                    return
            log.warning(
                "event=pod_allocation_failure_not_recorded pod=%s node=%s after=%.0fs", pod_key(pod), self.node, self.cleanup_deadline
            )
        finally:
            self._event_written.pop(pod_key(pod), None)

    def event(self, pod: Pod, message: str, reason: str = EVENT_REASON, type_: str = "Warning") -> bool:
        """Record an event for ``pod``; False when the API server refused it for a transient reason."""
        meta = pod.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        now = datetime.fromtimestamp(self.clock(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": meta.get("name"), "uid": meta.get("uid")},
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": COMPONENT, "host": self.node},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            release(
                self.core_v1.create_namespaced_event(
                    namespace, cast(Any, body), _preload_content=False, _request_timeout=self.request_timeout
                )
            )
        except Exception as exc:
            log.warning("event=event_write_failed pod=%s error=%r", pod_key(pod), describe_api_error(exc))
            return not is_transient(exc)
        return True

    # ------------------------------------------------------------ GetPreferredAllocation
    def preferred(self, resource: str, request: api_pb2.ContainerPreferredAllocationRequest) -> list[str]:
        """Slots of the devices the scheduler granted the pending container, then whatever fills up."""
        size = request.allocation_size
        available = list(request.available_deviceIDs)
        chosen = list(request.must_include_deviceIDs)[:size] if size else list(request.must_include_deviceIDs)
        wanted: list[str] = []
        try:
            kind = self._kind(resource)
            with self._mutex:
                pod = self.find_pending_pod(kind)
            step = next_container(_annotations(pod), kind)
            wanted = [g.id for g in step.grants] if step else []
        except Exception as exc:  # advice only: kubelet falls back to its own choice
            log.info("event=no_preference resource=%s reason=%r", resource, str(exc))
        covered = [device_of_slot(s) for s in chosen]
        for device in wanted:
            if len(chosen) >= size:
                break
            if device in covered:
                covered.remove(device)
                continue
            slot = next((s for s in available if s not in chosen and device_of_slot(s) == device), None)
            if slot is not None:
                chosen.append(slot)
        for slot in available:
            if len(chosen) >= size:
                break
            if slot not in chosen:
                chosen.append(slot)
        return chosen


def _name(pod: Mapping[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return meta.get("namespace") or "default", meta.get("name") or ""


class _Conflict(Exception):
    """The pod changed between read and write (409): re-read and try again."""
