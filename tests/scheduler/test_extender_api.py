"""The extender over real HTTP against the in-memory API server, driven like kube-scheduler drives it."""

from __future__ import annotations

import json
import random
import threading
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from hami.fakes.extender import TEST_KEYS, ExtenderHarness
from hami.fakes.kubeapi import KubeAPIServer
from hami.plugin.model import SchedulableDevice
from hami.scheduler.config import SchedulerConfig
from hami.scheduler.state import ClusterState
from hami.wire.allocation import read_allocated, verify_allocation
from hami.wire.annotations import ASSIGNED_NODE, BIND_PHASE
from hami.wire.codec import encode_node_devices
from hami.wire.nodelock import NodeLock
from hami_nvidia.plugin import KIND, plugin


@pytest.fixture
def manager(hami_manager, register_backend):
    register_backend(plugin)
    return hami_manager


def add_node(core_v1, name, devices):
    annotation = encode_node_devices(devices, "json")
    core_v1.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name, annotations={KIND.annotations.node_register: annotation})))


def gpus(prefix, n, memory=10000, count=10):
    return [
        SchedulableDevice(id=f"{prefix}-{i}", vendor="NVIDIA", type="NVIDIA A100", count=count, memory=memory, cores=100, index=i)
        for i in range(n)
    ]


def add_pod(core_v1, name, limits, namespace="default", annotations=None):
    body = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace, annotations=annotations),
        spec=client.V1PodSpec(
            scheduler_name="hami-scheduler",
            containers=[client.V1Container(name="main", image="cuda", resources=client.V1ResourceRequirements(limits=limits))],
        ),
    )
    return core_v1.create_namespaced_pod(namespace, body)


@pytest.fixture
def harness(manager, core_v1):
    add_node(core_v1, "gpu-a", gpus("GPU-a", 2))
    add_node(core_v1, "gpu-b", gpus("GPU-b", 2))
    h = ExtenderHarness(manager, core_v1).start()
    h.cache.nodes.synced.wait(5)
    yield h
    h.stop()


