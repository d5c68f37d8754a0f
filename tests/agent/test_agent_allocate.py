"""Allocate end to end: a pod scheduled (signed annotations, node lock, bind) is admitted by the fake
kubelet over the agent's unix socket, with the API server in the loop."""

from __future__ import annotations

import grpc
import pytest

from hami.fakes.agent import pod_manifest, schedule_pod
from hami.node.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc
from hami.node.devices import device_of_slot
from hami.plugin.model import Grant
from hami.wire.annotations import BIND_PHASE, NODE_LOCK
from hami.wire.signing import SigningKeys

NODE = "node-1"
GPU = "nvidia.com/gpu"
DEV0, DEV1 = "NVIDIA-node-1-0", "NVIDIA-node-1-1"
KEYS = SigningKeys.from_seed(b"k" * 32)
TO_ALLOCATE = "hami.io/vgpu-devices-to-allocate"


@pytest.fixture
def agent(start_agent, hami_manager, backend, kubelet):
    a = start_agent(hami_manager, NODE, keys=KEYS)
    kubelet.wait_devices(GPU, 8)
    return a


def g(device: str, memory: int = 3000, cores: int = 0) -> Grant:
    return Grant(device, "NVIDIA", memory, cores)


def run(core_v1, kubelet, manager, name, containers, grants, *, init=None, keys=KEYS, after_schedule=None):
    core_v1.create_namespaced_pod("default", pod_manifest(name, containers, init=init))
    schedule_pod(core_v1, manager, "default", name, NODE, {"NVIDIA": grants}, keys)
    if after_schedule:
        after_schedule()
    return kubelet.admit(core_v1.read_namespaced_pod(name, "default"))


def annotations(core_v1, name):
    return core_v1.read_namespaced_pod(name, "default").metadata.annotations


def lock_value(core_v1):
    return (core_v1.read_node(NODE).metadata.annotations or {}).get(NODE_LOCK)


def failure_events(core_v1, name):
    events = core_v1.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items
    return [e for e in events if e.reason == "AllocationFailed"]


def test_scheduled_pod_is_admitted_with_the_backends_edits(agent, core_v1, kubelet, hami_manager, backend):
    result = run(core_v1, kubelet, hami_manager, "trainer", {"main": {GPU: "1", "nvidia.com/gpumem": "3000"}}, [[g(DEV1, 3000, 30)]])
    assert result.admitted, result.error
    main = result.container("main")
    assert main.envs["HAMI_VISIBLE_DEVICES"] == DEV1
    assert main.envs["HAMI_DEVICE_MEMORY_LIMIT_0"] == "3000m"
    assert [(m.container_path, m.host_path, m.read_only) for m in main.mounts] == [("/usr/local/vgpu", "/usr/local/vgpu", True)]
    assert [(d.container_path, d.permissions) for d in main.device_specs] == [("/dev/nvidia-0", "rw")]
    assert main.cdi_devices == [f"hami.test/device={DEV1}"]
    assert main.annotations == {"hami.io/test-container": "main"}
    # GetPreferredAllocation steered kubelet to a slot of the device the scheduler chose (not the first free one)
    assert [device_of_slot(d) for d in main.devices[GPU]] == [DEV1]
    assert backend.prepared == [("main", (g(DEV1, 3000, 30),))]
    ann = annotations(core_v1, "trainer")
    assert ann[BIND_PHASE] == "success"
    assert ann[TO_ALLOCATE] == ";"
    assert ann["hami.io/vgpu-devices-allocated"] == f"{DEV1},NVIDIA,3000,30:;"
    assert lock_value(core_v1) is None


