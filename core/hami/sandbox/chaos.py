"""A seeded chaos run against a whole sandbox cluster (issue 19): parallel pods onto nearly full nodes
while the API server fails, slows down and drops watches, fuzzed extender and webhook bodies, forged
and edited allocation annotations; then the three figures that must stay 0:

- over-allocated: devices whose verified grants (signed records on live pods) exceed memory, cores or slots;
- leaked: node locks, bind phases or scheduler holdings left once every pod is gone;
- unclear: refusals without a reason naming what, "internal error" answers, tracebacks in the logs.

:func:`run_restarts` adds what a whole sandbox cannot do, on the components' public constructors
(:class:`RestartCluster`): the scheduler service, a node agent (with pods deleted while it is down) and
a kubelet each stopped and started while pods are in flight under API faults, and a quota race
(concurrent admissions against a ResourceQuota on device shares, reservations of pods never created
expiring). Over-allocation is sampled all along from the API's verified records; the leaks also count
agents' pod ledgers, kubelets' device assignments and quota reservations; thread deaths count as crashes.

``tests/chaos`` runs small seeds in the default test run; ``bench/chaos.py`` larger ones. The same
seed replays the same pods, faults and inputs (thread interleavings still vary).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import http.client
import json
import logging
import random
import re
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import jsonpatch
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hami.backendkit.inventory import load_inventory
from hami.errors import AnnotationError, HamiError
from hami.fakes.admission import pod_create_review
from hami.fakes.kubeapi import KubeAPIServer
from hami.fakes.kubeapi.faults import Faults
from hami.fakes.kubelet import FakeKubelet
from hami.node.agent import Agent, AgentOptions
from hami.plugin.manager import load_backends
from hami.plugin.model import ResourceNames
from hami.sandbox.cluster import Sandbox
from hami.sandbox.defaults import default_nodes_file
from hami.scheduler.config import SchedulerConfig
from hami.scheduler.service import SchedulerService
from hami.webhook.admission import review
from hami.webhook.config import WebhookConfig
from hami.webhook.quota import RESERVATION_TTL, KubeQuotaSource
from hami.webhook.reservations import LeaseReservations
from hami.wire.allocation import read_allocated, verify_allocation
from hami.wire.annotations import BIND_PHASE, NODE_LOCK, SIGNATURE
from hami.wire.signing import SignatureError, SigningKeys, legacy_sign, sign

UNCLEAR = ("internal error", "Traceback", "AttributeError", "KeyError", "TypeError")


@attrs.frozen
class ChaosReport:
    seed: int
    pods: int
    running: int
    refused: int
    faults: int
    inputs: int
    forgeries: int
    over_allocated: tuple[str, ...]
    leaked: tuple[str, ...]
    unclear: tuple[str, ...]
    crashes: int
    reasons: tuple[tuple[str, int], ...] = ()
    """The most frequent refusal reasons (what a pod that did not run was told), with their counts."""
    tries: tuple[int, ...] = ()
    """Per pod, the scheduling tries it took (:class:`RetryQueue`)."""
    unschedulable: int = 0
    """Pods left Pending because no node fits them once nothing else was in flight (a cluster at rest)."""

    def lines(self) -> list[str]:
        return [
            f"seed {self.seed}: pods {self.pods} (running {self.running}, refused or pending {self.refused}), faults injected {self.faults}, "
            f"fuzzed inputs {self.inputs}, forged/edited annotations {self.forgeries}",
            _tries_line(self.pods, self.running, self.unschedulable, self.tries),
            f"over-allocated {len(self.over_allocated)}, leaked {len(self.leaked)}, unclear errors {len(self.unclear)}, crashes {self.crashes}",
            *(f"  refused {count}x: {reason}" for reason, count in self.reasons),
            *(f"  over-allocated: {x}" for x in self.over_allocated[:10]),
            *(f"  leaked: {x}" for x in self.leaked[:10]),
            *(f"  unclear: {x}" for x in self.unclear[:10]),
        ]


class RetryQueue:
    """kube-scheduler's retries as the chaos drivers play them, on a compressed clock.

    kube-scheduler keeps a pod it could not place: one that met an error (here a lost node lock, a
    failed write, an extender error; or, as a controller would, a pod the webhook or kubelet refused,
    recreated) waits in the backoff queue ``podInitialBackoffSeconds`` (1 s), doubling per try up to
    ``podMaxBackoffSeconds`` (10 s) (``pkg/scheduler/backend/queue/scheduling_queue.go``
    ``calculateBackoffDuration``); one that fits no node waits among the unschedulable pods until a
    cluster event may make it fit (here: another pod's try ended without running, which gives its
    reservation back, or a pod was deleted), then backs off and is tried again. ``scale`` seconds
    here stand for one of kube-scheduler's. A pod that fits nowhere once nothing else is in flight
    stays Pending, as in a cluster at rest; ``deadline`` (seconds here) and ``max_tries`` per pod
    bound a run all the same (a pod refused for good is not tried forever)."""

    def __init__(
        self, *, scale: float = 0.02, initial: float = 1.0, maximum: float = 10.0, deadline: float = 120.0, max_tries: int = 60
    ) -> None:
        if scale <= 0 or initial <= 0 or maximum < initial or deadline <= 0 or max_tries < 1:
            raise ValueError(
                f"retry queue: bad settings scale={scale!r} initial={initial!r} maximum={maximum!r} deadline={deadline!r} max_tries={max_tries!r}"
            )
        self.scale, self.initial, self.maximum, self.max_tries = scale, initial, maximum, max_tries
        self._until = time.monotonic() + deadline
        self._changed = threading.Condition()
        self._events = 0
        self._busy = 0
        """Pods being tried or backing off: each may still free or take capacity."""
        self.tries: collections.Counter[str] = collections.Counter()
        """Pod → tries it took (1: placed or refused at the first)."""

    def backoff(self, tries: int) -> float:
        """Seconds here before try ``tries + 1``: 1, 2, 4, 8, 10, 10 … of kube-scheduler's."""
        return min(self.initial * 2 ** max(tries - 1, 0), self.maximum) * self.scale

    def event(self) -> None:
        """Something that may make an unschedulable pod fit happened."""
        with self._changed:
            self._events += 1
            self._changed.notify_all()

    @contextmanager
    def pod(self) -> Iterator[None]:
        """One pod from its first try until it runs or gives up."""
        with self._changed:
            self._busy += 1
        try:
            yield
        finally:
            with self._changed:
                self._busy -= 1
                self._changed.notify_all()

    def wait_for_event(self, seen: int) -> bool:
        """An unschedulable pod waits until an event after ``seen``; False when none can come (no
        other pod is busy) or the deadline passed."""
        with self._changed:
            self._busy -= 1
            self._changed.notify_all()
            try:
                while self._events == seen:
                    left = self._until - time.monotonic()
                    if self._busy == 0 or left <= 0:
                        return False
                    self._changed.wait(min(left, 1.0))
                return True
            finally:
                self._busy += 1

    @property
    def events(self) -> int:
        with self._changed:
            return self._events

    def expired(self) -> bool:
        return time.monotonic() > self._until

    def run(self, key: str, attempt: Any, classify: Any, undo: Any) -> Any:
        """Try ``attempt()`` until ``classify(outcome)`` says ``"done"``; ``"unschedulable"`` waits for
        an event, anything else backs off; ``undo(outcome)`` clears a try that did not run before
        the next. Returns the last outcome (an exception raised by ``attempt`` or ``undo`` is returned)."""
        with self.pod():
            while True:
                seen = self.events
                try:
                    outcome = attempt()
                except Exception as exc:  # a crash is a figure of the report, not an abort
                    return exc
                self.tries[key] += 1
                verdict = classify(outcome)
                if verdict == "done":
                    return outcome
                unschedulable = verdict == "unschedulable"
                if unschedulable:
                    if not self.wait_for_event(seen):
                        return outcome
                elif self.expired() or self.tries[key] >= self.max_tries:
                    return outcome
                try:
                    undo(outcome)
                except Exception as exc:  # the same: reported, not raised
                    return exc
                if not unschedulable:  # what its try held is given back: room for an unschedulable pod
                    self.event()
                time.sleep(self.backoff(self.tries[key]))


