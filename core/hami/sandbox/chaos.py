"""A seeded chaos run against a whole sandbox cluster (issue 19): parallel pods onto nearly full nodes
while the API server fails, slows down and drops watches, fuzzed extender and webhook bodies, forged
and edited allocation annotations; then the three figures that must stay 0:

- over-allocated: devices whose verified grants (signed records on live pods) exceed memory, cores or slots;
- leaked: node locks, bind phases or scheduler holdings left once every pod is gone;
- unclear: refusals without a reason naming what, "internal error" answers, tracebacks in the logs.

``tests/chaos`` runs a small seed in the default test run; ``bench/chaos.py`` a larger one. The same
seed replays the same pods, faults and inputs (thread interleavings still vary).
"""

from __future__ import annotations

import collections
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from hami.errors import AnnotationError, HamiError
from hami.plugin.model import ResourceNames
from hami.sandbox.cluster import Sandbox
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

    def lines(self) -> list[str]:
        return [
            f"seed {self.seed}: pods {self.pods} (running {self.running}, refused or pending {self.refused}), faults injected {self.faults}, "
            f"fuzzed inputs {self.inputs}, forged/edited annotations {self.forgeries}",
            f"over-allocated {len(self.over_allocated)}, leaked {len(self.leaked)}, unclear errors {len(self.unclear)}, crashes {self.crashes}",
            *(f"  refused {count}x: {reason}" for reason, count in self.reasons),
            *(f"  over-allocated: {x}" for x in self.over_allocated[:10]),
            *(f"  leaked: {x}" for x in self.leaked[:10]),
            *(f"  unclear: {x}" for x in self.unclear[:10]),
        ]


class _LogWatch(logging.Handler):
    """Collects log records that carry a traceback or an unclear message."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

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
    try:
        yield handler
    finally:
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


def _inject(sandbox: Sandbox, rng: random.Random) -> None:
    """One fault: a 409/500/503 on the writes of a bind or Allocate, latency, or cut watches."""
    faults = sandbox.api.faults
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
    seed: int, *, pods: int = 40, workers: int = 6, fuzz: int = 60, retries: int = 3, nodes_file: str | Path | None = None
) -> ChaosReport:
    """One seeded chaos run on a fresh sandbox; returns its figures."""
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
            """Submit, and like kube-scheduler's backoff queue try a pod that was not placed again
            (a lost node lock, a failed write): deleted and recreated, so each try has its own UID."""
            if fault_plan[index]:
                _inject(sandbox, random.Random(fault_seeds[index]))
            outcome: Any = None
            for attempt in range(retries + 1):
                try:
                    outcome = sandbox.submit(specs[index])
                except Exception as exc:  # a crash is a figure of the report, not an abort
                    return exc
                if outcome.phase == "Running" or attempt == retries:
                    return outcome
                try:
                    sandbox.delete(outcome.namespace, outcome.name)
                except Exception as exc:  # the same: reported, not raised
                    return exc
                time.sleep(0.05 * (attempt + 1))
            return outcome

        with ThreadPoolExecutor(workers) as pool:
            outcomes = list(pool.map(one, range(pods)))
        sandbox.api.faults.clear()
        running = []
        reasons: collections.Counter[str] = collections.Counter()
        for outcome in outcomes:
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
    )