def test_init_and_app_containers_each_get_their_own_grants(agent, core_v1, kubelet, hami_manager):
    result = run(
        core_v1,
        kubelet,
        hami_manager,
        "multi",
        {"a": {GPU: "1"}, "b": {GPU: "2"}},
        [[g(DEV0, 1000)], [g(DEV1, 2000)], [g(DEV0, 4000), g(DEV1, 5000)]],
        init={"warmup": {GPU: "1"}},
    )
    assert result.admitted, result.error
    assert result.container("warmup").envs["HAMI_VISIBLE_DEVICES"] == DEV0
    assert result.container("warmup").envs["HAMI_DEVICE_MEMORY_LIMIT_0"] == "1000m"
    assert result.container("a").envs["HAMI_VISIBLE_DEVICES"] == DEV1
    b = result.container("b").envs
    assert (b["HAMI_VISIBLE_DEVICES"], b["HAMI_DEVICE_MEMORY_LIMIT_0"], b["HAMI_DEVICE_MEMORY_LIMIT_1"]) == (
        f"{DEV0},{DEV1}",
        "4000m",
        "5000m",
    )
    assert sorted(device_of_slot(d) for d in result.container("b").devices[GPU]) == [DEV0, DEV1]
    assert annotations(core_v1, "multi")[BIND_PHASE] == "success"
    assert lock_value(core_v1) is None


def test_sidecars_without_devices_are_skipped(agent, core_v1, kubelet, hami_manager):
    result = run(
        core_v1,
        kubelet,
        hami_manager,
        "meshed",
        {"istio-proxy": {}, "main": {GPU: "1"}, "log-shipper": {}},
        [[], [], [g(DEV0)], []],
        init={"istio-init": {}},
    )
    assert result.admitted, result.error
    assert result.container("main").envs["HAMI_CONTAINER"] == "main"
    assert "HAMI_VISIBLE_DEVICES" not in result.container("istio-proxy").envs
    assert annotations(core_v1, "meshed")[BIND_PHASE] == "success"


def _assert_failed(core_v1, name, fragment):
    ann = annotations(core_v1, name)
    assert ann[BIND_PHASE] == "failed"
    assert lock_value(core_v1) is None
    events = failure_events(core_v1, name)
    assert events and fragment in events[0].message, [e.message for e in events]
    assert events[0].type == "Warning" and events[0].involved_object.kind == "Pod"


def test_missing_signature_is_refused(agent, core_v1, kubelet, hami_manager):
    result = run(core_v1, kubelet, hami_manager, "unsigned", {"main": {GPU: "1"}}, [[g(DEV0)]], keys=None)
    assert not result.admitted
    assert result.reason == "UnexpectedAdmissionError"
    assert "pod default/unsigned: the pod carries no allocation signature" in result.message
    assert "code = PermissionDenied" in result.message
    _assert_failed(core_v1, "unsigned", "no allocation signature")


def test_forged_allocation_is_refused(agent, core_v1, kubelet, hami_manager):
    forged = f"{DEV0},NVIDIA,16000,100:;"

    def forge():
        core_v1.patch_namespaced_pod(
            "forged", "default", {"metadata": {"annotations": {TO_ALLOCATE: forged, "hami.io/vgpu-devices-allocated": forged}}}
        )

    result = run(core_v1, kubelet, hami_manager, "forged", {"main": {GPU: "1"}}, [[g(DEV0)]], after_schedule=forge)
    assert not result.admitted
    assert "pod default/forged: allocation signature does not match" in result.message
    _assert_failed(core_v1, "forged", "allocation signature does not match")


def test_device_count_mismatch_is_refused(agent, core_v1, kubelet, hami_manager):
    result = run(core_v1, kubelet, hami_manager, "greedy", {"main": {GPU: "2"}}, [[g(DEV0)]])
    assert not result.admitted
    assert 'kubelet asked for 2 devices of nvidia.com/gpu but the scheduler granted 1 to container "main"' in result.message
    _assert_failed(core_v1, "greedy", "kubelet asked for 2 devices")


def test_backend_prepare_failure_is_reported(agent, core_v1, kubelet, hami_manager, backend):
    backend.fail_prepare = "no vGPU profile fits 3000 MiB"
    result = run(core_v1, kubelet, hami_manager, "unprepared", {"main": {GPU: "1"}}, [[g(DEV0)]])
    assert not result.admitted
    assert "code = FailedPrecondition" in result.message
    assert "container \"main\": backend 'nvidia', hami_prepare: no vGPU profile fits 3000 MiB" in result.message
    _assert_failed(core_v1, "unprepared", "no vGPU profile fits")