def _tries_line(pods: int, running: int, unschedulable: int, tries: tuple[int, ...]) -> str:
    retries = [t - 1 for t in tries]
    mean = sum(retries) / len(retries) if retries else 0.0
    return (
        f"running {running / pods if pods else 0:.0%} of pods, {unschedulable} left unschedulable (no node fits at rest), "
        f"retries per pod {mean:.2f} (max {max(retries, default=0)})"
    )


class _LogWatch(logging.Handler):
    """Collects log records that carry a traceback or an unclear message, and threads that died of an
    exception (which bypass logging: ``threading.excepthook``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []
        self.thread_crashes: list[str] = []

    def thread_died(self, args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        self.thread_crashes.append(f"thread {name} died: {args.exc_type.__name__}: {str(args.exc_value)[:160]}")

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info or any(word in text for word in ("Traceback", "internal error")):
            self.bad.append(f"log {record.name}: {text[:200]}")


@contextmanager
def _watch_logs() -> Iterator[_LogWatch]:
    handler = _LogWatch()
    root = logging.getLogger("hami")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    old_hook = threading.excepthook
    threading.excepthook = handler.thread_died
    try:
        yield handler
    finally:
        threading.excepthook = old_hook
        root.removeHandler(handler)
        root.setLevel(old_level)


def _pod(rng: random.Random, index: int, names: ResourceNames) -> dict[str, Any]:
    """A pod asking for one or two shares of a device, sized to fill nodes quickly."""
    limits = {names.count: str(rng.choice((1, 1, 1, 2)))}
    if names.memory:
        limits[names.memory] = str(rng.choice((4096, 8192, 16384, 24576)))
    if names.cores and rng.random() < 0.5:
        limits[names.cores] = str(rng.choice((10, 25, 50)))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"chaos-{index}", "namespace": "chaos"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"limits": limits}}]},
    }


def _busiest_kind(sandbox: Sandbox) -> ResourceNames:
    """The resource names of the device kind with the most devices in the sandbox that can be shared
    (memory and cores requests): where parallel pods contend the most."""
    assert sandbox.service is not None
    counts: collections.Counter[str] = collections.Counter()
    with sandbox.service.state.lock:
        for node in sandbox.service.state.nodes.values():
            counts.update(device.vendor for device in node.devices.values())
    kinds = sandbox.manager.kinds
    for vendor, _ in counts.most_common():
        if vendor in kinds and kinds[vendor].resources.memory and kinds[vendor].resources.cores:
            return kinds[vendor].resources
    raise HamiError("chaos: no shareable device kind (memory and cores) in the sandbox's nodes")


def _inject(faults: Faults, rng: random.Random) -> None:
    """One fault: a 409/500/503 on the writes of a bind or Allocate, latency, or cut watches."""
    choice = rng.randrange(5)
    if choice == 0:
        faults.fail(rng.choice((409, 500, 503)), count=rng.randint(1, 3), path=r"/pods/[^/]+$", method="PATCH")
    elif choice == 1:
        faults.fail(rng.choice((500, 503)), count=1, path=r"/binding$", method="POST")
    elif choice == 2:
        faults.fail(rng.choice((409, 500)), count=rng.randint(1, 2), path=r"/nodes/[^/]+$", method="PATCH")
    elif choice == 3:
        faults.latency(rng.choice((0.0, 0.01, 0.05)))
    else:
        faults.cut_watches(abrupt=rng.random() < 0.5)


def _fuzz_bodies(rng: random.Random, count: int, names: ResourceNames) -> Iterator[tuple[str, bytes]]:
    """Hostile extender and webhook bodies: wrong types, truncations, huge numbers, forged pods."""
    pod = _pod(rng, 0, names)
    shapes: list[Any] = [
        None,
        1,
        "x",
        [],
        {},
        {"Pod": 1},
        {"Pod": {"metadata": 1}},
        {"Pod": {"metadata": {"annotations": []}}, "NodeNames": "node"},
        {"Pod": pod, "NodeNames": [1, None]},
        {"Pod": {**pod, "spec": {"containers": "c"}}, "NodeNames": ["node-1"]},
        {"PodName": 1, "PodNamespace": None, "PodUID": [], "Node": {}},
        {"PodName": "nope", "PodNamespace": "chaos", "PodUID": "u", "Node": "node-1"},
        {"request": 1},
        {"request": {"uid": "u", "object": "pod"}},
        {"request": {"uid": "u", "operation": "CREATE", "object": {"spec": {"containers": [1]}}}},
        {"request": {"uid": "u", "operation": "UPDATE", "object": pod, "oldObject": 5, "userInfo": {"username": 3}}},
    ]
    for _ in range(count):
        path = rng.choice(("filter", "prioritize", "bind", "webhook"))
        shape = rng.choice(shapes)
        if path == "webhook" and isinstance(shape, dict) and rng.random() < 0.8:  # past the envelope check, into admission
            shape = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", **shape}
        body = json.dumps(shape).encode()
        mutation = rng.randrange(4)
        if mutation == 1:
            body = body[: rng.randrange(len(body) + 1)]
        elif mutation == 2:
            body = body.replace(b"4096", b"1" + b"0" * 400).replace(b'"1"', b"1e999")
        elif mutation == 3:
            body = bytes(b ^ rng.randrange(256) if rng.random() < 0.05 else b for b in body)
        yield path, body


def _post(sandbox: Sandbox, path: str, body: bytes) -> tuple[int, str]:
    assert sandbox.service is not None
    server = sandbox.service.server if path == "webhook" else sandbox.service.extender_server
    request = urllib.request.Request(f"{server.url}/{path}", data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _answer_errors(status: int, text: str) -> str | None:
    """Why an answer to a fuzzed body is unclear, or None: a 5xx, or a message that names no field."""
    if status >= 500:
        return f"HTTP {status}: {text[:160]}"
    if any(word in text for word in UNCLEAR):
        return f"HTTP {status} with an unclear message: {text[:160]}"
    return None


def _forge(sandbox: Sandbox, rng: random.Random, running: list[tuple[str, str]]) -> int:
    """Edit the records of running pods the way a pod owner or a node could: shrink the grant, re-sign
    with a key that is not the scheduler's (an agent's public key as HMAC, a fresh Ed25519 key)."""
    raw = sandbox._raw
    edits = 0
    for namespace, name in rng.sample(running, min(len(running), 4)):
        pod = json.loads(raw.read_namespaced_pod(name, namespace, _preload_content=False).data)
        annotations = pod["metadata"].get("annotations") or {}
        records = {k: v for k, v in annotations.items() if k.endswith("-devices-allocated")}
        if not records:
            continue
        shrunk = dict(records)
        for key, value in records.items():  # memory 1 MiB instead of what was granted
            parts = value.split(",")
            if len(parts) >= 3 and parts[2].isdigit():
                parts[2] = "1"
            shrunk[key] = ",".join(parts)
        uid, node = pod["metadata"]["uid"], (pod.get("spec") or {}).get("nodeName", "")
        forged = rng.choice(
            (
                legacy_sign(sandbox.keys.public_pem(), uid, node, shrunk),
                sign(SigningKeys.generate(), uid, node, shrunk),
                annotations.get(SIGNATURE, ""),
            )
        )
        raw.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": {**shrunk, SIGNATURE: forged}}}, _preload_content=False)
        edits += 1
    return edits


def _over_allocated(sandbox: Sandbox) -> list[str]:
    """Devices whose verified grants on live pods exceed what the device has."""
    assert sandbox.service is not None
    kinds = sandbox.manager.kinds
    used: dict[str, list[int]] = {}
    for pod in json.loads(sandbox._raw.list_pod_for_all_namespaces(_preload_content=False).data)["items"]:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") or not (pod.get("spec") or {}).get("nodeName"):
            continue
        annotations = pod["metadata"].get("annotations") or {}
        try:
            verify_allocation(annotations, kinds, sandbox.keys, pod["metadata"]["uid"])
            allocated = read_allocated(annotations, kinds)
        except (SignatureError, AnnotationError):
            continue  # an edited record: the scheduler keeps counting what it signed (checked below)
        for per_container in allocated.values():
            for grants in per_container:
                for grant in grants:
                    total = used.setdefault(grant.id, [0, 0, 0])
                    total[0] += grant.memory
                    total[1] += grant.cores
                    total[2] += 1
    out = []
    with sandbox.service.state.lock:
        for node in sandbox.service.state.nodes.values():
            for device_id, device in node.devices.items():
                memory, cores, slots = used.get(device_id, (0, 0, 0))
                usage = node.usage(device_id)
                if memory > device.memory or cores > max(device.cores, 100) or slots > device.count:
                    out.append(
                        f"{device_id}: signed grants {memory} MiB/{cores}%/{slots} on {device.memory} MiB/{device.cores}%/{device.count}"
                    )
                if usage.memory > device.memory or usage.used > device.count:
                    out.append(f"{device_id}: scheduler counts {usage.memory} MiB/{usage.used} slots on {device.memory} MiB/{device.count}")
    return out


def _leaks(sandbox: Sandbox, timeout: float) -> list[str]:
    """What is still held once every pod is deleted: node locks, bind phases, scheduler holdings."""
    assert sandbox.service is not None
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        out = []
        for node in json.loads(sandbox._raw.list_node(_preload_content=False).data)["items"]:
            if NODE_LOCK in (node["metadata"].get("annotations") or {}):
                out.append(f"node {node['metadata']['name']}: lock {node['metadata']['annotations'][NODE_LOCK]!r}")
        for pod in json.loads(sandbox._raw.list_pod_for_all_namespaces(_preload_content=False).data)["items"]:
            out.append(
                f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']} still exists ({(pod['metadata'].get('annotations') or {}).get(BIND_PHASE)})"
            )
        with sandbox.service.state.lock:
            out.extend(f"scheduler holds {r.namespace}/{r.name} on {r.node}" for r in sandbox.service.state.pods.values())
        if not out or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def run_chaos(
    seed: int, *, pods: int = 40, workers: int = 6, fuzz: int = 60, queue: RetryQueue | None = None, nodes_file: str | Path | None = None
) -> ChaosReport:
    """One seeded chaos run on a fresh sandbox; returns its figures. Pods not placed are tried again
    as kube-scheduler would (``queue``, a fresh :class:`RetryQueue` by default)."""
    queue = queue if queue is not None else RetryQueue()
    rng = random.Random(seed)
    unclear: list[str] = []
    crashes = 0
    with _watch_logs() as logs, Sandbox(nodes_file) as sandbox:
        assert sandbox.service is not None
        raw = sandbox._raw
        raw.create_namespace({"metadata": {"name": "chaos"}}, _preload_content=False)
        names = _busiest_kind(sandbox)
        specs = [_pod(rng, i, names) for i in range(pods)]
        fault_plan = [rng.random() < 0.35 for _ in range(pods)]
        fault_seeds = [rng.randrange(1 << 30) for _ in range(pods)]
        outcomes = []

        def one(index: int) -> Any:
            """Submit, and try a pod that was not placed again as kube-scheduler would (``queue``):
            the sandbox schedules a pod once, so the pod is deleted and recreated (its own UID)."""
            if fault_plan[index]:
                _inject(sandbox.api.faults, random.Random(fault_seeds[index]))
            return queue.run(
                specs[index]["metadata"]["name"],
                lambda: sandbox.submit(specs[index]),
                lambda outcome: "done" if outcome.phase == "Running" else _verdict(outcome.reason),
                lambda outcome: sandbox.delete(outcome.namespace, outcome.name),
            )

        with ThreadPoolExecutor(workers) as pool:
            outcomes = list(pool.map(one, range(pods)))
        sandbox.api.faults.clear()
        running = []
        unschedulable = 0
        reasons: collections.Counter[str] = collections.Counter()
        for outcome in outcomes:
            if not isinstance(outcome, Exception) and outcome.phase != "Running" and _verdict(outcome.reason) == "unschedulable":
                unschedulable += 1
            if isinstance(outcome, Exception):
                if isinstance(outcome, (HamiError, OSError)) or "ApiException" in type(outcome).__name__:
                    continue  # the sandbox's own client met an injected fault: not a component's crash
                crashes += 1
                unclear.append(f"sandbox crashed: {type(outcome).__name__}: {str(outcome)[:160]}")
                continue
            if outcome.phase == "Running":
                running.append((outcome.namespace, outcome.name))
            else:
                reasons[outcome.reason[:140]] += 1
                if not outcome.reason or any(word in outcome.reason for word in UNCLEAR):
                    unclear.append(f"{outcome.namespace}/{outcome.name} {outcome.phase}: {outcome.reason[:160]!r}")
        inputs = 0
        for path, body in _fuzz_bodies(rng, fuzz, names):
            status, text = _post(sandbox, path, body)
            inputs += 1
            why = _answer_errors(status, text)
            if why:
                unclear.append(f"/{path}: {why}")
        forgeries = _forge(sandbox, rng, running)
        time.sleep(0.3)  # the scheduler's watch sees the edits
        over = _over_allocated(sandbox)
        for namespace, name in [
            (p["metadata"]["namespace"], p["metadata"]["name"])
            for p in json.loads(raw.list_pod_for_all_namespaces(_preload_content=False).data)["items"]
        ]:
            sandbox.delete(namespace, name)
        leaked = _leaks(sandbox, timeout=15.0)
        faults = sandbox.api.faults.injected + sum(fault_plan)
        unclear.extend(logs.bad)
    crashes += len(logs.thread_crashes)
    unclear.extend(logs.thread_crashes)
    return ChaosReport(
        seed,
        pods,
        len(running),
        pods - len(running),
        faults,
        inputs,
        forgeries,
        tuple(over),
        tuple(leaked),
        tuple(unclear),
        crashes,
        tuple(reasons.most_common(5)),
        tuple(queue.tries[spec["metadata"]["name"]] for spec in specs),
        unschedulable,
    )


def _verdict(reason: str) -> str:
    """How kube-scheduler files a pod it could not place: a fit error (no node fits: ``0/N nodes are
    available``, or the extender's filter naming every node) waits for a cluster event; anything
    else (a lost bind, an error, a refused pod a controller recreates) backs off."""
    return "unschedulable" if reason.startswith(("0/", "filter: ")) else "backoff"


# ------------------------------------------------------------ restarts and quota races
#
# Built on the components' public constructors (the in-memory API server, fake kubelets, agents, the
# scheduler service), not on the sandbox cluster, so that each can be stopped and started again the
# way its process would be, while pods are in flight.


@attrs.frozen
class RestartReport:
    seed: int
    pods: int
    running: int
    restarts: tuple[tuple[str, int], ...]
    """Component → how often it was stopped and started during the run."""
    deleted_while_down: int
    """Pods deleted while their node's agent was stopped (its reconcile at start must release them)."""
    faults: int
    """API faults injected during the phases (failed writes of binds and Allocate, latency, cut watches)."""
    samples: int
    """Over-allocation samples taken while pods were in flight."""
    unavailable: int
    """Webhook/extender calls that met a stopped or restarting scheduler service and were tried again."""
    setbacks: tuple[tuple[str, int], ...]
    """Why tries failed before a pod ran (or gave up): the restarts as the pods felt them."""
    quota_tried: int
    quota_admitted: int
    quota_expected: int
    """Admissions the quota holds exactly (both rounds); quota_admitted must equal it."""
    over_allocated: tuple[str, ...]
    leaked: tuple[str, ...]
    unclear: tuple[str, ...]
    crashes: int
    reasons: tuple[tuple[str, int], ...] = ()
    phases: tuple[tuple[str, int, int], ...] = ()
    """(phase, pods running, pods not running) per restart phase."""
    tries: tuple[int, ...] = ()
    """Per pod, the scheduling tries it took (:class:`RetryQueue`)."""
    unschedulable: int = 0
    """Pods left Pending because no node fits them once nothing else was in flight."""

    def lines(self) -> list[str]:
        restarts = ", ".join(f"{what} {count}" for what, count in self.restarts)
        return [
            f"seed {self.seed} restarts: pods {self.pods} (running {self.running}), restarts ({restarts}), "
            f"pods deleted while their agent was down {self.deleted_while_down}, API faults {self.faults}, over-allocation samples {self.samples}, "
            f"calls that met a stopped scheduler {self.unavailable}",
            *(f"  a try failed {count}x: {reason}" for reason, count in self.setbacks),
            "phases: " + ", ".join(f"{name} {ran} running/{other} not" for name, ran, other in self.phases),
            _tries_line(self.pods, self.running, self.unschedulable, self.tries),
            f"quota race: admissions tried {self.quota_tried}, admitted {self.quota_admitted} (the quota holds exactly {self.quota_expected})",
            f"over-allocated {len(self.over_allocated)}, leaked {len(self.leaked)}, unclear errors {len(self.unclear)}, crashes {self.crashes}",
            *(f"  not running {count}x: {reason}" for reason, count in self.reasons),
            *(f"  over-allocated: {x}" for x in self.over_allocated[:10]),
            *(f"  leaked: {x}" for x in self.leaked[:10]),
            *(f"  unclear: {x}" for x in self.unclear[:10]),
        ]


_GENERIC = re.compile(r"chaos-\d+|\d{4}-\d\d-\d\dT[\d:]+(?:\+00:00|Z)?|[0-9a-f]{8}-[0-9a-f-]{27}")
"""Pod names, times and uids in a reason: replaced so that the same reason counts once."""


class _Unavailable(HamiError):
    """The scheduler service did not answer in time (stopped, restarting or not synced yet)."""


class RestartCluster:
    """An API server, a fake kubelet and an agent per node of the most common shareable device kind
    (at most ``max_nodes``), and the scheduler service with the webhook: each restartable."""

    def __init__(self, nodes_file: str | Path | None = None, *, max_nodes: int = 3) -> None:
        self.nodes_file = Path(nodes_file) if nodes_file else default_nodes_file()
        self.manager = load_backends()
        self.keys = SigningKeys.generate()
        self.api = KubeAPIServer()
        self.max_nodes = max_nodes
        self._skew = 0.0
        self.webhook_config = WebhookConfig()
        self.kubelets: dict[str, FakeKubelet] = {}
        self.agents: dict[str, Agent] = {}
        self.dirs: dict[str, Path] = {}
        self.nodes: list[str] = []
        self.service: SchedulerService | None = None
        self.quota: KubeQuotaSource | None = None
        self.capacity: dict[str, tuple[int, int, int]] = {}
        """Device id → (memory MiB, cores %, slots), as the first scheduler saw the nodes."""
        self._core_v1: client.CoreV1Api | None = None
        self._lock = threading.Lock()
        self.unavailable = 0
        """Calls that met the scheduler service stopped, restarting or not ready (and were tried again)."""

    @property
    def core_v1(self) -> Any:
        """The API client for raw calls (``_preload_content=False``: JSON in, urllib3 responses out)."""
        if self._core_v1 is None:
            raise HamiError("the chaos cluster is not started")
        return self._core_v1

    def start(self, timeout: float = 30.0) -> RestartCluster:
        self.api.start()
        self._core_v1 = client.CoreV1Api(self.api.api_client(pool_size=64))
        for backend in self.manager.backends:
            self.manager.configure(backend, {"inventory": str(self.nodes_file)})
        inventory = load_inventory(self.nodes_file)
        kinds = self.manager.kinds
        counts = collections.Counter(d.vendor for node in inventory for d in node.devices)
        shareable = [v for v, _ in counts.most_common() if v in kinds and kinds[v].resources.memory and kinds[v].resources.cores]
        if not shareable:
            raise HamiError(f"chaos: no shareable device kind (memory and cores) in {self.nodes_file}")
        self.names = kinds[shareable[0]].resources
        self.nodes = [n.name for n in inventory if any(d.vendor == shareable[0] for d in n.devices)][: self.max_nodes]
        for name in self.nodes:
            self.dirs[name] = Path(tempfile.mkdtemp(prefix="hc", dir="/tmp"))  # unix socket paths must stay short
            self.kubelets[name] = FakeKubelet(self.dirs[name], name, core_v1=self.core_v1).start()
            self.start_agent(name, timeout)
        self.start_scheduler(timeout)
        assert self.service is not None
        with self.service.state.lock:
            for name in self.nodes:
                for device_id, device in self.service.state.nodes[name].devices.items():
                    self.capacity[device_id] = (device.memory, max(device.cores, 100), device.count)
        return self

    def stop(self) -> None:
        self.stop_scheduler()
        for name in list(self.agents):
            self.stop_agent(name)
        for kubelet in self.kubelets.values():
            kubelet.stop()
        self.api.stop()
        for directory in self.dirs.values():
            shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> RestartCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the processes

    def start_agent(self, node: str, timeout: float = 30.0) -> Agent:
        """A new agent process on ``node`` with the same state directory (its pod ledger survives)."""
        options = AgentOptions(
            node_name=node,
            device_plugin_dir=self.dirs[node],
            health_interval=5.0,
            kubelet_poll_interval=0.1,
            retry_initial=0.1,
            retry_max=1.0,
            state_dir=self.dirs[node] / "state",
        )
        agent = Agent(self.manager, self.core_v1, options, self.keys.verifier()).start()
        self.agents[node] = agent
        if not agent.node_registered.wait(timeout) or not agent.releaser.synced.wait(timeout):
            raise HamiError(f"chaos: the agent on node {node!r} did not register and list its pods within {timeout:.0f} s")
        return agent

    def stop_agent(self, node: str) -> None:
        agent = self.agents.pop(node, None)
        if agent is not None:
            agent.stop()

    def start_scheduler(self, timeout: float = 30.0) -> None:
        """A new scheduler process: everything it knows comes from the API server (nodes, pods, locks)."""
        quota = KubeQuotaSource(self.core_v1, reservations=self.reservation_store(self.core_v1.api_client))
        manager, config = self.manager, self.webhook_config
        service = SchedulerService(
            manager,
            self.api.api_client(pool_size=32),
            SchedulerConfig(),
            self.keys,
            host="127.0.0.1",
            port=0,
            webhook=lambda body: review(manager, body, config, quota),
        ).start()
        deadline = time.monotonic() + timeout
        if not service.cache.wait_synced(timeout):
            service.stop()
            raise HamiError("chaos: the restarted scheduler's cache did not sync")
        while {n for n, s in service.state.nodes.items() if s.devices} < set(self.nodes):
            if time.monotonic() > deadline:
                service.stop()
                raise HamiError("chaos: the restarted scheduler did not see every node's devices")
            time.sleep(0.02)
        self.quota, self.service = quota, service

    def reservation_store(self, api: client.ApiClient) -> LeaseReservations:
        """A webhook process's quota reservations: shared through Leases (so they outlive a restart and
        hold across replicas), on :meth:`quota_clock` (the webhook's own TTL)."""
        return LeaseReservations(client.CoordinationV1Api(api), "hami-system", clock=self.quota_clock)

    def quota_clock(self) -> float:
        """The quota reservations' clock: monotonic, moved on by :meth:`expire_reservations` (a real
        wait of the TTL would make the run slow, and a shorter TTL would expire reservations of pods
        still on their way to the API server: a round of admissions on a loaded machine takes seconds)."""
        return time.monotonic() + self._skew

    def expire_reservations(self) -> None:
        """Let every quota reservation made so far outlive its TTL."""
        self._skew += RESERVATION_TTL + 1.0

    def stop_scheduler(self) -> None:
        service, self.service = self.service, None
        if service is not None:
            service.stop()

    def restart_scheduler(self) -> None:
        self.stop_scheduler()
        self.start_scheduler()

    # ------------------------------------------------------------ kube-scheduler and kubelet

    def verb(self, verb: str, body: Any, timeout: float = 20.0) -> Any:
        """POST to the scheduler service like kube-scheduler and the API server do: while it is down or
        not ready, try again until ``timeout`` (then :class:`_Unavailable`)."""
        deadline = time.monotonic() + timeout
        data = json.dumps(body).encode()
        last = "not started"
        while True:
            service = self.service
            if service is not None:
                server = service.server if verb == "webhook" else service.extender_server
                request = urllib.request.Request(
                    f"{server.url}/{verb}", data=data, headers={"Content-Type": "application/json"}, method="POST"
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        return json.loads(response.read())
                except urllib.error.HTTPError as exc:
                    if exc.code < 500:
                        raise HamiError(f"/{verb} answered HTTP {exc.code}: {exc.read()[:200]!r}") from exc
                    last = f"HTTP {exc.code}"
                except (OSError, http.client.HTTPException) as exc:  # stopped mid-request or between requests
                    last = f"{type(exc).__name__}: {exc}"
            else:
                last = "stopped"
            with self._lock:
                self.unavailable += 1
            if time.monotonic() > deadline:
                raise _Unavailable(f"the scheduler service did not answer /{verb} within {timeout:.0f} s ({last})")
            time.sleep(0.05)

    def submit(self, spec: Mapping[str, Any]) -> tuple[str, str, str]:
        """Webhook, create, filter, bind, kubelet admission: ``(phase, reason, node)``."""
        pod: dict[str, Any] = json.loads(json.dumps(spec))
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        answer = self.verb("webhook", pod_create_review(pod, namespace, "chaos"))["response"]
        if not answer.get("allowed"):
            return "Rejected", f"admission webhook: {(answer.get('status') or {}).get('message', 'denied')}", ""
        if answer.get("patch"):
            pod = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(answer["patch"])))
        created = json.loads(self.core_v1.create_namespaced_pod(namespace, pod, _preload_content=False).data)
        try:
            result = self.verb("filter", {"Pod": created, "NodeNames": list(self.nodes)})
            if result.get("Error") or not result.get("NodeNames"):
                failed = "; ".join(f"{n}: {why}" for n, why in sorted((result.get("FailedNodes") or {}).items()))
                if result.get("Error"):
                    return "Pending", f"filter error: {result['Error']}", ""
                return "Pending", f"filter: {failed or 'no node named'}", ""
            scores = self.verb("prioritize", {"Pod": created, "NodeNames": result["NodeNames"]})
            best = {entry["Host"]: entry["Score"] for entry in scores or ()}
            node = max(result["NodeNames"], key=lambda n: best.get(n, 0))  # kube-scheduler: the highest score
            bound = self.verb("bind", {"PodName": name, "PodNamespace": namespace, "PodUID": created["metadata"]["uid"], "Node": node})
        except _Unavailable as exc:
            return "Pending", str(exc), ""
        if bound.get("Error"):
            return "Pending", f"bind: {bound['Error']}", ""
        admitted = self.kubelets[node].admit(json.loads(self.core_v1.read_namespaced_pod(name, namespace, _preload_content=False).data))
        if not admitted.admitted:  # kubelet fails the pod (it does not retry Allocate)
            status = {"status": {"phase": "Failed", "reason": admitted.reason, "message": admitted.message}}
            self.core_v1.patch_namespaced_pod_status(name, namespace, status, _preload_content=False)
            return "Failed", f"kubelet: {admitted.reason}: {admitted.message}", node
        self.core_v1.patch_namespaced_pod_status(name, namespace, {"status": {"phase": "Running"}}, _preload_content=False)
        return "Running", "", node

    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace is None:
            items = json.loads(self.core_v1.list_pod_for_all_namespaces(_preload_content=False).data)["items"]
        else:
            items = json.loads(self.core_v1.list_namespaced_pod(namespace, _preload_content=False).data)["items"]
        return list(items)

    def delete(self, pod: Mapping[str, Any]) -> None:
        """Delete a pod as a user would; kubelet (if it ran there) lets go of its devices."""
        meta = pod["metadata"]
        try:
            self.core_v1.delete_namespaced_pod(meta["name"], meta["namespace"], _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise
        node = (pod.get("spec") or {}).get("nodeName")
        if node in self.kubelets:
            self.kubelets[node].release(pod)


def _signed_over(cluster: RestartCluster) -> list[str]:
    """Devices whose verified grants on live pods exceed what the device has (read from the API alone:
    it holds while the scheduler is down)."""
    used: dict[str, list[int]] = {}
    for pod in cluster.pods():
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") or not (pod.get("spec") or {}).get("nodeName"):
            continue
        annotations = pod["metadata"].get("annotations") or {}
        try:
            verify_allocation(annotations, cluster.manager.kinds, cluster.keys, pod["metadata"]["uid"])
            allocated = read_allocated(annotations, cluster.manager.kinds)
        except (SignatureError, AnnotationError):
            continue
        for per_container in allocated.values():
            for grants in per_container:
                for grant in grants:
                    total = used.setdefault(grant.id, [0, 0, 0])
                    total[0] += grant.memory
                    total[1] += grant.cores
                    total[2] += 1
    out = []
    for device_id, (memory, cores, slots) in used.items():
        have = cluster.capacity.get(device_id)
        if have is not None and (memory > have[0] or cores > have[1] or slots > have[2]):
            out.append(f"{device_id}: signed grants {memory} MiB/{cores}%/{slots} on {have[0]} MiB/{have[1]}%/{have[2]}")
    return out


class _Sampler:
    """Samples the over-allocation invariant every ``interval`` seconds while the run goes on."""

    def __init__(self, cluster: RestartCluster, interval: float = 0.2) -> None:
        self.cluster = cluster
        self.interval = interval
        self.samples = 0
        self.found: dict[str, None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        for line in _signed_over(self.cluster):
            self.found.setdefault(line)
        self.samples += 1

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sample()


def _quota_race(cluster: RestartCluster, admissions: int, holds: int, dropped: int) -> tuple[int, int, int, list[str]]:
    """Many concurrent admissions against a ResourceQuota on the device-memory share that holds exactly
    ``holds`` pods: round 1 must admit exactly ``holds``; ``dropped`` of them are never created (another
    admission step refused them), so once their reservations expire round 2 must admit exactly
    ``dropped`` more; then one more must be refused (its pod list ends round 2's reservations).
    Returns (tried, admitted, expected, problems)."""
    names = cluster.names
    assert names.memory is not None
    namespace, share = "quota", 1000
    cluster.core_v1.create_namespace({"metadata": {"name": namespace}}, _preload_content=False)
    key = f"limits.{names.memory}"
    quota = {"metadata": {"name": "shares"}, "spec": {"hard": {key: str(holds * share)}}}
    cluster.core_v1.create_namespaced_resource_quota(namespace, quota, _preload_content=False)
    problems: list[str] = []

    tickets = iter(range(1 << 30))
    ticket_lock = threading.Lock()
    # a second webhook replica with its own process state (API client, reservation store) beside the
    # scheduler's: every other admission goes through it, so the quota must hold across replicas
    other_api = cluster.api.api_client(pool_size=admissions)
    other = KubeQuotaSource(client.CoreV1Api(other_api), reservations=cluster.reservation_store(other_api))

    def admit(name: str, drop: bool, replica: bool = False) -> bool:
        """One admission; the API server creates an admitted pod at once, except the first ``dropped``
        of a dropping round (refused after us by another admission step: their reservations must expire)."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "containers": [{"name": "c", "image": "busybox", "resources": {"limits": {names.count: "1", names.memory: str(share)}}}]
            },
        }
        document = pod_create_review(pod, namespace, "chaos")
        if replica:
            answer = json.loads(review(cluster.manager, json.dumps(document).encode(), cluster.webhook_config, other)[1])["response"]
        else:
            answer = cluster.verb("webhook", document)["response"]
        if not answer.get("allowed"):
            message = str((answer.get("status") or {}).get("message", ""))
            if not message.startswith("exceeded quota: shares"):
                problems.append(f"quota refusal without kube-apiserver's wording: {message[:160]!r}")
            return False
        with ticket_lock:
            ticket = next(tickets)
        if not (drop and ticket < dropped):
            pod = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(answer["patch"]))) if answer.get("patch") else pod
            cluster.core_v1.create_namespaced_pod(namespace, pod, _preload_content=False)
        return True

    def round_(label: str, drop: bool) -> int:
        with ThreadPoolExecutor(admissions) as pool:
            return sum(pool.map(lambda i: admit(f"{label}-{i}", drop, i % 2 == 1), range(admissions)))

    first = round_("first", drop=True)
    if first != holds:
        problems.append(f"quota race round 1: {first} of {admissions} concurrent admissions admitted, the quota holds exactly {holds}")
    cluster.expire_reservations()  # the reservations of the pods never created expire
    second = round_("second", drop=False)
    if second != min(dropped, first):
        problems.append(f"quota race round 2: {second} admitted once {min(dropped, first)} reservations of pods never created expired")
    if admit("full", drop=False):  # its pod list also ends the reservations of round 2's pods, now listed
        problems.append("the quota admitted a pod once every share was held by a created pod")
    other_api.close()
    charged = sum(1 for p in cluster.pods(namespace)) * share
    if charged > holds * share:
        problems.append(f"quota {key}={holds * share} exceeded: the namespace's pods are charged {charged}")
    return 2 * admissions + 1, first + second, holds + dropped, problems


def run_restarts(
    seed: int,
    *,
    pods: int = 24,
    workers: int = 6,
    queue: RetryQueue | None = None,
    quota_admissions: int = 16,
    quota_holds: int = 5,
    fault_rate: float = 0.25,
    nodes_file: str | Path | None = None,
) -> RestartReport:
    """One seeded run of three phases of ``pods`` parallel pods each, with the scheduler service, then
    an agent (pods deleted while it is down), then a kubelet restarted while pods are in flight; then a
    quota race; then every pod deleted and the leaks counted. Pods not placed are tried again as
    kube-scheduler would (``queue``, a fresh :class:`RetryQueue` per phase by default)."""
    rng = random.Random(seed)
    unclear: list[str] = []
    reasons: collections.Counter[str] = collections.Counter()
    restarts: collections.Counter[str] = collections.Counter()
    crashes = 0
    running = 0
    deleted_while_down = 0
    counter = iter(range(1 << 30))
    phases: list[tuple[str, int, int]] = []
    setbacks: collections.Counter[str] = collections.Counter()
    setback_lock = threading.Lock()
    planned: list[int] = []
    tries: list[int] = []
    unschedulable_ = 0
    with _watch_logs() as logs, RestartCluster(nodes_file) as cluster, _Sampler(cluster) as sampler:
        cluster.core_v1.create_namespace({"metadata": {"name": "chaos"}}, _preload_content=False)

        def one(spec: dict[str, Any], queue: RetryQueue) -> Any:
            """Like kube-scheduler, a pod that did not run is tried again (``queue``; recreated under a new name)."""
            if spec.pop("fault", None) is not None:
                _inject(cluster.api.faults, random.Random(spec.pop("fault_seed")))
            key = f"pod-{next(counter)}"

            def attempt() -> tuple[str, str, str]:
                spec["metadata"]["name"] = f"chaos-{next(counter)}"
                outcome = cluster.submit(spec)
                if outcome[0] != "Running":
                    with setback_lock:
                        setbacks[_GENERIC.sub("…", outcome[1])[:140]] += 1
                return outcome

            def undo(_: tuple[str, str, str]) -> None:
                with contextlib.suppress(ApiException):
                    pod = json.loads(cluster.core_v1.read_namespaced_pod(spec["metadata"]["name"], "chaos", _preload_content=False).data)
                    cluster.delete(pod)

            return queue.run(key, attempt, lambda outcome: "done" if outcome[0] == "Running" else _verdict(outcome[1]), undo)

        def batch(label: str, disrupt: Any, at: int) -> None:
            """``pods`` pods on ``workers`` threads; ``disrupt`` runs once ``at`` of them are done."""
            nonlocal crashes, running, unschedulable_
            done = threading.Semaphore(0)
            specs = [_pod(rng, 0, cluster.names) for _ in range(pods)]
            for spec in specs:  # the pod's own keys: gone before it is submitted
                if rng.random() < fault_rate:
                    spec.update(fault=True, fault_seed=rng.randrange(1 << 30))
                    planned.append(1)
            errors: list[BaseException] = []

            def disruptor() -> None:
                for _ in range(at):
                    done.acquire()
                try:
                    disrupt()
                except BaseException as exc:  # reported as a crash, the run goes on
                    errors.append(exc)

            thread = threading.Thread(target=disruptor, name="chaos-disrupt", daemon=True)
            thread.start()

            phase_queue = queue if queue is not None else RetryQueue()

            def tracked(spec: dict[str, Any]) -> Any:
                try:
                    return one(spec, phase_queue)
                except Exception as exc:  # a crash is a figure of the report, not an abort
                    return exc
                finally:
                    done.release()

            with ThreadPoolExecutor(workers) as pool:
                outcomes = list(pool.map(tracked, specs))
            thread.join(60)
            for exc in errors:
                crashes += 1
                unclear.append(f"restart crashed: {type(exc).__name__}: {str(exc)[:160]}")
            ran = 0
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    crashes += 1
                    unclear.append(f"submit crashed: {type(outcome).__name__}: {str(outcome)[:160]}")
                elif outcome[0] == "Running":
                    ran += 1
                else:
                    reasons[_GENERIC.sub("…", outcome[1])[:140]] += 1
                    if not outcome[1] or any(word in outcome[1] for word in UNCLEAR):
                        unclear.append(f"{outcome[0]}: {outcome[1][:160]!r}")
            running += ran
            phases.append((label, ran, len(outcomes) - ran))
            tries.extend(phase_queue.tries.values())
            unschedulable_ += sum(
                1 for o in outcomes if not isinstance(o, Exception) and o[0] != "Running" and _verdict(o[1]) == "unschedulable"
            )

        def churn() -> None:
            """Half the running pods end: room for the next phase."""
            live = [p for p in cluster.pods("chaos") if (p.get("status") or {}).get("phase") == "Running"]
            for pod in rng.sample(live, len(live) // 2):
                cluster.delete(pod)
            for pod in cluster.pods("chaos"):
                if (pod.get("status") or {}).get("phase") != "Running":
                    cluster.delete(pod)

        def scheduler() -> None:
            cluster.restart_scheduler()
            restarts["scheduler"] += 1

        batch("scheduler restart", scheduler, pods // 3)
        churn()
        target = collections.Counter(
            (p.get("spec") or {}).get("nodeName") for p in cluster.pods("chaos") if (p.get("spec") or {}).get("nodeName")
        )
        agent_node = str(target.most_common(1)[0][0]) if target else cluster.nodes[0]

        def agent() -> None:
            nonlocal deleted_while_down
            cluster.stop_agent(agent_node)
            on_node = [p for p in cluster.pods("chaos") if (p.get("spec") or {}).get("nodeName") == agent_node]
            for pod in rng.sample(on_node, (len(on_node) + 1) // 2):
                cluster.delete(pod)
                deleted_while_down += 1
            time.sleep(0.3)  # binds onto the node meanwhile meet a kubelet without the plugin
            cluster.start_agent(agent_node)
            restarts["agent"] += 1

        batch("agent restart", agent, pods // 4)
        live = {p["metadata"]["uid"] for p in cluster.pods()}
        for uid, held in cluster.agents[agent_node].releaser.ledger.snapshot().items():
            if uid not in live:
                unclear.append(f"agent on {agent_node} still holds deleted pod {held['metadata']['name']} after its restart")
        churn()
        kubelet_node = rng.choice(cluster.nodes)

        def kubelet() -> None:
            cluster.kubelets[kubelet_node].restart()
            restarts["kubelet"] += 1

        batch("kubelet restart", kubelet, pods // 3)
        cluster.api.faults.clear()
        faults = cluster.api.faults.injected + len(planned)
        tried, admitted, expected, problems = _quota_race(cluster, quota_admissions, quota_holds, dropped=2)
        unclear.extend(problems)
        assert cluster.service is not None
        over = list(sampler.found)
        with cluster.service.state.lock:
            for node in cluster.nodes:
                state = cluster.service.state.nodes[node]
                for device_id, device in state.devices.items():
                    usage = state.usage(device_id)
                    if usage.memory > device.memory or usage.used > device.count:
                        over.append(
                            f"{device_id}: scheduler counts {usage.memory} MiB/{usage.used} slots on {device.memory} MiB/{device.count}"
                        )
        for pod in cluster.pods():
            cluster.delete(pod)
        leaked = _restart_leaks(cluster, timeout=15.0)
        unclear.extend(logs.bad)
    crashes += len(logs.thread_crashes)
    unclear.extend(logs.thread_crashes)
    over.extend(line for line in sampler.found if line not in over)
    return RestartReport(
        seed,
        3 * pods,
        running,
        tuple(sorted(restarts.items())),
        deleted_while_down,
        faults,
        sampler.samples,
        cluster.unavailable,
        tuple(setbacks.most_common(6)),
        tried,
        admitted,
        expected,
        tuple(over),
        tuple(leaked),
        tuple(unclear),
        crashes,
        tuple(reasons.most_common(6)),
        tuple(phases),
        tuple(tries),
        unschedulable_,
    )


def _restart_leaks(cluster: RestartCluster, timeout: float) -> list[str]:
    """What is held once every pod is gone: node locks, pods, scheduler holdings, agents' pod ledgers,
    kubelets' device assignments, quota reservations."""
    deadline = time.monotonic() + timeout
    while True:
        out: list[str] = []
        for node in json.loads(cluster.core_v1.list_node(_preload_content=False).data)["items"]:
            if NODE_LOCK in (node["metadata"].get("annotations") or {}):
                out.append(f"node {node['metadata']['name']}: lock {node['metadata']['annotations'][NODE_LOCK]!r}")
        out.extend(f"pod {p['metadata']['namespace']}/{p['metadata']['name']} still exists" for p in cluster.pods())
        service = cluster.service
        if service is not None:
            with service.state.lock:
                out.extend(f"scheduler holds {r.namespace}/{r.name} on {r.node}" for r in service.state.pods.values())
        for name, agent in cluster.agents.items():
            out.extend(f"agent on {name}: ledger holds {p['metadata']['name']}" for p in agent.releaser.ledger.snapshot().values())
        for name, kubelet in cluster.kubelets.items():
            out.extend(f"kubelet on {name}: devices still assigned to {ns}/{pod}" for ns, pod in kubelet.pod_resources())
        quota = cluster.quota
        if quota is not None:
            with quota.reservations.lock("quota"):
                pending = quota.reservations.in_flight("quota", cluster.pods("quota"))
            out.extend(f"quota reservation of {r.pod} still counts" for r in pending)
        if not out or time.monotonic() > deadline:
            return out
        time.sleep(0.1)
