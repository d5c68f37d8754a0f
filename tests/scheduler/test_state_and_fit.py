"""The cache and the fit, without HTTP: usage accounting rules and failure reasons."""

from __future__ import annotations

import time
from datetime import datetime

import attrs
import pytest

from hami import hookimpl
from hami.backendkit.standard import StandardBackend
from hami.plugin.model import Grant, SchedulableDevice
from hami.scheduler.core import Scheduler
from hami.scheduler.fit import Fit, Misfit, fit_node
from hami.scheduler.state import ClusterState
from hami.wire.allocation import Allocation
from hami.wire.annotations import DEVICE_CORDON, HANDSHAKE_TIME_LAYOUT
from hami.wire.codec import encode_node_devices
from hami_nvidia.plugin import INFO as NVIDIA_INFO
from hami_nvidia.plugin import KIND


class Nvidia(StandardBackend):
    """The skeleton NVIDIA backend plus a type selector and numa-bind, as the NVIDIA issue will add."""

    @hookimpl
    def hami_device_fits(self, request, device, pod, config):
        wanted = ((pod.get("metadata") or {}).get("annotations") or {}).get("nvidia.com/use-gputype")
        if wanted and not any(w.lower() in device.device.type.lower() for w in wanted.split(",")):
            return "CardTypeMismatch"
        return None

    @hookimpl
    def hami_container_requests(self, container, pod, config):
        requests = super().hami_container_requests(container, pod, config)
        if ((pod.get("metadata") or {}).get("annotations") or {}).get("nvidia.com/numa-bind") == "true":
            return [attrs.evolve(r, single_numa=True) for r in requests]
        return requests


@pytest.fixture
def manager(hami_manager, register_backend):
    register_backend(Nvidia(NVIDIA_INFO))
    return hami_manager


def gpu(i, memory=10000, count=4, numa=0, type_="NVIDIA A100", healthy=True):
    return SchedulableDevice(
        id=f"GPU-{i}", vendor="NVIDIA", type=type_, count=count, memory=memory, cores=100, index=i, numa=numa, healthy=healthy
    )


def node(name, devices, **annotations):
    return {
        "metadata": {"name": name, "annotations": {KIND.annotations.node_register: encode_node_devices(devices, "json"), **annotations}}
    }


def pod(name, limits_per_container, *, init=(), annotations=None, node_name=None, allocation=None, phase="Running"):
    meta = {"name": name, "namespace": "default", "uid": f"uid-{name}", "annotations": dict(annotations or {})}
    if allocation is not None:
        meta["annotations"].update(allocation.annotations({"NVIDIA": KIND}, meta["uid"], time.time(), None))
    spec = {
        "containers": [{"name": f"c{i}", "resources": {"limits": limits}} for i, limits in enumerate(limits_per_container)],
        "initContainers": [{"name": f"i{i}", "resources": {"limits": limits}} for i, limits in enumerate(init)],
    }
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


def state_with(*nodes):
    state = ClusterState({"NVIDIA": KIND})
    for n in nodes:
        state.apply_node(n)
    return state


def test_usage_from_pods_and_terminated_pods_free_devices():
    state = state_with(node("n1", [gpu(0), gpu(1)]))
    taken = Allocation("n1", {"NVIDIA": ((Grant("GPU-0", "NVIDIA", 3000, 30),),)})
    state.apply_pod(pod("a", [{}], allocation=taken))
    assert state.usage_snapshot() == {"n1": {"GPU-0": (1, 3000, 30)}}
    state.apply_pod(pod("a", [{}], allocation=taken, phase="Succeeded"))
    assert state.usage_snapshot() == {"n1": {}}


def test_init_containers_count_as_max_of_init_and_sum_of_app():
    state = state_with(node("n1", [gpu(0)]))
    grants = ((Grant("GPU-0", "NVIDIA", 5000, 50),), (Grant("GPU-0", "NVIDIA", 1000, 10),), (Grant("GPU-0", "NVIDIA", 2000, 20),))
    state.apply_pod(pod("p", [{}, {}], init=[{}], allocation=Allocation("n1", {"NVIDIA": grants})))
    # init holds 5000/50 alone; the two app containers together 3000/30 (and two slots)
    assert state.usage_snapshot()["n1"]["GPU-0"] == (2, 5000, 50)


