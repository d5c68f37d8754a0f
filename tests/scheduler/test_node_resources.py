"""Node CPU/memory in the scheduler's cache (issue 21): allocatable minus the requests of the pods on
each node, fed by pod/node events and by the filter's assumption, and handed to the packing
policies as the live scheduler's ``ClusterView.host``."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client import CoreV1Api

from hami.fakes.kubeapi import KubeAPIServer
from hami.plugin.manager import load_backends
from hami.plugin.model import SchedulableDevice
from hami.scheduler.cache import ClusterCache
from hami.scheduler.config import SchedulerConfig
from hami.scheduler.core import Scheduler
from hami.scheduler.noderesources import node_allocatable, pod_host_requests
from hami.scheduler.state import ClusterState
from hami.wire.codec import encode_node_devices
from hami_nvidia.plugin import KIND


def container(cpu: str | None = None, memory: str | None = None, *, section: str = "requests", **extra: str) -> dict:
    values = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    return {"name": "c", "resources": {section: values}, **extra}


def pod(
    uid: str, containers: list[dict], *, node: str | None = None, phase: str = "Running", init: list[dict] | None = None, overhead=None
) -> dict:
    spec: dict = {"containers": containers, "initContainers": init or []}
    if node:
        spec["nodeName"] = node
    if overhead:
        spec["overhead"] = overhead
    return {"metadata": {"name": uid, "namespace": "default", "uid": uid}, "spec": spec, "status": {"phase": phase}}


def node(name: str, cpu: str | None = "8", memory: str | None = "16Gi", devices: int = 2) -> dict:
    gpus = [
        SchedulableDevice(id=f"GPU-{name}-{i}", vendor="NVIDIA", type="NVIDIA A100", count=10, memory=40960, cores=100, index=i)
        for i in range(devices)
    ]
    obj: dict = {"metadata": {"name": name, "annotations": {KIND.annotations.node_register: encode_node_devices(gpus, KIND.node_encoding)}}}
    if cpu is not None or memory is not None:
        sizes = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
        obj["status"] = {"allocatable": sizes}
    return obj


# ---------------------------------------------------------------- reading requests and allocatable


def test_pod_requests_follow_kube_scheduler_rules():
    # containers summed, a limit without a request is the request, memory rounded up to MiB
    assert pod_host_requests(pod("a", [container("500m", "1Gi"), container("1", "1000Ki", section="limits")])) == (1500, 1024 + 1)
    # an init container counts as a maximum, a sidecar (restartPolicy Always) beside everything after it, overhead on top
    init = [container("100m", "100Mi", restartPolicy="Always"), container("3", "1Mi")]
    assert pod_host_requests(pod("b", [container("1", "1Gi")], init=init, overhead={"cpu": "250m", "memory": "10Mi"})) == (
        3100 + 250,
        1124 + 10,
    )
    # nothing asked, or an unreadable quantity, counts as nothing
    assert pod_host_requests(pod("c", [{"name": "c"}, container("lots")])) == (0, 0)


@given(st.lists(st.tuples(st.integers(0, 64000), st.integers(0, 1 << 20)), max_size=6))
def test_pod_requests_sum_containers(values):
    containers = [container(f"{c}m", f"{m}Mi") for c, m in values]
    assert pod_host_requests(pod("p", containers)) == (sum(c for c, _ in values), sum(m for _, m in values))


def test_node_allocatable_falls_back_to_capacity_and_is_none_when_unknown():
    assert node_allocatable(node("n", "64", "256Gi")) == (64000, 262144)
    assert node_allocatable({"status": {"capacity": {"cpu": "1500m", "memory": "1G"}}}) == (1500, 953)  # MiB rounded down
    assert node_allocatable(node("n", None, None)) is None
    assert node_allocatable({"metadata": {"name": "bare"}}) is None


# ---------------------------------------------------------------- accounting in ClusterState


def state_with(*nodes: dict) -> ClusterState:
    state = ClusterState({"NVIDIA": KIND})
    for n in nodes:
        state.apply_node(n)
    return state


def test_bound_pods_count_until_they_terminate_or_go():
    state = state_with(node("n1"), node("n2"))
    assert state.host.free("n1") == (8000, 16384)
    state.apply_pod(pod("a", [container("2", "4Gi")], node="n1"))  # no devices: kube-scheduler counts it all the same
    state.apply_pod(pod("b", [container("1", "1Gi")], node="n1"))
    state.apply_pod(pod("c", [container("1", "1Gi")]))  # pending, not assumed: counts nowhere
    assert state.host.free("n1") == (5000, 11264)
    assert state.host.free("n2") == (8000, 16384)
    state.apply_pod(pod("a", [container("2", "4Gi")], node="n1", phase="Succeeded"))
    assert state.host.free("n1") == (7000, 15360)
    state.delete_pod("b")
    assert state.host.free("n1") == (8000, 16384)


def test_assumed_pod_counts_from_the_filter_and_is_dropped_with_its_reservation():
    state = state_with(node("n1"))
    p = pod("a", [container("3", "2Gi")])
    state.assume_host("a", "n1", p)
    assert state.host.free("n1") == (5000, 14336)
    state.apply_pod(p)  # the unbound pod's own events leave the assumption alone
    assert state.host.free("n1") == (5000, 14336)
    assert state.forget_unbound("a") is False  # no device record, but the CPU/memory assumption goes
    assert state.host.free("n1") == (8000, 16384)
    state.assume_host("a", "n1", p)
    state.apply_pod(pod("a", [container("3", "2Gi")], node="n1"))  # bound: counted once
    state.forget_unbound("a")
    assert state.host.free("n1") == (5000, 14336)


def test_node_without_allocatable_is_unknown_and_its_pods_count_once_it_arrives():
    state = state_with(node("n1", None, None))
    state.apply_pod(pod("a", [container("1", "1Gi")], node="n1"))
    assert state.host.index("n1") is None and state.host.free("n1") is None
    state.apply_node(node("n1", "4", "8Gi"))
    assert state.host.free("n1") == (3000, 7168)
    state.delete_node("n1")
    assert state.host.index("n1") is None


def test_relist_drops_pods_not_listed():
    state = state_with(node("n1"))
    state.replace_all(pods=[pod("a", [container("1", "1Gi")], node="n1"), pod("b", [container("1", "1Gi")], node="n1")])
    assert state.host.free("n1") == (6000, 14336)
    state.replace_all(pods=[pod("b", [container("1", "1Gi")], node="n1")])
    assert state.host.free("n1") == (7000, 15360)
    assert set(state.host.pods) == {"b"}


def test_many_nodes_grow_the_arrays():
    state = state_with(*(node(f"n{i:03d}", str(i + 1), "1Gi", devices=0) for i in range(200)))
    assert state.host.free("n199") == (200000, 1024)
    assert int(state.host.cpu_total.max()) == 200000


# ---------------------------------------------------------------- the live scheduler's policy context


@pytest.fixture(scope="module")
def nvidia():
    return load_backends(allow=["nvidia"])


def gpu_pod(uid: str, cpu: str) -> dict:
    p = pod(
        uid,
        [
            {
                "name": "c",
                "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}, "limits": {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "100"}},
            }
        ],
    )
    return p


def test_live_scheduler_policies_see_node_cpu(nvidia):
    """Best-fit prefers the node with less CPU left; without the host view both nodes tie and the name decides."""
    state = state_with(node("n1", "16", "64Gi"), node("n2", "16", "64Gi"))
    state.apply_pod(pod("busy", [container("12", "1Gi")], node="n2"))  # CPU only: visible only through the host view
    scheduler = Scheduler(nvidia, state, None, SchedulerConfig(node_policy="bestfit", device_policy="binpack", events=False))
    try:
        assert scheduler.cluster.host is state.host
        assert scheduler.filter(gpu_pod("g1", "1"), ["n1", "n2"]).node == "n2"
        assert state.host.free("n2") == (3000, 63488)  # assumed from the filter on
        # the same choice without the host view goes by name
        blind = Scheduler(
            nvidia,
            state_with(node("n1", "16", "64Gi"), node("n2", "16", "64Gi")),
            None,
            SchedulerConfig(node_policy="bestfit", device_policy="binpack", events=False),
            cluster=nvidia.cluster,
        )
        blind.state.apply_pod(pod("busy", [container("12", "1Gi")], node="n2"))
        assert blind.filter(gpu_pod("g1", "1"), ["n1", "n2"]).node == "n1"
        blind.close()
    finally:
        scheduler.close()


def test_informers_feed_node_resources():
    with KubeAPIServer() as server:
        store = server.store
        store.create("nodes", node("n1", "8", "16Gi"))
        state = ClusterState({"NVIDIA": KIND})
        cache = ClusterCache(state, CoreV1Api(server.api_client()), watch_timeout=30)
        cache.start()
        try:
            assert cache.wait_synced(30)
            spec = pod("x", [{**container("2", "3Gi"), "image": "pause"}])
            spec["metadata"].pop("uid")
            created = store.create("pods", spec, "default")
            store.bind("default", "x", "n1", created["metadata"]["uid"])
            deadline = time.monotonic() + 30
            while state.host.free("n1") != (6000, 13312) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert state.host.free("n1") == (6000, 13312)
            store.delete("pods", "x", "default")
            while state.host.free("n1") != (8000, 16384) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert state.host.free("n1") == (8000, 16384)
        finally:
            cache.stop()