def wait_for(predicate, timeout=5.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_filter_then_bind_leaves_a_bound_signed_pod(harness, core_v1):
    add_pod(core_v1, "trainer", {"nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"})
    scheduled = harness.schedule("default", "trainer")
    assert scheduled.node in ("gpu-a", "gpu-b") and scheduled.bind_error == ""
    pod = harness.pod_json("default", "trainer")
    annotations = pod["metadata"]["annotations"]
    assert pod["spec"]["nodeName"] == scheduled.node == annotations[ASSIGNED_NODE]
    assert annotations[BIND_PHASE] == "allocating"
    (containers,) = read_allocated(annotations, {"NVIDIA": KIND}).values()
    assert [(g.memory, g.cores) for g in containers[0]] == [(3000, 30)]
    verify_allocation(annotations, {"NVIDIA": KIND}, TEST_KEYS, pod["metadata"]["uid"])
    assert NodeLock(core_v1).holder(scheduled.node)[0].name == "trainer"
    assert wait_for(lambda: "FilteringSucceed" in {e.reason for e in core_v1.list_namespaced_event("default").items})


def test_unschedulable_pod_gets_reasons_per_node_and_an_event(harness, core_v1):
    add_pod(core_v1, "huge", {"nvidia.com/gpumem": "20000"})
    scheduled = harness.schedule("default", "huge")
    assert scheduled.node is None
    assert scheduled.filter_result["FailedNodes"] == {
        "gpu-a": "CardInsufficientMemory: 20000 MiB needed, at most 10000 MiB free on one NVIDIA device",
        "gpu-b": "CardInsufficientMemory: 20000 MiB needed, at most 10000 MiB free on one NVIDIA device",
    }
    assert wait_for(lambda: any(e.reason == "FilteringFailed" for e in core_v1.list_namespaced_event("default").items))


def test_full_node_mode_returns_node_objects(harness, core_v1):
    add_pod(core_v1, "p", {"nvidia.com/gpu": "1"})
    pod = harness.pod_json("default", "p")
    nodes = json.loads(core_v1.list_node(_preload_content=False).data)
    result = harness.post("filter", {"Pod": pod, "Nodes": nodes})
    assert result["NodeNames"] is None and len(result["Nodes"]["items"]) == 1
    assert result["Nodes"]["items"][0]["metadata"]["name"] in ("gpu-a", "gpu-b")


def test_prioritize_scores_are_0_to_10(harness, core_v1):
    add_pod(core_v1, "p", {"nvidia.com/gpu": "1"})
    harness.schedule("default", "p")
    pod = harness.pod_json("default", "p")
    scores = harness.post("prioritize", {"Pod": pod, "NodeNames": ["gpu-a", "gpu-b", "unknown"]})
    assert {s["Host"] for s in scores} == {"gpu-a", "gpu-b", "unknown"}
    assert all(0 <= s["Score"] <= 10 for s in scores)
    by_host = {s["Host"]: s["Score"] for s in scores}
    assert by_host[pod["spec"]["nodeName"]] == 10 and by_host["unknown"] == 0


@pytest.mark.parametrize(
    ("verb", "body", "status", "fragment"),
    [
        ("filter", b"{not json", 400, "not JSON"),
        ("filter", b"[]", 200, "expected a JSON object"),
        ("filter", b"{}", 200, "ExtenderArgs has no Pod"),
        ("filter", json.dumps({"Pod": {"metadata": {"name": "x"}}, "NodeNames": "gpu-a"}).encode(), 200, "NodeNames must be a list"),
        ("bind", b"{}", 200, "missing PodName, PodNamespace, Node"),
        ("bind", json.dumps({"PodName": "ghost", "PodNamespace": "default", "Node": "gpu-a"}).encode(), 200, "pod default/ghost"),
        ("nonsense", b"{}", 404, "unknown verb"),
    ],
)
def test_bad_requests_get_clear_errors(harness, verb, body, status, fragment):
    request = urllib.request.Request(f"{harness.server.url}/{verb}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            got_status, payload = response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        got_status, payload = exc.code, json.loads(exc.read())
    assert got_status == status
    assert fragment in payload["Error"]
    assert harness.post("echo", {"still": "serving"}) == {"still": "serving"}


def test_absurd_quantities_and_corrupt_annotations(harness, core_v1):
    add_pod(core_v1, "absurd", {"nvidia.com/gpumem": "1e40"})
    result = harness.schedule("default", "absurd").filter_result
    assert "1e40" not in result["Error"] or result["FailedNodes"] == {}  # a clear answer either way
    assert result["NodeNames"] is None
    core_v1.patch_node("gpu-b", {"metadata": {"annotations": {KIND.annotations.node_register: "{corrupt"}}})
    assert wait_for(lambda: harness.state.node("gpu-b").problems)
    add_pod(core_v1, "p", {"nvidia.com/gpu": "1"})
    pod = harness.pod_json("default", "p")
    result = harness.post("filter", {"Pod": pod, "NodeNames": ["gpu-b"]})
    assert "corrupt hami.io/node-nvidia-register" in result["FailedNodes"]["gpu-b"]


def test_health_ready_and_metrics(harness):
    assert urllib.request.urlopen(f"{harness.server.url}/healthz", timeout=5).read() == b"ok"
    assert urllib.request.urlopen(f"{harness.server.url}/readyz", timeout=5).read() == b"ok"
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"{harness.server.url}/metrics", timeout=5).read().decode()
    samples = {(s.name, s.labels.get("device_uuid")): s.value for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("hami_gpu_memory_limit_bytes", "GPU-a-0")] == 10000 * 1024 * 1024
    assert samples[("hami_gpu_memory_allocated_bytes", "GPU-b-1")] == 0  # visible before anything uses it


def test_a_restarted_scheduler_rebuilds_the_same_usage(harness, manager, core_v1):
    for i in range(6):
        add_pod(core_v1, f"p{i}", {"nvidia.com/gpumem": str(1000 * (i + 1)), "nvidia.com/gpucores": str(5 * i)})
        scheduled = harness.schedule("default", f"p{i}")
        assert scheduled.node, scheduled
        NodeLock(core_v1).release(scheduled.node)  # what the node agent does after Allocate
    assert wait_for(lambda: len([p for p in harness.state.pods.values()]) == 6)
    fresh = ExtenderHarness(manager, core_v1).start()
    try:
        assert fresh.state.usage_snapshot() == harness.state.usage_snapshot()
        assert sum(m for node in fresh.state.usage_snapshot().values() for (_, m, _) in node.values()) == 21000
    finally:
        fresh.stop()


def test_watch_disconnects_do_not_lose_updates(harness, core_v1, kube_apiserver):
    add_pod(core_v1, "p", {"nvidia.com/gpu": "1"})
    assert harness.schedule("default", "p").node
    kube_apiserver.faults.cut_watches()
    core_v1.delete_namespaced_pod("p", "default")
    add_node(core_v1, "gpu-c", gpus("GPU-c", 1))
    kube_apiserver.faults.cut_watches(abrupt=True)
    core_v1.patch_node("gpu-c", {"metadata": {"labels": {"x": "y"}}})
    assert wait_for(lambda: harness.state.node("gpu-c") is not None and not harness.state.pods, timeout=10)


def test_lock_held_by_a_dead_pod_is_taken_over_at_bind(harness, core_v1):
    NodeLock(core_v1).acquire("gpu-a", "default", "long-gone")
    add_pod(core_v1, "p", {"nvidia.com/gpu": "1"}, annotations={"hami.io/node-scheduler-policy": "binpack"})
    pod = harness.pod_json("default", "p")
    harness.post("filter", {"Pod": pod, "NodeNames": ["gpu-a"]})
    assert (
        harness.post("bind", {"PodName": "p", "PodNamespace": "default", "PodUID": pod["metadata"]["uid"], "Node": "gpu-a"})["Error"] == ""
    )
    assert NodeLock(core_v1).holder("gpu-a")[0].name == "p"


def test_bind_on_a_locked_node_fails_cleanly(harness, core_v1):
    add_pod(core_v1, "holder", {"nvidia.com/gpu": "1"})
    NodeLock(core_v1).acquire("gpu-a", "default", "holder")
    add_pod(core_v1, "p", {"nvidia.com/gpu": "1"})
    pod = harness.pod_json("default", "p")
    error = harness.post("bind", {"PodName": "p", "PodNamespace": "default", "PodUID": pod["metadata"]["uid"], "Node": "gpu-a"})["Error"]
    assert error.startswith("pod default/p: node 'gpu-a' is locked by pod default/holder")
    assert not harness.pod_json("default", "p")["spec"].get("nodeName")


# ---------------------------------------------------------------- concurrency


requests_strategy = st.lists(
    st.fixed_dictionaries({"nvidia.com/gpumem": st.integers(500, 6000).map(str), "nvidia.com/gpucores": st.integers(0, 60).map(str)}),
    min_size=6,
    max_size=14,
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mix=requests_strategy, seed=st.integers(0, 1000))
def test_parallel_pods_never_over_allocate(manager, mix, seed):
    """Many pods filtered and bound at once onto a nearly full node: no device is ever over-committed."""
    with KubeAPIServer() as server:
        core_v1 = client.CoreV1Api(server.api_client())
        add_node(core_v1, "tight", gpus("GPU-t", 2, memory=8000, count=4))
        harness = ExtenderHarness(manager, core_v1, config=SchedulerConfig(bind_lock_timeout=10, events=False)).start()
        try:
            for i, limits in enumerate(mix):
                add_pod(core_v1, f"p{i}", limits)
            random.Random(seed).shuffle(names := [f"p{i}" for i in range(len(mix))])
            results = {}

            def run(name):
                pod = harness.pod_json("default", name)
                result = harness.post("filter", {"Pod": pod, "NodeNames": ["tight"]})
                results[name] = result
                if result.get("NodeNames"):
                    bound = harness.post(
                        "bind", {"PodName": name, "PodNamespace": "default", "PodUID": pod["metadata"]["uid"], "Node": "tight"}
                    )
                    assert bound["Error"] == "", bound
                    NodeLock(core_v1).release("tight", "default", name)  # the node agent's part after Allocate

            threads = [threading.Thread(target=run, args=(n,)) for n in names]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            # rebuild usage from the API alone, as a restarted scheduler would
            rebuilt = ClusterState({"NVIDIA": KIND})
            rebuilt.replace_all(
                json.loads(core_v1.list_node(_preload_content=False).data)["items"],
                json.loads(core_v1.list_pod_for_all_namespaces(_preload_content=False).data)["items"],
            )
            node = rebuilt.node("tight")
            for device_id in node.devices:
                usage = node.usage(device_id)
                assert usage.used <= 4 and usage.memory <= 8000 and usage.cores <= 100, usage
            placed = [n for n, r in results.items() if r.get("NodeNames")]
            assert len(rebuilt.pods) == len(placed)
            bound = [
                p
                for p in json.loads(core_v1.list_namespaced_pod("default", _preload_content=False).data)["items"]
                if p["spec"].get("nodeName")
            ]
            assert sorted(p["metadata"]["name"] for p in bound) == sorted(placed)
            assert placed, "at least the first pod always fits"
        finally:
            harness.stop()


def test_https_with_a_stalled_client_does_not_block_others(manager, core_v1, tmp_path):
    """TLS handshakes run in each connection's thread: a client that connects and says nothing must
    not keep kube-scheduler's requests waiting."""
    import socket
    import ssl

    from hami.certs import issue
    from hami.scheduler.core import Scheduler
    from hami.scheduler.server import Extender, ExtenderHTTPServer

    bundle = issue(["localhost", "127.0.0.1"])
    (tmp_path / "tls.crt").write_text(bundle.cert)
    (tmp_path / "tls.key").write_text(bundle.key)
    (tmp_path / "ca.crt").write_text(bundle.ca)
    extender = Extender(Scheduler(manager, ClusterState({"NVIDIA": KIND}), None))
    with ExtenderHTTPServer(extender, tls_cert=str(tmp_path / "tls.crt"), tls_key=str(tmp_path / "tls.key")) as server:
        stalled = socket.create_connection(("127.0.0.1", server.port))  # never starts its handshake
        try:
            context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
            request = urllib.request.Request(f"https://localhost:{server.port}/echo", data=b'{"ok": 1}', method="POST")
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                assert json.loads(response.read()) == {"ok": 1}
        finally:
            stalled.close()