def test_host_error_in_prepare_is_the_backends_not_the_api_servers(agent, core_v1, kubelet, hami_manager, backend):
    """A backend's PermissionError used to pass for an unreachable API server (UNAVAILABLE, pod left
    allocating, lock held): it is the backend's failure, permanent, and says so."""
    backend.fail_prepare = PermissionError(13, "Permission denied", "/etc/vdev/vdev0.conf")
    result = run(core_v1, kubelet, hami_manager, "denied", {"main": {GPU: "1"}}, [[g(DEV0)]])
    assert not result.admitted
    assert "code = FailedPrecondition" in result.message and "unreachable" not in result.message
    assert "backend 'nvidia', hami_prepare: PermissionError: [Errno 13] Permission denied: '/etc/vdev/vdev0.conf'" in result.message
    _assert_failed(core_v1, "denied", "Permission denied")


def test_runtime_hooks_get_the_discovered_devices_and_node(agent, core_v1, kubelet, hami_manager, backend):
    result = run(core_v1, kubelet, hami_manager, "informed", {"main": {GPU: "1"}}, [[g(DEV1, 3000, 30)]])
    assert result.admitted, result.error
    hooks = [hook for hook, _, _ in backend.seen]
    assert hooks == ["hami_prepare", "hami_container_edits"]
    for _, devices, node in backend.seen:
        assert [(d.id, d.index, d.device.numa, d.split.count) for d in devices] == [(DEV1, 1, 1, 4)]
        assert (node.name, node.simulated, node.config["split_count"]) == (NODE, True, 4)
        assert node.state_dir.name == "nvidia"


def test_unscheduled_pod_gets_a_clear_reason(agent, core_v1, kubelet):
    core_v1.create_namespaced_pod("default", pod_manifest("stray", {"main": {GPU: "1"}}))
    core_v1.create_namespaced_pod_binding(
        "stray", "default", {"metadata": {"name": "stray"}, "target": {"kind": "Node", "name": NODE}}, _preload_content=False
    )
    result = kubelet.admit(core_v1.read_namespaced_pod("stray", "default"))
    assert not result.admitted
    assert "no pending pod on node node-1 for nvidia.com/gpu (lock free, no pod in bind-phase allocating)" in result.message


def test_garbage_annotation_fails_the_pod_not_the_agent(agent, core_v1, kubelet, hami_manager):
    def garble():
        core_v1.patch_namespaced_pod("garbled", "default", {"metadata": {"annotations": {TO_ALLOCATE: "GPU,x,y:;;;"}}})

    result = run(core_v1, kubelet, hami_manager, "garbled", {"main": {GPU: "1"}}, [[g(DEV0)]], after_schedule=garble)
    assert not result.admitted
    assert "pod default/garbled: its allocation annotation cannot be read" in result.message
    _assert_failed(core_v1, "garbled", "cannot be read")
    # the agent still serves the next pod
    ok = run(core_v1, kubelet, hami_manager, "next", {"main": {GPU: "1"}}, [[g(DEV1)]])
    assert ok.admitted, ok.error


def test_api_server_down_during_allocate_then_retry_succeeds(agent, core_v1, kubelet, hami_manager, kube_apiserver):
    core_v1.create_namespaced_pod("default", pod_manifest("patient", {"main": {GPU: "1"}}))
    schedule_pod(core_v1, hami_manager, "default", "patient", NODE, {"NVIDIA": [[g(DEV0)]]}, KEYS)
    pod = core_v1.read_namespaced_pod("patient", "default")
    kube_apiserver.faults.fail(503)
    try:
        result = kubelet.admit(pod)
    finally:
        kube_apiserver.faults.clear()
    assert not result.admitted
    assert "code = Unavailable" in result.message
    assert "the API server is unreachable (HTTP 503" in result.message
    assert annotations(core_v1, "patient")[BIND_PHASE] == "allocating"  # a transient failure does not fail the pod
    retry = kubelet.admit(pod)
    assert retry.admitted, retry.error
    assert retry.container("main").envs["HAMI_VISIBLE_DEVICES"] == DEV0
    assert annotations(core_v1, "patient")[BIND_PHASE] == "success"


