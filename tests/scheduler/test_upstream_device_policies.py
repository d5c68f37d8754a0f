"""HAMi v2.10's device policies beyond binpack/spread: ``numa``, ``mutex``, ``topology-aware`` and comma
lists, in the pod annotation ``hami.io/gpu-scheduler-policy`` and as the scheduler default.

Upstream: pkg/util/types.go (the names), pkg/util/util.go ``PolicyContains`` (comma lists),
pkg/scheduler/policy/gpu_policy.go (``Less``/``lessByChain``/``gpuSortKeyChain``: binpack, spread
and numa are sort keys in the order written, a list without one falls back to spread; the device
``Fit`` walks the sorted list from the end) and pkg/device/nvidia/device.go ``Fit`` (mutex refuses a
used device as ExclusiveDeviceAllocateConflict; topology-aware lets the pair scores choose).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hami import hookimpl
from hami.backendkit.standard import StandardBackend
from hami.errors import ValidationError
from hami.plugin.model import Grant, SchedulableDevice
from hami.scheduler.config import SchedulerConfig
from hami.scheduler.core import Scheduler
from hami.scheduler.fit import device_choice, fit_node
from hami.scheduler.state import ClusterState
from hami.wire.allocation import Allocation
from hami.wire.annotations import DEVICE_POLICY
from hami.wire.codec import encode_node_devices
from hami_nvidia.plugin import INFO as NVIDIA_INFO
from hami_nvidia.plugin import KIND


class Recording(StandardBackend):
    """The skeleton backend; remembers the requests its hami_select_devices was asked about."""

    def __init__(self, info):
        super().__init__(info)
        self.asked: list[int] = []

    @hookimpl
    def hami_select_devices(self, request, candidates, node_annotations, pod, config):
        self.asked.append(request.count)
        ring = node_annotations.get("acme.com/ring", "")
        ids = [c.device.id for c in candidates if c.device.id in ring.split(",")]
        return ids[: request.count] if ring and len(ids) >= request.count else None


@pytest.fixture
def backend(hami_manager, register_backend):
    plugin = Recording(NVIDIA_INFO)
    register_backend(plugin)
    return plugin


@pytest.fixture
def manager(backend, hami_manager):
    return hami_manager


def gpu(i, numa=0):
    return SchedulableDevice(id=f"GPU-{i}", vendor="NVIDIA", type="NVIDIA A100", count=4, memory=10000, cores=100, index=i, numa=numa)


def node(devices, **annotations):
    return {
        "metadata": {"name": "n1", "annotations": {KIND.annotations.node_register: encode_node_devices(devices, "json"), **annotations}}
    }


def pod(name, limits, policy=None, uid=None):
    annotations = {DEVICE_POLICY: policy} if policy else {}
    meta = {"name": name, "namespace": "default", "uid": uid or f"uid-{name}", "annotations": annotations}
    return {"metadata": meta, "spec": {"containers": [{"name": "c", "resources": {"limits": limits}}]}, "status": {"phase": "Running"}}


def cluster(devices, busy=(), **annotations):
    """One node; ``busy`` devices hold 1000 MiB of another running pod each."""
    state = ClusterState({"NVIDIA": KIND})
    state.apply_node(node(devices, **annotations))
    for device_id in busy:
        other = pod(f"other-{device_id}", {})
        other["metadata"]["annotations"].update(
            Allocation("n1", {"NVIDIA": ((Grant(device_id, "NVIDIA", 1000, 0),),)}).annotations(
                {"NVIDIA": KIND}, other["metadata"]["uid"], 0, None
            )
        )
        other["spec"]["nodeName"] = "n1"
        state.apply_pod(other)
    return state


def chosen(manager, state, wanted, policy):
    result = fit_node(manager, state.node("n1"), wanted, Scheduler(manager, state, None).requests(wanted), policy)
    return result.reason if not hasattr(result, "devices") else [g.id for g in result.devices["NVIDIA"][0]]


def test_mutex_takes_only_idle_devices(manager):
    state = cluster([gpu(0), gpu(1), gpu(2)], busy=["GPU-0", "GPU-2"])
    one = pod("p", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"})
    assert chosen(manager, state, one, "binpack") in (["GPU-0"], ["GPU-2"])  # binpack alone prefers a busy one
    assert chosen(manager, state, one, "mutex") == ["GPU-1"]
    assert chosen(manager, state, one, "binpack,mutex") == ["GPU-1"]  # in a list mutex filters, binpack sorts
    two = pod("q", {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "1000"})
    assert chosen(manager, state, two, "mutex") == "container #0 needs 2 NVIDIA: 2/3 ExclusiveDeviceAllocateConflict"


def test_numa_prefers_the_highest_numa_node_as_hamis_fit_walk_does(manager):
    state = cluster([gpu(0, numa=0), gpu(1, numa=0), gpu(2, numa=1), gpu(3, numa=1)])
    two = pod("p", {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "1000"})
    assert chosen(manager, state, two, "numa") == ["GPU-2", "GPU-3"]
    assert chosen(manager, state, two, "binpack") == ["GPU-0", "GPU-1"]  # all equal: ours takes the lowest index


def test_comma_list_keys_compare_in_the_order_written(manager):
    # GPU-0 (NUMA 0) is busy, GPU-1 (NUMA 1) idle: binpack says GPU-0, numa says GPU-1
    state = cluster([gpu(0, numa=0), gpu(1, numa=1)], busy=["GPU-0"])
    one = pod("p", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"})
    assert chosen(manager, state, one, "binpack,numa") == ["GPU-0"]
    assert chosen(manager, state, one, "numa,binpack") == ["GPU-1"]
    assert chosen(manager, state, one, " spread , numa ") == ["GPU-1"]  # spaces trimmed (strings.TrimSpace)
    assert chosen(manager, state, one, "binpack,binpack,numa") == ["GPU-0"]  # duplicates count once


def test_list_without_a_sort_key_falls_back_to_spread(manager):
    choice = device_choice(manager, "mutex,topology-aware")
    assert choice.keys == ("spread",) and choice.filters == ("mutex", "topology-aware") and choice.selects
    assert device_choice(manager, "binpack,numa").keys == ("binpack", "numa")
    assert not device_choice(manager, "binpack,numa").selects


def test_topology_aware_asks_the_backend_also_for_one_device(manager, backend):
    state = cluster([gpu(0), gpu(1), gpu(2), gpu(3)], **{"acme.com/ring": "GPU-3"})
    one = pod("p", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"})
    assert chosen(manager, state, one, "spread") == ["GPU-0"] and backend.asked == []  # one device: the core's choice
    assert chosen(manager, state, one, "topology-aware") == ["GPU-3"] and backend.asked == [1]
    assert chosen(manager, state, one, "binpack,topology-aware") == ["GPU-3"]
    none_said = cluster([gpu(0), gpu(1)])  # the backend leaves it to the core: spread, lowest index on ties
    assert chosen(manager, none_said, one, "topology-aware") == ["GPU-0"]


def test_unknown_name_in_a_list_is_refused_naming_it(manager):
    with pytest.raises(
        ValidationError, match=r"in device scheduling policy list 'binpack,binpak': unknown device scheduling policy 'binpak'"
    ):
        device_choice(manager, "binpack,binpak")
    with pytest.raises(ValidationError, match="names no policy"):
        device_choice(manager, " , ")


@pytest.mark.parametrize("policy", ["topology-aware", "mutex", "numa", "binpack,topology-aware", "mutex,topology-aware", "spread,numa"])
def test_pod_annotation_policies_schedule_instead_of_staying_pending(manager, policy):
    state = cluster([gpu(0), gpu(1)])
    outcome = Scheduler(manager, state, None).filter(pod("p", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"}, policy), ["n1"])
    assert outcome.node == "n1", outcome


def test_scheduler_default_may_be_a_list(manager):
    state = cluster([gpu(0, numa=0), gpu(1, numa=1)], busy=["GPU-0"])
    scheduler = Scheduler(manager, state, None, config=SchedulerConfig(device_policy="mutex,binpack"))
    outcome = scheduler.filter(pod("p", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"}), ["n1"])
    assert outcome.node == "n1"
    (record,) = [r for r in state.pods.values() if r.name == "p"]
    assert [g.id for g in record.devices["NVIDIA"][0]] == ["GPU-1"]
    bad = Scheduler(manager, state, None, config=SchedulerConfig(device_policy="binpack,tetris"))
    assert "unknown device scheduling policy 'tetris'" in bad.filter(pod("q", {"nvidia.com/gpu": "1"}), ["n1"]).error


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # the manager is only read
@given(st.lists(st.sampled_from(["binpack", "spread", "numa", "mutex", "topology-aware", " ", ""]), min_size=1, max_size=6))
def test_any_list_of_known_names_resolves_like_gpusortkeychain(manager, names):
    text = ",".join(names)
    if not any(n.strip() for n in names):
        with pytest.raises(ValidationError):
            device_choice(manager, text)
        return
    choice = device_choice(manager, text)
    expected = []
    for n in (n.strip() for n in names):
        if n in ("binpack", "spread", "numa") and n not in expected:
            expected.append(n)
    if len(names) == 1:  # one name is that policy itself, as HAMi's single-value Less
        assert choice.keys == (text,)
    else:
        assert choice.keys == (tuple(expected) or ("spread",))
    assert choice.selects == any(n.strip() == "topology-aware" for n in names)
