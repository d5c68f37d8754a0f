"""Issue 19 item 4: a bind that does not end with the pod bound gives back everything it took.

Whatever step fails (the allocation-annotation write the filter started, the node lock, the
Binding), the filter's reservation is dropped and said to be dropped, the node lock is free, and
the retried pod fits on the GPU it would otherwise compete for with itself. Faults come from the
in-memory API server (hami.fakes.kubeapi.faults), each failing one request of one step.
"""

from __future__ import annotations

import logging
import time

import pytest
from kubernetes import client

from hami.fakes.extender import ExtenderHarness
from hami.plugin.model import SchedulableDevice
from hami.scheduler.config import SchedulerConfig
from hami.wire.annotations import BIND_PHASE, NODE_LOCK
from hami.wire.codec import encode_node_devices
from hami_nvidia.plugin import KIND, plugin

NODE = "gpu-a"


@pytest.fixture
def manager(hami_manager, register_backend):
    register_backend(plugin)
    return hami_manager


def add_node(core_v1) -> None:
    device = SchedulableDevice(id="GPU-0", vendor="NVIDIA", type="NVIDIA A100", count=10, memory=10000, cores=100, index=0)
    annotations = {KIND.annotations.node_register: encode_node_devices([device], "json")}
    core_v1.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=NODE, annotations=annotations)))


def add_pod(core_v1, name: str, memory: str) -> str:
    body = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            scheduler_name="hami-scheduler",
            containers=[
                client.V1Container(name="main", image="cuda", resources=client.V1ResourceRequirements(limits={"nvidia.com/gpumem": memory}))
            ],
        ),
    )
    return str(core_v1.create_namespaced_pod("default", body).metadata.uid)


FAULTS = {
    # the filter's allocation write (a merge patch of the pod), which bind waits for
    "allocation write": {"path": r"/namespaces/default/pods/victim$", "method": "PATCH"},
    "node lock": {"path": rf"/nodes/{NODE}$", "method": "PATCH"},
    "binding": {"path": r"/namespaces/default/pods/victim/binding$", "method": "POST"},
}


@pytest.mark.parametrize("step", sorted(FAULTS))
@pytest.mark.parametrize("with_uid", [True, False], ids=["uid", "no-uid"])
def test_a_failed_bind_drops_its_reservation_and_frees_the_lock(manager, core_v1, kube_apiserver, caplog, step, with_uid):
    add_node(core_v1)
    harness = ExtenderHarness(manager, core_v1, config=SchedulerConfig()).start()
    try:
        harness.cache.nodes.synced.wait(5)
        uid = add_pod(core_v1, "victim", "8000")
        pod = harness.pod_json("default", "victim")
        kube_apiserver.faults.fail(500, count=1, **FAULTS[step])
        with caplog.at_level(logging.INFO, logger="hami.scheduler.core"):
            assert harness.post("filter", {"Pod": pod, "NodeNames": [NODE]}).get("NodeNames") == [NODE]
            answer = harness.post("bind", {"PodName": "victim", "PodNamespace": "default", "PodUID": uid if with_uid else "", "Node": NODE})
        assert kube_apiserver.faults.injected == 1
        assert answer.get("Error"), answer
        failed = [r.getMessage() for r in caplog.records if "event=bind_failed" in r.getMessage()]
        assert len(failed) == 1 and "reservation_dropped=True" in failed[0], failed
        assert uid not in harness.state.pods
        assert NODE_LOCK not in (core_v1.read_node(NODE).metadata.annotations or {})
        assert harness.pod_json("default", "victim")["metadata"]["annotations"].get(BIND_PHASE) == "failed"

        # kube-scheduler's retry fits: nothing of the failed try competes with it (8000 + 8000 > 10000)
        again = harness.schedule("default", "victim")
        assert again.node == NODE and again.bind_error == "", again
        usage = harness.state.usage_snapshot()[NODE]
        assert {device: memory for device, (_, memory, _) in usage.items()} == {"GPU-0": 8000}
    finally:
        harness.stop()


def test_a_bind_without_uid_for_an_unreadable_pod_is_refused_naming_why(manager, core_v1):
    add_node(core_v1)
    harness = ExtenderHarness(manager, core_v1, config=SchedulerConfig()).start()
    try:
        # the extender's informer check refuses it first; the scheduler's own bind (used without one) too
        answer = harness.post("bind", {"PodName": "ghost", "PodNamespace": "default", "PodUID": "", "Node": NODE})
        assert "pod default/ghost is not a pending pod" in answer["Error"], answer
        error = harness.scheduler.bind("default", "ghost", "", NODE)
        assert "pod default/ghost: no PodUID given and the pod cannot be read: HTTP 404" in error, error
        assert NODE_LOCK not in (core_v1.read_node(NODE).metadata.annotations or {})
    finally:
        harness.stop()