def _allocate(kubelet_dir, socket_name, slots):
    with grpc.insecure_channel(f"unix://{kubelet_dir / socket_name}") as channel:
        stub = api_pb2_grpc.DevicePluginStub(channel)
        request = api_pb2.AllocateRequest(container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=slots)])
        return stub.Allocate(request, timeout=10).container_responses[0]


def test_agent_restart_mid_pod_loses_nothing(start_agent, hami_manager, backend, kubelet, core_v1, kubelet_dir):
    first = start_agent(hami_manager, NODE, keys=KEYS)
    kubelet.wait_devices(GPU, 8)
    core_v1.create_namespaced_pod("default", pod_manifest("resumed", {"a": {GPU: "1"}, "b": {GPU: "1"}}))
    schedule_pod(core_v1, hami_manager, "default", "resumed", NODE, {"NVIDIA": [[g(DEV0)], [g(DEV1)]]}, KEYS)
    socket_name = first.servers[GPU].socket_path.name
    a = _allocate(kubelet_dir, socket_name, [f"{DEV0}::0"])
    assert a.envs["HAMI_CONTAINER"] == "a"
    first.stop()
    assert annotations(core_v1, "resumed")[BIND_PHASE] == "allocating"
    assert lock_value(core_v1) is not None

    start_agent(hami_manager, NODE, keys=KEYS)
    kubelet.wait_registered(GPU)
    b = _allocate(kubelet_dir, socket_name, [f"{DEV1}::0"])
    assert (b.envs["HAMI_CONTAINER"], b.envs["HAMI_VISIBLE_DEVICES"]) == ("b", DEV1)
    assert annotations(core_v1, "resumed")[BIND_PHASE] == "success"
    assert lock_value(core_v1) is None


def test_direct_allocate_error_is_a_grpc_status(agent, kubelet_dir):
    with pytest.raises(grpc.RpcError) as err:
        _allocate(kubelet_dir, agent.servers[GPU].socket_path.name, [f"{DEV0}::0"])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no pending pod on node node-1" in err.value.details()


def test_deleted_pod_runs_the_release_hook(agent, core_v1, kubelet, hami_manager, backend):
    result = run(core_v1, kubelet, hami_manager, "done", {"a": {GPU: "1"}, "b": {GPU: "1"}}, [[g(DEV0)], [g(DEV1, 5000)]])
    assert result.admitted, result.error
    agent.releaser.synced.wait(5)
    core_v1.delete_namespaced_pod("done", "default")
    kubelet.wait_for(lambda: len(backend.released) == 2, what="release of both containers")
    assert sorted(backend.released) == [("done", "a", (g(DEV0),)), ("done", "b", (g(DEV1, 5000),))]


def test_insecure_agent_accepts_unsigned_allocations(start_agent, hami_manager, backend, kubelet, core_v1):
    start_agent(hami_manager, NODE, insecure=True)
    kubelet.wait_devices(GPU, 8)
    result = run(core_v1, kubelet, hami_manager, "trusting", {"main": {GPU: "1"}}, [[g(DEV0)]], keys=None)
    assert result.admitted, result.error


def test_agent_refuses_to_start_without_keys(hami_manager, core_v1, kubelet_dir):
    from hami.errors import HamiError
    from hami.node.agent import Agent, AgentOptions

    with pytest.raises(HamiError, match="--insecure-skip-signature"):
        Agent(hami_manager, core_v1, AgentOptions(NODE, kubelet_dir), None)


