"""Filter, prioritize and bind: the scheduler's decisions, independent of HTTP.

Filter fits the pod on candidate nodes in the node policy's order and stops at the first fit, so a
large cluster costs one cheap summary check per node plus exact fitting of the best few. The choice
is recorded in the cache at once (an *assumption*), so concurrent filters never hand out the same
capacity twice, and then written to the pod's annotations, signed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timezone
from typing import Any, cast

import attrs
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from hami.errors import HamiError, ValidationError
from hami.k8snames import is_label_value
from hami.kube import release
from hami.plugin.manager import BackendManager
from hami.plugin.model import DeviceRequest
from hami.plugin.policy import ClusterView
from hami.scheduler.config import SchedulerConfig
from hami.scheduler.fit import Fit, Misfit, device_choice, fit_node
from hami.scheduler.informed import Informed
from hami.scheduler.ranking import NodeRanking
from hami.scheduler.state import ClusterState, NodeState, PodRecord
from hami.scheduler.usage import pod_holdings
from hami.wire.allocation import Allocation, allocation_records, ordered_containers
from hami.wire.annotations import (
    ASSIGNED_NODE,
    BIND_PHASE,
    BIND_TIME,
    DEVICE_POLICY,
    NODE_POLICY,
    SIGNATURE,
    BindPhase,
)
from hami.wire.nodelock import LockHolder, NodeChanged, NodeLock, NodeLockError
from hami.wire.signing import SigningKeys, sign

log = logging.getLogger(__name__)


@attrs.frozen
class FilterOutcome:
    node: str | None = None
    failed: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    error: str = ""
    managed: bool = True
    """False when the pod asks nothing of hami: every node passes."""


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}"


class InformedNodeLock(NodeLock):
    """The node lock, taken in one request when the informer's copy of the node shows it free: a
    patch conditional on that copy's resourceVersion (HAMi reads the node first, then patches). A
    copy the watch has not caught up with gets the API server's 409, and the lock is then taken as
    :class:`NodeLock` does, reading the node first; so no lock is ever taken that another holds."""

    def __init__(self, core_v1: CoreV1Api, known: Callable[[str], tuple[str | None, str] | None], **kwargs: Any) -> None:
        super().__init__(core_v1, **kwargs)
        self.known = known
        """``node -> (lock annotation or None, resourceVersion)`` as last seen, or None when unknown."""

    def acquire(self, node: str, namespace: str, name: str, **kwargs: Any) -> LockHolder:
        seen = self.known(node)
        if seen is not None and seen[0] is None and seen[1]:
            mine = LockHolder(self.clock(), namespace, name)
            try:
                self._patch(node, seen[1], mine.encode())
                return mine
            except NodeChanged:
                pass  # the copy was behind the API server: read the node and decide on what it says
        return super().acquire(node, namespace, name, **kwargs)


class Scheduler:
    def __init__(
        self,
        manager: BackendManager,
        state: ClusterState,
        core_v1: CoreV1Api | None,
        config: SchedulerConfig = SchedulerConfig(),
        keys: SigningKeys | None = None,
        cluster: ClusterView | None = None,
    ) -> None:
        self.manager = manager
        self.cluster = cluster if cluster is not None else ClusterView(host=state.host, device_fits=manager.device_fits)
        """What the scoring policies see beyond the candidates: each node's free CPU and memory (the
        informer-fed ``state.host``; the simulator brings its own), the backends' predicate, a seed."""
        self.state = state
        if keys is not None and state.keys is None:
            state.keys = keys  # the cache believes only records signed with our keys (state.apply_pod)
        self.core_v1 = core_v1
        self.config = config
        self.keys = keys
        self.informed: Informed | None = None
        """The informer's copies (set by the extender): a node lock seen free is taken in one request."""
        self.lock = InformedNodeLock(core_v1, self._known_lock, expiry=config.lock_expiry) if core_v1 is not None else None
        self._rankings: dict[str, NodeRanking] = {}
        # Writes to the API server that the filter's answer need not wait for (allocations, events).
        self._writer = ThreadPoolExecutor(max_workers=4, thread_name_prefix="scheduler-writer")
        self._writes: dict[str, Future[str]] = {}
        self._in_flight: set[Future[str]] = set()
        """Allocation writes not finished yet, also those bind stopped waiting for (``settle``)."""

    def _known_lock(self, node: str) -> tuple[str | None, str] | None:
        return self.informed.node_lock(node) if self.informed is not None else None

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until every allocation write started so far has its answer (tests; a clean stop)."""
        pending = list(self._in_flight)
        _, not_done = wait(pending, timeout) if pending else ((), ())
        return not not_done

    def close(self) -> None:
        """Finish pending writes."""
        self._writer.shutdown(wait=True)

    # ------------------------------------------------------------ requests and policies

    def requests(self, pod: Mapping[str, Any]) -> list[list[DeviceRequest]]:
        """Per container (init first), what it asks of the backends; raises RequestError naming the value."""
        return [self.manager.container_requests(c, pod) for c in ordered_containers(pod)]

    def policies(self, pod: Mapping[str, Any]) -> tuple[str, str]:
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        node_policy = annotations.get(NODE_POLICY) or self.config.node_policy
        device_policy = annotations.get(DEVICE_POLICY) or self.config.device_policy
        for level, name in (("node", node_policy), ("device", device_policy)):
            try:
                if level == "device":
                    device_choice(self.manager, name)  # a device policy may be a comma list (HAMi's binpack,numa)
                else:
                    self.manager.policy(level, name)
            except ValidationError as exc:
                raise ValidationError(f"{exc} (the name came from the pod or the configuration)") from None
        return node_policy, device_policy

    def node_score(self, policy: str, node: NodeState, requests: Sequence[DeviceRequest], pod: Mapping[str, Any]) -> float:
        return self.manager.score_node(policy, node.node_usage(), requests, pod, self.cluster)

    def _best_first(self, policy: str, wanted: set[str], requests: Sequence[DeviceRequest], pod: Mapping[str, Any]) -> Iterator[NodeState]:
        """Candidate nodes from the best score down. Scores that depend on the node alone come from a
        ranking kept up to date incrementally; others are computed for every candidate."""
        if not self.manager.policy("node", policy).per_pod:
            ranking = self._rankings.get(policy)
            if ranking is None:
                ranking = self._rankings[policy] = NodeRanking(
                    self.state, lambda node: self.manager.score_node(policy, node.node_usage(), (), {}, self.cluster)
                )
            return ranking.best_first(wanted)
        nodes = [self.state.nodes[n] for n in wanted if n in self.state.nodes]
        scores = self.manager.score_nodes(policy, [node.node_usage() for node in nodes], requests, pod, self.cluster)
        return _ranked(scores, nodes)

    # ------------------------------------------------------------ filter

    @staticmethod
    def _prefilter(node: NodeState, flat: Sequence[DeviceRequest]) -> str | None:
        """A cheap necessary condition from the node's per-vendor summary; the reason when it fails."""
        for request in flat:
            if not node.by_vendor.get(request.vendor):
                why = node.problems.get(request.vendor, f"no {request.vendor} devices registered on this node")
                return f"NodeInsufficientDevice: {why}"
            summary = node.summary(request.vendor)
            if summary.usable < request.count:
                return f"NodeInsufficientDevice: {summary.usable} usable {request.vendor} device(s), {request.count} needed"
            if request.memory > summary.max_free_memory:
                return f"CardInsufficientMemory: {request.memory} MiB needed, at most {summary.max_free_memory} MiB free on one {request.vendor} device"
            if request.cores > summary.max_free_cores:
                return (
                    f"CardInsufficientCore: {request.cores}% needed, at most {summary.max_free_cores}% free on one {request.vendor} device"
                )
        return None

    def filter(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> FilterOutcome:
        try:
            requests = self.requests(pod)
            if not any(requests):
                return FilterOutcome(managed=False)
            node_policy, device_policy = self.policies(pod)
        except HamiError as exc:
            return self._failed(pod, FilterOutcome(error=f"pod {pod_key(pod)}: {exc}"))
        flat = [r for container in requests for r in container]
        meta = pod.get("metadata") or {}
        uid = meta.get("uid") or ""
        failed: dict[str, str] = {}
        with self.state.lock:
            if uid:  # a retried pod: what its earlier, unbound try holds must not compete with this one
                self.state.forget_unbound(uid)
            wanted = set(node_names)
            for name in wanted - self.state.nodes.keys():
                failed[name] = "NodeUnregistered: no hami device annotation seen for this node"
            chosen: Fit | None = None
            try:
                order = self._best_first(node_policy, wanted, flat, pod)
            except HamiError as exc:  # a node policy that failed (named in the error) or a bad annotation
                return self._failed(pod, FilterOutcome(error=f"pod {pod_key(pod)}: {exc}"))
            for node in order:
                reason = self._prefilter(node, flat)
                if reason:
                    failed[node.name] = reason
                    continue
                try:
                    result = fit_node(self.manager, node, pod, requests, device_policy, self.cluster)
                except HamiError as exc:
                    result = Misfit(node.name, f"BackendError: {exc}")
                if isinstance(result, Fit):
                    chosen = result
                    break
                failed[node.name] = result.reason
            if chosen is None:
                return self._failed(pod, FilterOutcome(failed=failed))
            init_count = len((pod.get("spec") or {}).get("initContainers") or [])
            now = time.time()
            holdings = pod_holdings(chosen.devices, init_count)
            assumed = PodRecord(
                meta.get("namespace", ""), meta.get("name", ""), chosen.node, holdings, chosen.devices, scheduled=str(int(now))
            )
            self.state.hold(uid, assumed)
            self.state.assume_host(uid, chosen.node, pod)
        if len(self._writes) > 1000:  # forget writes that succeeded for pods never bound; keep failures for bind
            self._writes = {u: f for u, f in self._writes.items() if not f.done() or f.result()}
        if self.core_v1 is None:  # nothing to send (the simulator): no thread hop per pod
            written: Future[str] = Future()
            written.set_result(self._annotate(pod, chosen, now, assumed))
            self._writes[uid] = written
        else:
            future = self._writes[uid] = self._writer.submit(self._annotate, pod, chosen, now, assumed)
            self._in_flight.add(future)
            future.add_done_callback(self._in_flight.discard)
        self._event(pod, "FilteringSucceed", f"hami chose node {chosen.node}", "Normal")
        log.info("event=filter_succeeded pod=%s node=%s candidates=%d", pod_key(pod), chosen.node, len(node_names))
        return FilterOutcome(node=chosen.node, failed=failed)

    def _annotate(self, pod: Mapping[str, Any], fit: Fit, now: float, assumed: PodRecord) -> str:
        """Write the allocation onto the pod ('' on success, else why). Runs off the filter's path:
        kube-scheduler goes on to prioritize and bind meanwhile, and bind waits for it. A
        ``bind-phase`` left by an earlier, failed try is removed.

        The write must never land after bind gave up on it (it would clear ``bind-phase=failed`` and
        bring back a grant the cache dropped), so it is conditional on the pod's resourceVersion:
        bind's failure drops ``assumed`` from the cache *before* it marks the pod failed (a new
        resourceVersion); a 409 re-reads the pod and writes again only while ``assumed`` is still
        the pod's reservation."""
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        annotations: dict[str, str | None] = {}
        annotations.update(Allocation(fit.node, fit.devices).annotations(self.manager.kinds, meta.get("uid", ""), now, self.keys))
        node = self.state.node(fit.node)
        for vendor, containers in sorted(fit.devices.items()):
            try:  # the backend's own pod annotations (HAMi's PatchAnnotations), beside the signed allocation
                extra = self.manager.allocation_annotations(vendor, containers, dict(node.devices) if node else {}, pod)
            except HamiError as exc:
                self._drop_if_current(uid, assumed)
                log.warning("event=annotate_failed pod=%s error=%r", pod_key(pod), str(exc))
                return f"pod {pod_key(pod)}: {exc}"
            annotations.update({k: v for k, v in extra.items() if k not in annotations})
        records = allocation_records({k: v for k, v in annotations.items() if v is not None})
        if self.keys is not None and len(records) > len(fit.devices):
            # a backend's own annotation named like a record (some HAMi vendors' <domain>/gpu-devices-allocated JSON) is read as one
            # by the agent and the cache, which verify every ``…-devices-allocated`` key: sign it with the rest
            annotations[SIGNATURE] = sign(self.keys, meta.get("uid", ""), fit.node, records)
        if self.core_v1 is None:
            return ""
        annotations[BIND_PHASE] = None  # a merge patch's null: no-op unless a failed try left one
        name, namespace = cast(str, meta.get("name")), meta.get("namespace", "default")
        body: dict[str, Any] = {"metadata": {"annotations": annotations}}
        if is_label_value(fit.node):  # HAMi's monitor lists pods by it (pkg/util/util.go PatchPodAnnotations)
            body["metadata"]["labels"] = {ASSIGNED_NODE: fit.node}
        version = str(meta.get("resourceVersion") or "")  # the copy the filter decided on (the informer's)
        why = "the pod kept changing (409 Conflict on every try)"
        for _ in range(_WRITE_TRIES):
            try:
                if not version:
                    version = self._pod_version(name, namespace)
                with self.state.lock:  # checked after the version was read: a failure mark since then is a 409
                    if self.state.pods.get(uid) != assumed:
                        log.info("event=allocation_write_abandoned pod=%s node=%s", pod_key(pod), fit.node)
                        return f"pod {pod_key(pod)}: the allocation was given up before it was written (bind failed or a newer filter replaced it)"
                body["metadata"]["resourceVersion"] = version
                release(self.core_v1.patch_namespaced_pod(name, namespace, body, _preload_content=False))
                return ""
            except ApiException as exc:
                if exc.status != 409:
                    why = _api_reason(exc)
                    break
                version = ""  # changed since: read it, then check again that the choice still stands
            except (OSError, HTTPError, ValueError) as exc:
                why = _api_reason(exc)
                break
        self._drop_if_current(uid, assumed)
        reason = f"pod {pod_key(pod)}: could not record the allocation: {why}"
        log.warning("event=annotate_failed pod=%s error=%r", pod_key(pod), reason)
        return reason

    def _pod_version(self, name: str, namespace: str) -> str:
        """The pod's current resourceVersion (read when the filter's copy is stale or had none)."""
        version = str(self._read_metadata(name, namespace).get("resourceVersion") or "")
        if not version:
            raise ValueError(f"pod {namespace}/{name} has no resourceVersion")
        return version

    def _drop_if_current(self, uid: str, assumed: PodRecord) -> None:
        """Drop the reservation of a write that failed, unless a newer filter of the pod replaced it."""
        with self.state.lock:
            if self.state.pods.get(uid) == assumed:
                self.state.forget_unbound(uid)

    def wait_written(self, uid: str, timeout: float = 30.0) -> str:
        """Wait until the allocation chosen for pod ``uid`` is on the pod; '' or why it is not."""
        future = self._writes.pop(uid, None)
        if future is None:
            return ""
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()  # not started yet: never sent; started: the API server refuses it once bind fails
            return f"the allocation of pod uid {uid} was not written within {timeout:g} s"

    def _failed(self, pod: Mapping[str, Any], outcome: FilterOutcome) -> FilterOutcome:
        message = outcome.error or "no node fits: " + "; ".join(f"{n}: {r}" for n, r in sorted(outcome.failed.items())[:20])
        self._event(pod, "FilteringFailed", message[:1000], "Warning")
        log.info("event=filter_failed pod=%s reason=%r", pod_key(pod), message[:300])
        return outcome

    # ------------------------------------------------------------ prioritize

    def prioritize(self, pod: Mapping[str, Any], node_names: Sequence[str]) -> list[tuple[str, int]]:
        """0–10 per node from the node policy; nodes hami does not know score 0."""
        try:
            requests = [r for c in self.requests(pod) for r in c]
            node_policy, _ = self.policies(pod)
        except HamiError:
            return [(n, 0) for n in node_names]
        with self.state.lock:
            raw = {n: self.node_score(node_policy, node, requests, pod) for n in node_names if (node := self.state.node(n)) is not None}
        if not raw:
            return [(n, 0) for n in node_names]
        low, high = min(raw.values()), max(raw.values())
        span = high - low
        return [(n, round(10 * (raw[n] - low) / span) if span and n in raw else (10 if n in raw else 0)) for n in node_names]

    # ------------------------------------------------------------ bind

    def bind(self, namespace: str, name: str, uid: str, node: str) -> str:
        """Lock the node, create the Binding that marks the pod allocating; '' on success, else the reason.

        Every failure drops the filter's reservation for the pod and marks it ``bind-phase=failed``
        (so informer events do not count its stale record again): kube-scheduler retries the pod,
        which must not compete with itself."""
        if self.core_v1 is None or self.lock is None:
            return "bind needs an API server connection"
        who = f"pod {namespace}/{name}"
        if not uid:  # a client that sent no PodUID: the reservation and the allocation write are keyed by it
            uid, unknown = self._uid_of(namespace, name)
            if unknown:
                reason = f"{who}: no PodUID given and the pod cannot be read: {unknown}"
                self._bind_failed(namespace, name, uid, reason)
                return reason
        written = self.wait_written(uid, self.config.allocation_write_wait)
        if written:
            self._bind_failed(namespace, name, uid, written)
            return written
        try:
            self.lock.acquire(node, namespace, name, timeout=self.config.bind_lock_timeout)
        except NodeLockError as exc:
            reason = f"{who}: {exc}"
            self._bind_failed(namespace, name, uid, reason)
            return reason
        except (ApiException, OSError, HTTPError) as exc:
            reason = f"{who}: cannot lock node {node!r}: {_api_reason(exc)}"
            self._bind_failed(namespace, name, uid, reason)
            self._release(namespace, name, node)  # a lost answer may hide a lock the server did write (only ours is freed)
            return reason
        try:
            # bind-phase and bind-time ride on the Binding: kube-apiserver copies a Binding's annotations
            # onto the pod with spec.nodeName (BindingREST.setPodHostAndAnnotations), one write where
            # HAMi's Bind makes two (PatchPodAnnotations, then the Binding), and never one without the other
            body: Any = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": uid or None,
                    "annotations": {BIND_PHASE: BindPhase.ALLOCATING, BIND_TIME: str(int(time.time()))},
                },
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            }
            release(self.core_v1.create_namespaced_pod_binding(name, namespace, body, _preload_content=False))
        except Exception as exc:  # any failure: nothing of this try may stay held
            reason = f"{who}: binding to node {node!r} failed: {_api_reason(exc)}"
            self._bind_failed(namespace, name, uid, reason)
            self._release(namespace, name, node)
            return reason
        log.info("event=bound pod=%s/%s node=%s", namespace, name, node)
        return ""

    def _bind_failed(self, namespace: str, name: str, uid: str, reason: str) -> None:
        """Drop the pod's reservation and mark it ``bind-phase=failed`` (best effort: the filter of
        the retry drops the reservation too). ``reservation_dropped`` says whether none is left (a
        failed allocation write has dropped it already)."""
        with self.state.lock:
            dropped = bool(uid) and (self.state.forget_unbound(uid) or uid not in self.state.pods)
        log.info("event=bind_failed pod=%s/%s reservation_dropped=%s reason=%r", namespace, name, dropped, reason[:300])
        if self.core_v1 is None:
            return
        try:
            release(
                self.core_v1.patch_namespaced_pod(
                    name, namespace, {"metadata": {"annotations": {BIND_PHASE: BindPhase.FAILED}}}, _preload_content=False
                )
            )
        except (ApiException, OSError, HTTPError) as exc:
            log.warning("event=bind_phase_write_failed pod=%s/%s error=%r", namespace, name, _api_reason(exc))

    def _uid_of(self, namespace: str, name: str) -> tuple[str, str]:
        """The pod's uid from the API server, and '' or why it is unknown (the bind is then refused:
        without the uid it could not tell whether the allocation was written)."""
        try:
            uid = str(self._read_metadata(name, namespace).get("uid") or "")
        except (ApiException, OSError, HTTPError, ValueError) as exc:
            return "", _api_reason(exc)
        return uid, "" if uid else "it has no uid"

    def _read_metadata(self, name: str, namespace: str) -> dict[str, Any]:
        """The pod's metadata as the API server has it now (the informer's copy was behind or lacking)."""
        if self.core_v1 is None:  # _annotate() and bind() checked it
            raise ValueError("no API server connection")
        raw = self.core_v1.read_namespaced_pod(name, namespace, _preload_content=False)
        return cast(dict[str, Any], json.loads(cast(Any, raw).data).get("metadata") or {})

    def _release(self, namespace: str, name: str, node: str) -> None:
        if self.lock is None:  # bind() checked it
            return
        try:
            self.lock.release(node, namespace, name)
        except (ApiException, OSError, HTTPError, NodeLockError) as exc:
            log.warning("event=lock_release_failed node=%s error=%r", node, str(exc))

    # ------------------------------------------------------------ events

    def _event(self, pod: Mapping[str, Any], reason: str, message: str, kind: str) -> None:
        if self.core_v1 is None or not self.config.events:
            return
        meta = pod.get("metadata") or {}
        namespace = meta.get("namespace", "default")
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{meta.get('name', 'pod')}.", "namespace": namespace},
            "involvedObject": {"kind": "Pod", "namespace": namespace, "name": meta.get("name"), "uid": meta.get("uid"), "apiVersion": "v1"},
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": self.config.scheduler_name},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._writer.submit(self._write_event, namespace, body)

    def _write_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        if self.core_v1 is None:  # _event() checked it
            return
        try:
            release(self.core_v1.create_namespaced_event(namespace, cast(Any, body), _preload_content=False))
        except (ApiException, OSError) as exc:  # events are best effort
            log.debug("event=event_write_failed namespace=%s error=%r", namespace, str(exc))


_WRITE_TRIES = 4
"""Conditional allocation writes per filter: a pending pod rarely changes, so a conflict is rare."""


def _ranked(scores: Sequence[float], nodes: Sequence[NodeState]) -> Iterator[NodeState]:
    """Nodes by score, best first, ties by name. The first node usually fits, so it is found in one
    pass and the rest are sorted only when the filter asks for more."""
    if not nodes:
        return
    top = max(scores)
    first = min((i for i, s in enumerate(scores) if s == top), key=lambda i: nodes[i].name)
    yield nodes[first]
    rest = sorted((r for i, r in enumerate(zip(scores, nodes, strict=True)) if i != first), key=lambda r: (-r[0], r[1].name))
    yield from (node for _, node in rest)


def _api_reason(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return str(exc)
