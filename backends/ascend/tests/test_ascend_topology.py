"""Ring-aware placement through the scheduler's own fit (``fit_node`` over a ``ClusterState``)."""

from __future__ import annotations

import time

import pytest

from hami.scheduler.core import Scheduler
from hami.scheduler.fit import Fit, Misfit, fit_node
from hami.scheduler.state import ClusterState
from hami.sdk import Grant, PhysicalDevice
from hami.wire.allocation import Allocation
from hami.wire.codec import encode_node_devices
from hami_ascend.plugin import INFO, plugin

KINDS = {k.vendor: k for k in INFO.kinds}


@pytest.fixture
def manager(hami_manager, register_backend):
    register_backend(plugin)
    return hami_manager


def chips(vendor, n, ring):
    """Physical chips as discovery reports them (``ring(i)`` gives the HCCS group of chip i)."""
    return [
        PhysicalDevice(id=f"{vendor}-{i}", vendor=vendor, type=vendor, memory=65536, index=i, attributes={"ring": ring(i)})
        for i in range(n)
    ]


def node_object(manager, physical):
    split = [manager.split(d) for d in physical]
    vendor = physical[0].vendor
    annotations = {KINDS[vendor].annotations.node_register: encode_node_devices(split, "json")}
    annotations.update(manager.node_annotations("ascend", split, physical))
    return {"metadata": {"name": "n1", "annotations": annotations}}


def pod(name, limits, allocation=None, vendor=None):
    meta = {"name": name, "namespace": "default", "uid": f"uid-{name}", "annotations": {}}
    if allocation is not None:
        meta["annotations"].update(allocation.annotations({vendor: KINDS[vendor]}, meta["uid"], time.time(), None))
    return {"metadata": meta, "spec": {"containers": [{"name": "c0", "resources": {"limits": limits}}]}, "status": {"phase": "Running"}}


def state_for(manager, physical, busy=()):
    state = ClusterState(KINDS)
    state.apply_node(node_object(manager, physical))
    vendor = physical[0].vendor
    for i, device_id in enumerate(busy):
        taken = Allocation("n1", {vendor: ((Grant(device_id, vendor, 65536, 100),),)})
        state.apply_pod(pod(f"busy{i}", {}, taken, vendor))
    return state


def fit(manager, state, wanted):
    return fit_node(manager, state.node("n1"), wanted, Scheduler(manager, state, None).requests(wanted), "spread")


def chosen(result):
    assert isinstance(result, Fit), result
    (vendor,) = result.devices
    return sorted(g.id for g in result.devices[vendor][0])


def test_the_node_publishes_its_rings(manager):
    physical = chips("Ascend910B3", 8, lambda i: str(i // 4))
    annotation = node_object(manager, physical)["metadata"]["annotations"]["hami.io/node-hccs-Ascend910B3"]
    assert (
        annotation
        == '{"Ascend910B3-0":"0","Ascend910B3-1":"0","Ascend910B3-2":"0","Ascend910B3-3":"0","Ascend910B3-4":"1","Ascend910B3-5":"1","Ascend910B3-6":"1","Ascend910B3-7":"1"}'
    )


def test_a_multi_chip_job_lands_on_one_ring_even_when_scores_would_split_it(manager):
    # ring 0 has chips 0-3, ring 1 has 4-7; chips 1, 2 and 5 are busy: only ring 1 still holds three free chips
    physical = chips("Ascend910B3", 8, lambda i: str(i // 4))
    state = state_for(manager, physical, busy=["Ascend910B3-1", "Ascend910B3-2", "Ascend910B3-5"])
    result = fit(manager, state, pod("p", {"huawei.com/Ascend910B3": "3"}))
    assert chosen(result) == ["Ascend910B3-4", "Ascend910B3-6", "Ascend910B3-7"]


def test_the_smallest_ring_that_holds_the_job_is_chosen(manager):
    physical = chips("Ascend910B3", 8, lambda i: str(i // 4))
    # ring 1 has two free chips left, ring 0 four: the pair goes to ring 1 and keeps ring 0 whole
    state = state_for(manager, physical, busy=["Ascend910B3-4", "Ascend910B3-5"])
    assert chosen(fit(manager, state, pod("p", {"huawei.com/Ascend910B3": "2"}))) == ["Ascend910B3-6", "Ascend910B3-7"]


def test_a_job_larger_than_any_ring_still_fits_across_rings(manager):
    physical = chips("Ascend910B3", 8, lambda i: str(i // 4))
    state = state_for(manager, physical, busy=["Ascend910B3-0"])
    picked = chosen(fit(manager, state, pod("p", {"huawei.com/Ascend910B3": "6"})))
    assert len(picked) == 6 and {"Ascend910B3-4", "Ascend910B3-5", "Ascend910B3-6", "Ascend910B3-7"} <= set(picked)


def test_910c_takes_whole_modules_only(manager):
    physical = chips("Ascend910C", 8, lambda i: str(i // 2))  # modules {0,1} {2,3} {4,5} {6,7}
    state = state_for(manager, physical, busy=["Ascend910C-0", "Ascend910C-3", "Ascend910C-4"])
    assert chosen(fit(manager, state, pod("p", {"huawei.com/Ascend910C": "1"}))) == ["Ascend910C-6", "Ascend910C-7"]
    result = fit(manager, state, pod("q", {"huawei.com/Ascend910C": "4"}))
    assert isinstance(result, Misfit) and "TopologyNotFit" in result.reason


def test_without_the_rings_annotation_the_core_chooses(manager):
    physical = [PhysicalDevice(id=f"c{i}", vendor="Ascend910B3", type="Ascend910B3", memory=65536, index=i) for i in range(4)]
    state = state_for(manager, physical)
    assert len(chosen(fit(manager, state, pod("p", {"huawei.com/Ascend910B3": "2"})))) == 2