def _settled(harness, predicate, timeout: float = 10.0) -> bool:
    """Poll until the informer-fed cache shows ``predicate`` (events arrive asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with harness.state.lock:
            if predicate():
                return True
        time.sleep(0.02)
    return False


def test_an_allocation_write_that_lands_after_bind_gave_up_brings_nothing_back(manager, core_v1, kube_apiserver, caplog):
    """The filter's allocation write is held by the API server past bind's wait: bind fails, and the
    write, arriving afterwards, must not bring the allocation back (clear ``bind-phase=failed`` and
    make the cache count a grant nobody holds). It is a patch conditional on the resourceVersion the
    filter saw, so the API server refuses it once bind marked the pod failed."""
    add_node(core_v1)
    harness = ExtenderHarness(manager, core_v1, config=SchedulerConfig(allocation_write_wait=0.3)).start()
    try:
        harness.cache.nodes.synced.wait(5)
        uid = add_pod(core_v1, "victim", "8000")
        pod = harness.pod_json("default", "victim")
        kube_apiserver.faults.delay(1.5, count=1, **FAULTS["allocation write"])
        assert harness.post("filter", {"Pod": pod, "NodeNames": [NODE]}).get("NodeNames") == [NODE]
        with caplog.at_level(logging.INFO, logger="hami.scheduler.core"):
            answer = harness.post("bind", {"PodName": "victim", "PodNamespace": "default", "PodUID": uid, "Node": NODE})
            assert "was not written within 0.3 s" in answer.get("Error", ""), answer
            assert harness.scheduler.settle(10)  # the held write reached the API server after bind's failure mark
        assert any("event=allocation_write_abandoned pod=default/victim" in r.getMessage() for r in caplog.records)

        annotations = harness.pod_json("default", "victim")["metadata"].get("annotations") or {}
        assert annotations.get(BIND_PHASE) == "failed", annotations
        assert not [k for k in annotations if k.endswith("-devices-allocated")], annotations
        assert NODE_LOCK not in (core_v1.read_node(NODE).metadata.annotations or {})
        assert _settled(harness, lambda: uid not in harness.state.pods), harness.state.pods.get(uid)
        assert _settled(harness, lambda: not any(memory for _, memory, _ in harness.state.usage_snapshot().get(NODE, {}).values()))

        # another pod fits as on an empty device (8000 + 8000 > 10000), then the retried victim does not
        uid2 = add_pod(core_v1, "other", "8000")
        other = harness.schedule("default", "other")
        assert other.node == NODE and other.bind_error == "", other
        assert harness.schedule("default", "victim").node is None
        assert {d: m for d, (_, m, _) in harness.state.usage_snapshot()[NODE].items()} == {"GPU-0": 8000}
        assert harness.state.pods[uid2].node == NODE

        # once the other pod is gone the retried victim fits and binds; its write cleared the failure mark
        core_v1.delete_namespaced_pod("other", "default")
        assert _settled(harness, lambda: uid2 not in harness.state.pods)
        again = harness.schedule("default", "victim")
        assert again.node == NODE and again.bind_error == "", again
        assert harness.pod_json("default", "victim")["metadata"]["annotations"].get(BIND_PHASE) == "allocating"
    finally:
        harness.stop()


def test_an_allocation_write_on_a_stale_copy_of_the_pod_reads_it_and_writes_again(manager, core_v1, kube_apiserver):
    """The write is conditional on the resourceVersion the filter saw; a 409 (the pod changed since,
    e.g. kube-scheduler's status update) re-reads the pod and writes again while the choice stands."""
    add_node(core_v1)
    harness = ExtenderHarness(manager, core_v1, config=SchedulerConfig()).start()
    try:
        harness.cache.nodes.synced.wait(5)
        add_pod(core_v1, "victim", "8000")
        kube_apiserver.faults.fail(409, count=2, **FAULTS["allocation write"])
        scheduled = harness.schedule("default", "victim")
        assert scheduled.node == NODE and scheduled.bind_error == "", scheduled
        assert kube_apiserver.faults.injected == 2
        annotations = harness.pod_json("default", "victim")["metadata"]["annotations"]
        assert annotations.get(BIND_PHASE) == "allocating" and annotations.get("hami.io/vgpu-devices-allocated"), annotations
    finally:
        harness.stop()


def test_the_conditional_allocation_write_costs_one_request_when_the_informer_is_current(manager, core_v1, kube_apiserver):
    """The precondition comes from the informer's copy the filter decided on: no read of the pod
    first, one patch per pod (the 409 path reads only when that copy was stale)."""
    from hami.fakes.kubeapi.audit import RequestLog

    add_node(core_v1)
    harness = ExtenderHarness(manager, core_v1, config=SchedulerConfig(events=False)).start()
    try:
        harness.cache.nodes.synced.wait(5)
        names = [f"p{i}" for i in range(4)]
        for name in names:
            add_pod(core_v1, name, "1000")
        pods = {name: harness.pod_json("default", name) for name in names}
        kube_apiserver.request_log = RequestLog()
        for name in names:
            assert harness.post("filter", {"Pod": pods[name], "NodeNames": [NODE]}).get("NodeNames") == [NODE]
            bound = harness.post(
                "bind", {"PodName": name, "PodNamespace": "default", "PodUID": pods[name]["metadata"]["uid"], "Node": NODE}
            )
            assert bound.get("Error", "") == "", bound
            core_v1.patch_node(NODE, {"metadata": {"annotations": {NODE_LOCK: None}}})  # the agent's release after Allocate
        on_pods = [(r.verb, r.name) for r in kube_apiserver.request_log.records if r.resource == "pods" and r.name and not r.subresource]
        assert sorted(on_pods) == sorted(("patch", name) for name in names), on_pods
    finally:
        kube_apiserver.request_log = None
        harness.stop()