def test_stale_handshake_drops_devices_and_says_why():
    stale = datetime.fromtimestamp(time.time() - 120).strftime(HANDSHAKE_TIME_LAYOUT)
    state = state_with(node("n1", [gpu(0)], **{KIND.annotations.handshake: f"Requesting_{stale}"}))
    assert state.node("n1").devices == {}
    assert "has not reported since" in state.node("n1").problems["NVIDIA"]
    fresh = datetime.now().strftime(HANDSHAKE_TIME_LAYOUT)
    state.apply_node(node("n1", [gpu(0)], **{KIND.annotations.handshake: f"Reported_{fresh}"}))
    assert list(state.node("n1").devices) == ["GPU-0"]


def test_corrupt_node_annotation_is_a_reason_not_a_crash(manager):
    state = state_with({"metadata": {"name": "bad", "annotations": {KIND.annotations.node_register: "[{oops"}}})
    scheduler = Scheduler(manager, state, None)
    outcome = scheduler.filter(pod("p", [{"nvidia.com/gpu": "1"}]), ["bad"])
    assert outcome.node is None and "corrupt hami.io/node-nvidia-register" in outcome.failed["bad"]


def test_failure_reasons_are_counted_per_node(manager):
    state = state_with(node("n1", [gpu(0, memory=4000), gpu(1, memory=4000), gpu(2, type_="NVIDIA V100"), gpu(3, healthy=False)]))
    wanted = pod("p", [{"nvidia.com/gpumem": "6000"}], annotations={"nvidia.com/use-gputype": "A100"})
    result = fit_node(manager, state.node("n1"), wanted, Scheduler(manager, state, None).requests(wanted), "spread")
    assert isinstance(result, Misfit)
    assert result.reason == "container #0 needs 1 NVIDIA: 2/4 CardInsufficientMemory, 1/4 CardNotHealth, 1/4 CardTypeMismatch"


def test_exclusive_cores_and_cordon(manager):
    state = state_with(node("n1", [gpu(0), gpu(1)], **{DEVICE_CORDON: "GPU-1"}))
    state.apply_pod(pod("a", [{}], allocation=Allocation("n1", {"NVIDIA": ((Grant("GPU-0", "NVIDIA", 100, 0),),)})))
    wanted = pod("p", [{"nvidia.com/gpucores": "100"}])
    result = fit_node(manager, state.node("n1"), wanted, Scheduler(manager, state, None).requests(wanted), "spread")
    assert result.reason == "container #0 needs 1 NVIDIA: 1/2 CardCordoned, 1/2 ExclusiveDeviceAllocateConflict"


def test_containers_of_one_pod_see_each_other(manager):
    state = state_with(node("n1", [gpu(0, memory=10000, count=2)]))
    wanted = pod("p", [{"nvidia.com/gpumem": "6000"}, {"nvidia.com/gpumem": "6000"}])
    assert isinstance(fit_node(manager, state.node("n1"), wanted, Scheduler(manager, state, None).requests(wanted), "spread"), Misfit)
    ok = pod("q", [{"nvidia.com/gpumem": "5000"}, {"nvidia.com/gpumem": "5000"}])
    result = fit_node(manager, state.node("n1"), ok, Scheduler(manager, state, None).requests(ok), "spread")
    assert isinstance(result, Fit) and result.devices["NVIDIA"] == (
        (Grant("GPU-0", "NVIDIA", 5000, 0),),
        (Grant("GPU-0", "NVIDIA", 5000, 0),),
    )


def test_device_policies_choose_differently(manager):
    state = state_with(node("n1", [gpu(0), gpu(1)]))
    state.apply_pod(pod("a", [{}], allocation=Allocation("n1", {"NVIDIA": ((Grant("GPU-1", "NVIDIA", 5000, 0),),)})))
    wanted = pod("p", [{"nvidia.com/gpumem": "1000"}])
    requests = Scheduler(manager, state, None).requests(wanted)
    assert fit_node(manager, state.node("n1"), wanted, requests, "spread").devices["NVIDIA"][0][0].id == "GPU-0"
    assert fit_node(manager, state.node("n1"), wanted, requests, "binpack").devices["NVIDIA"][0][0].id == "GPU-1"