def test_allocate_latency_and_results_are_served_as_metrics(start_agent, hami_manager, backend, kubelet, core_v1):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    agent = start_agent(hami_manager, NODE, keys=KEYS, metrics_bind=("127.0.0.1", 0))
    kubelet.wait_devices(GPU, 8)
    assert run(core_v1, kubelet, hami_manager, "measured", {"main": {GPU: "1"}}, [[g(DEV1, 1000)]]).admitted
    text = urllib.request.urlopen(f"{agent.metrics_server.url}/metrics", timeout=5).read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("hami_agent_allocate_total", (("code", "OK"), ("resource", GPU)))] == 1
    assert samples[("hami_agent_allocate_seconds_count", (("resource", GPU),))] == 1


def _eventually(check, what, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_api_blip_during_allocate_is_retried_inside_the_call(agent, core_v1, kubelet, hami_manager, kube_apiserver):
    """Kubelet does not call Allocate again for a pod, so a short outage is retried within the call."""
    agent.allocator.retry_interval = 0.01
    core_v1.create_namespaced_pod("default", pod_manifest("blip", {"main": {GPU: "1"}}))
    schedule_pod(core_v1, hami_manager, "default", "blip", NODE, {"NVIDIA": [[g(DEV0)]]}, KEYS)
    kube_apiserver.faults.fail(503, count=2, method="PATCH", path="/pods/blip")
    result = kubelet.admit(core_v1.read_namespaced_pod("blip", "default"))
    assert result.admitted, result.error
    assert annotations(core_v1, "blip")[BIND_PHASE] == "success" and lock_value(core_v1) is None


def test_api_outage_during_allocate_still_ends_the_bind(agent, core_v1, kubelet, hami_manager, kube_apiserver):
    """Issue 19 item 3: a transient error used to leave the pod allocating with the node lock held
    (kubelet never retries, so every device pod on the node was refused until the lock expired).
    Now the lock is released at once, and bind-phase=failed is written once the API server is back."""
    agent.allocator.retry_interval = 0.01
    core_v1.create_namespaced_pod("default", pod_manifest("stranded", {"main": {GPU: "1"}}))
    schedule_pod(core_v1, hami_manager, "default", "stranded", NODE, {"NVIDIA": [[g(DEV0)]]}, KEYS)
    assert lock_value(core_v1)
    kube_apiserver.faults.fail(503, method="PATCH", path="/pods/stranded")
    try:
        result = kubelet.admit(core_v1.read_namespaced_pod("stranded", "default"))
        assert not result.admitted
        assert "code = Unavailable" in result.message and "the API server is unreachable (HTTP 503" in result.message
        assert lock_value(core_v1) is None  # node writes still work: the lock went at once
        assert annotations(core_v1, "stranded")[BIND_PHASE] == "allocating"
    finally:
        kube_apiserver.faults.clear()
    _eventually(lambda: annotations(core_v1, "stranded")[BIND_PHASE] == "failed", "bind-phase failed after the outage")
    _assert_failed(core_v1, "stranded", "the API server is unreachable")
    ok = run(core_v1, kubelet, hami_manager, "after", {"main": {GPU: "1"}}, [[g(DEV1)]])
    assert ok.admitted, ok.error


def test_pod_deleted_while_allocating_releases_the_lock(agent, core_v1, kubelet, hami_manager, backend):
    """A conflict whose re-read finds the pod gone used to answer ABORTED and keep the lock."""
    core_v1.create_namespaced_pod("default", pod_manifest("vanishing", {"main": {GPU: "1"}}))
    schedule_pod(core_v1, hami_manager, "default", "vanishing", NODE, {"NVIDIA": [[g(DEV0)]]}, KEYS)
    pod = core_v1.read_namespaced_pod("vanishing", "default")

    class DeleteOnPrepare(list):  # RecordingBackend appends to ``prepared`` inside hami_prepare
        def append(self, item):
            core_v1.delete_namespaced_pod("vanishing", "default", grace_period_seconds=0)
            super().append(item)

    backend.prepared = DeleteOnPrepare()
    result = kubelet.admit(pod)
    assert not result.admitted and "was deleted while it was being allocated" in result.message
    assert lock_value(core_v1) is None
