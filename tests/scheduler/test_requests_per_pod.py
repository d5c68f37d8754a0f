"""What one pod costs the API server through the extender (issue 29): which requests, over how many
connections, and how many socket writes per answer; and that the cheaper node lock keeps 409 safety."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from kubernetes import client

from hami.fakes.extender import TEST_KEYS, ExtenderHarness
from hami.fakes.kubeapi import KubeAPIServer
from hami.fakes.kubeapi.audit import RequestLog
from hami.kube import release
from hami.plugin.model import SchedulableDevice
from hami.scheduler import state as state_module
from hami.scheduler.config import SchedulerConfig
from hami.scheduler.core import InformedNodeLock
from hami.scheduler.state import ClusterState, Trust
from hami.wire.allocation import verify_allocation
from hami.wire.annotations import BIND_PHASE, BIND_TIME, NODE_LOCK
from hami.wire.codec import encode_node_devices
from hami.wire.nodelock import LockHolder, NodeLockError
from hami.wire.signing import SigningKeys
from hami_nvidia.plugin import KIND, plugin


def client_as(server: KubeAPIServer, component: str) -> client.CoreV1Api:
    """A client whose requests the request log files under ``component``."""
    api = server.api_client()
    api.configuration.api_key = {"BearerToken": component}
    return client.CoreV1Api(api)


def add_node(server: KubeAPIServer, name: str) -> None:
    devices = [
        SchedulableDevice(id=f"{name}-{i}", vendor="NVIDIA", type="NVIDIA A100", count=10, memory=10000, cores=100, index=i)
        for i in range(2)
    ]
    server.store.create(
        "nodes", {"metadata": {"name": name, "annotations": {KIND.annotations.node_register: encode_node_devices(devices, "json")}}}
    )


def add_pod(server: KubeAPIServer, name: str) -> dict[str, Any]:
    limits = {"nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"}
    body = {
        "metadata": {"name": name},
        "spec": {"schedulerName": "hami-scheduler", "containers": [{"name": "main", "image": "cuda", "resources": {"limits": limits}}]},
    }
    return server.store.create("pods", body, namespace="default")


@pytest.fixture
def harness(hami_manager: Any, register_backend: Any, kube_apiserver: KubeAPIServer) -> Iterator[ExtenderHarness]:
    register_backend(plugin)
    add_node(kube_apiserver, "gpu-a")
    add_node(kube_apiserver, "gpu-b")
    h = ExtenderHarness(hami_manager, client_as(kube_apiserver, "scheduler"), config=SchedulerConfig(events=False)).start()
    yield h
    h.stop()


def schedule(harness: ExtenderHarness, pod: dict[str, Any]) -> str:
    result = harness.post("filter", {"Pod": pod, "NodeNames": ["gpu-a", "gpu-b"]})
    (node,) = result["NodeNames"]
    meta = pod["metadata"]
    bound = harness.post("bind", {"PodName": meta["name"], "PodNamespace": "default", "PodUID": meta["uid"], "Node": node})
    assert bound["Error"] == ""
    return str(node)


def writes_of(log: RequestLog) -> list[str]:
    return sorted(
        f"{r.verb} {r.resource}" + (f"/{r.subresource}" if r.subresource else "")
        for r in log.by_component("scheduler")
        if r.verb not in ("list", "watch")
    )


def test_a_pod_costs_three_writes_and_is_bound_allocating_and_signed(harness: ExtenderHarness, kube_apiserver: KubeAPIServer) -> None:
    log = kube_apiserver.request_log = RequestLog()
    pod = add_pod(kube_apiserver, "trainer")
    node = schedule(harness, pod)
    # the allocation (filter), the node lock taken on the informer's resourceVersion, the Binding carrying bind-phase
    assert writes_of(log) == ["create pods/binding", "patch nodes", "patch pods"]
    stored = kube_apiserver.store.get("pods", "trainer", "default")
    annotations = stored["metadata"]["annotations"]
    assert stored["spec"]["nodeName"] == node
    assert annotations[BIND_PHASE] == "allocating" and annotations[BIND_TIME].isdigit()
    verify_allocation(annotations, {"NVIDIA": KIND}, TEST_KEYS, stored["metadata"]["uid"])
    holder = LockHolder.decode(kube_apiserver.store.get("nodes", node)["metadata"]["annotations"][NODE_LOCK])
    assert holder is not None and (holder.namespace, holder.name) == ("default", "trainer")


def test_scheduling_reuses_connections(harness: ExtenderHarness, kube_apiserver: KubeAPIServer) -> None:
    before = kube_apiserver.connections_accepted
    for i in range(12):
        schedule(harness, add_pod(kube_apiserver, f"p{i}"))
        # the node agent's part: Allocate done, lock free for the next pod
        for node in ("gpu-a", "gpu-b"):
            kube_apiserver.store.patch("nodes", node, {"metadata": {"annotations": {NODE_LOCK: None}}}, "application/merge-patch+json")
    # 36 scheduler requests; before raw answers were read to their end, 36 connections
    assert kube_apiserver.connections_accepted - before <= 4


class CountingSocket:
    def __init__(self, sock: socket.socket, writes: list[int]) -> None:
        self._sock, self._writes = sock, writes

    def sendall(self, data: Any, *args: Any) -> None:
        self._writes.append(len(data))
        self._sock.sendall(data, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/filter", {"Pod": {"metadata": {"name": "nobody", "namespace": "default"}}, "NodeNames": ["gpu-a"]}, 200),
        ("POST", "/bind", {"PodName": "nobody", "PodNamespace": "default", "Node": "gpu-a"}, 200),
        ("POST", "/filter", b"{not json", 400),
        ("POST", "/nope", {}, 404),
        ("GET", "/healthz", None, 200),
        ("GET", "/metrics", None, 200),
    ],
)
def test_each_extender_answer_is_one_write(harness: ExtenderHarness, method: str, path: str, body: Any, status: int) -> None:
    writes: list[int] = []
    server = harness.server
    original = server.finish_request
    server.finish_request = lambda request, client_address: original(CountingSocket(request, writes), client_address)  # type: ignore[method-assign]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    for _ in range(2):
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        assert response.status == status
        assert response.getheader("Content-Length") == str(len(payload))
    conn.close()
    assert len(writes) == 2, writes


# ------------------------------------------------------------ the one-request node lock keeps 409 safety


@pytest.fixture
def node_rv(kube_apiserver: KubeAPIServer) -> str:
    node = kube_apiserver.store.create("nodes", {"metadata": {"name": "n"}})
    return str(node["metadata"]["resourceVersion"])


def lock_of(server: KubeAPIServer) -> str | None:
    return (server.store.get("nodes", "n")["metadata"].get("annotations") or {}).get(NODE_LOCK)


def test_a_fresh_copy_takes_the_lock_in_one_request(kube_apiserver: KubeAPIServer, node_rv: str) -> None:
    log = kube_apiserver.request_log = RequestLog()
    lock = InformedNodeLock(client_as(kube_apiserver, "scheduler"), lambda node: (None, node_rv))
    lock.acquire("n", "default", "p")
    assert writes_of(log) == ["patch nodes"] and len(log.records) == 1
    assert (lock_of(kube_apiserver) or "").endswith(",default,p")


def test_a_stale_copy_never_takes_a_lock_another_pod_holds(kube_apiserver: KubeAPIServer, node_rv: str) -> None:
    v1 = client_as(kube_apiserver, "scheduler")
    kube_apiserver.store.create(
        "pods", {"metadata": {"name": "holder"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}, namespace="default"
    )
    held = LockHolder(datetime.now(timezone.utc).replace(microsecond=0), "default", "holder").encode()
    release(v1.patch_node("n", {"metadata": {"annotations": {NODE_LOCK: held}}}, _preload_content=False))
    lock = InformedNodeLock(v1, lambda node: (None, node_rv))  # the informer has not seen the lock yet
    with pytest.raises(NodeLockError, match="locked by pod default/holder"):
        lock.acquire("n", "default", "p")
    assert lock_of(kube_apiserver) == held


def test_a_stale_copy_of_a_free_node_falls_back_to_reading_it(kube_apiserver: KubeAPIServer, node_rv: str) -> None:
    v1 = client_as(kube_apiserver, "scheduler")
    release(v1.patch_node("n", {"metadata": {"labels": {"heartbeat": "1"}}}, _preload_content=False))  # a write the copy missed
    log = kube_apiserver.request_log = RequestLog()
    lock = InformedNodeLock(v1, lambda node: (None, node_rv))
    lock.acquire("n", "default", "p")
    assert [(r.verb, r.resource) for r in log.records] == [("patch", "nodes"), ("get", "nodes"), ("patch", "nodes")]  # 409, read, patch
    assert (lock_of(kube_apiserver) or "").endswith(",default,p")


def test_a_copy_showing_the_lock_held_reads_the_node(kube_apiserver: KubeAPIServer, node_rv: str) -> None:
    """A copy that still shows a lock (released since) is not trusted either way: the node is read."""
    log = kube_apiserver.request_log = RequestLog()
    lock = InformedNodeLock(client_as(kube_apiserver, "scheduler"), lambda node: ("2020-01-01T00:00:00Z,default,old", node_rv))
    lock.acquire("n", "default", "p")
    assert [(r.verb, r.resource) for r in log.records] == [("get", "nodes"), ("patch", "nodes")]


# ------------------------------------------------------------ signature verdicts, once per signed record


def test_a_signed_record_is_verified_once_across_its_events(
    harness: ExtenderHarness, kube_apiserver: KubeAPIServer, hami_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    schedule(harness, add_pod(kube_apiserver, "p"))
    pod = kube_apiserver.store.get("pods", "p", "default")
    uid = pod["metadata"]["uid"]
    calls: list[str] = []
    real = state_module.verify

    def counting(*args: Any) -> None:
        calls.append(args[2])
        real(*args)

    monkeypatch.setattr(state_module, "verify", counting)
    state = ClusterState(hami_manager.kinds, capacity_devices=hami_manager.node_capacity_devices, keys=TEST_KEYS)
    for version, phase in (("10", "allocating"), ("11", "success"), ("12", "success")):  # the pod's later events
        state.apply_pod(
            {
                **pod,
                "metadata": {
                    **pod["metadata"],
                    "resourceVersion": version,
                    "annotations": {**pod["metadata"]["annotations"], BIND_PHASE: phase},
                },
            }
        )
    assert calls == [uid]
    assert state.pods[uid].trust == Trust.SIGNED
    allocated = KIND.annotations.allocated
    edited = {**pod["metadata"]["annotations"], allocated: pod["metadata"]["annotations"][allocated].replace("3000", "300")}
    first = state._unverified(edited, uid)
    assert first is not None and "changed" in first  # an edit is a different record: checked, and refused
    assert state._unverified(edited, uid) == first and calls == [uid, uid]
    state.keys = SigningKeys.from_seed(b"another-scheduler-key-0123456789")  # new keys: earlier verdicts do not carry over
    assert state._unverified(pod["metadata"]["annotations"], uid) is not None
    assert calls == [uid, uid, uid]


def test_a_node_event_that_leaves_the_device_list_decodes_nothing(
    hami_manager: Any, register_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taking and releasing the node lock (two node events per pod) must not re-parse the device list."""
    register_backend(plugin)
    decoded: list[str] = []
    real = state_module.decode_node_devices

    def counting(text: str, *args: Any) -> Any:
        decoded.append(text)
        return real(text, *args)

    monkeypatch.setattr(state_module, "decode_node_devices", counting)
    state = ClusterState(hami_manager.kinds, capacity_devices=hami_manager.node_capacity_devices)

    def node(gpus: int, version: str, lock: str | None = None) -> dict[str, Any]:
        devices = [
            SchedulableDevice(id=f"G-{i}", vendor="NVIDIA", type="NVIDIA A100", count=10, memory=10000, cores=100, index=i)
            for i in range(gpus)
        ]
        annotations = {KIND.annotations.node_register: encode_node_devices(devices, "json"), **({NODE_LOCK: lock} if lock else {})}
        return {"metadata": {"name": "n", "resourceVersion": version, "annotations": annotations}}

    state.apply_node(node(2, "1"))
    state.apply_node(node(2, "2", lock="2026-01-01T00:00:00Z,default,p"))
    state.apply_node(node(2, "3"))
    assert len(decoded) == 1 and sorted(state.nodes["n"].devices) == ["G-0", "G-1"]
    state.apply_node(node(3, "4"))  # the device plugin registered another device
    assert len(decoded) == 2 and sorted(state.nodes["n"].devices) == ["G-0", "G-1", "G-2"]
    state.delete_node("n")
    state.apply_node(node(3, "5"))  # back after a delete: read afresh
    assert len(decoded) == 3 and sorted(state.nodes["n"].devices) == ["G-0", "G-1", "G-2"]