def test_numa_bind_keeps_devices_on_one_numa_node(manager):
    state = state_with(node("n1", [gpu(0, numa=0), gpu(1, numa=1), gpu(2, numa=1), gpu(3, numa=0)]))
    state.apply_pod(pod("a", [{}], allocation=Allocation("n1", {"NVIDIA": ((Grant("GPU-3", "NVIDIA", 9000, 0),),)})))
    wanted = pod("p", [{"nvidia.com/gpu": "2", "nvidia.com/gpumem": "2000"}], annotations={"nvidia.com/numa-bind": "true"})
    result = fit_node(manager, state.node("n1"), wanted, Scheduler(manager, state, None).requests(wanted), "spread")
    assert {g.id for g in result.devices["NVIDIA"][0]} == {"GPU-1", "GPU-2"}


def test_filter_picks_by_node_policy_and_prefilter_says_why(manager):
    state = state_with(node("busy", [gpu(0)]), node("idle", [gpu(1)]), node("small", [gpu(2, memory=1000)]))
    state.apply_pod(pod("a", [{}], allocation=Allocation("busy", {"NVIDIA": ((Grant("GPU-0", "NVIDIA", 1000, 0),),)})))
    scheduler = Scheduler(manager, state, None)
    wanted = pod("p", [{"nvidia.com/gpumem": "2000"}])
    assert scheduler.filter(wanted, ["busy", "idle", "small"]).node == "busy"  # binpack by default
    assert (
        "CardInsufficientMemory: 2000 MiB needed, at most 1000 MiB free"
        in scheduler.filter(pod("q", [{"nvidia.com/gpumem": "2000"}]), ["small"]).failed["small"]
    )
    spread = pod("s", [{"nvidia.com/gpumem": "2000"}], annotations={"hami.io/node-scheduler-policy": "spread"})
    assert scheduler.filter(spread, ["busy", "idle"]).node == "idle"


def test_filter_assumes_its_choice_so_the_next_pod_sees_it(manager):
    state = state_with(node("n1", [gpu(0, memory=10000, count=10)]))
    scheduler = Scheduler(manager, state, None)
    assert scheduler.filter(pod("a", [{"nvidia.com/gpumem": "6000"}]), ["n1"]).node == "n1"
    assert scheduler.filter(pod("b", [{"nvidia.com/gpumem": "6000"}]), ["n1"]).node is None


def test_pod_errors_are_reported_not_raised(manager):
    scheduler = Scheduler(manager, state_with(node("n1", [gpu(0)])), None)
    outcome = scheduler.filter(pod("p", [{"nvidia.com/gpumem": "lots"}]), ["n1"])
    assert "nvidia.com/gpumem" in outcome.error and "lots" in outcome.error
    outcome = scheduler.filter(pod("q", [{"nvidia.com/gpu": "1"}], annotations={"hami.io/gpu-scheduler-policy": "tetris"}), ["n1"])
    assert "unknown device scheduling policy 'tetris'" in outcome.error
    assert not scheduler.filter(pod("r", [{"cpu": "1"}]), ["n1"]).managed


def test_backend_chooses_devices_that_go_together(hami_manager, register_backend):
    class Ringed(Nvidia):
        @hookimpl
        def hami_select_devices(self, request, candidates, node_annotations, pod, config):
            ring = node_annotations.get("hami.io/node-nvidia-ring", "")
            ids = [c.device.id for c in candidates if c.device.id in ring.split(",")]
            return ids[: request.count] if len(ids) >= request.count else []

    register_backend(Ringed(NVIDIA_INFO))
    state = state_with(node("n1", [gpu(0), gpu(1), gpu(2), gpu(3)], **{"hami.io/node-nvidia-ring": "GPU-1,GPU-3"}))
    scheduler = Scheduler(hami_manager, state, None)
    two = pod("p", [{"nvidia.com/gpu": "2"}])
    result = fit_node(hami_manager, state.node("n1"), two, scheduler.requests(two), "spread")
    assert [g.id for g in result.devices["NVIDIA"][0]] == ["GPU-1", "GPU-3"]
    three = pod("q", [{"nvidia.com/gpu": "3"}])
    result = fit_node(hami_manager, state.node("n1"), three, scheduler.requests(three), "spread")
    assert result.reason == "container #0 needs 3 NVIDIA: 4/4 TopologyNotFit"
