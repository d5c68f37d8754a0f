"""The seed's example scheduled through the real fit and edited; MLULink ring choices; CDI."""

from __future__ import annotations

import pytest

from hami.scheduler.core import Scheduler
from hami.scheduler.fit import Fit, Misfit, fit_node
from hami.scheduler.state import ClusterState
from hami.sdk import (
    DeviceNode,
    DeviceRequest,
    DeviceUsage,
    Grant,
    GrantedDevice,
    NodeContext,
    PhysicalDevice,
    SchedulableDevice,
)
from hami.wire.codec import encode_node_devices
from hami_cambricon import topology
from hami_cambricon.plugin import KIND, MLULINK_ANNOTATION, CambriconBackend

NODE = "mlu-node"


def card(i, type_="MLU370-X8", memory=23374, healthy=True):
    return PhysicalDevice(id=f"{NODE}-cambricon-mlu-{i}", vendor="MLU", type=type_, memory=memory, index=i, healthy=healthy)


# An 8-card board: two rings of four (0-1-2-3, 4-5-6-7), 0-2 and 4-6 doubly linked, 3-4 bridging.
LINKS = {0: [1, 3, 2, 2], 1: [0, 2], 2: [1, 3, 0, 0], 3: [2, 0, 4], 4: [5, 7, 6, 6, 3], 5: [4, 6], 6: [5, 7, 4, 4], 7: [6, 4]}


@pytest.fixture
def backend():
    return CambriconBackend()


@pytest.fixture
def manager(hami_manager, register_backend, backend):
    register_backend(backend, config={"mlulink": LINKS, "node_name": NODE})
    return hami_manager


def node_state(manager, backend, physical):
    split = [manager.split(d) for d in physical]
    annotations = {
        KIND.annotations.node_register: encode_node_devices(split, "json"),
        **manager.node_annotations("cambricon", split, physical),
    }
    state = ClusterState({"MLU": KIND})
    state.apply_node({"metadata": {"name": NODE, "annotations": annotations}})
    return state


def edits_for(manager, grants, wanted, container):
    """Runtime edits with the devices as the node agent hands them over (found by discovery)."""
    devices = [GrantedDevice(g, card(int(g.id.rsplit("-", 1)[1])), manager.split(card(int(g.id.rsplit("-", 1)[1])))) for g in grants]
    return manager.container_edits(grants, wanted, container, NodeContext(NODE), devices)


def pod(limits, annotations=None):
    return {
        "metadata": {"name": "p", "namespace": "default", "uid": "uid-p", "annotations": dict(annotations or {})},
        "spec": {"containers": [{"name": "c-1", "resources": {"limits": limits}}]},
        "status": {"phase": "Pending"},
    }


def fit(manager, state, wanted):
    return fit_node(manager, state.node(NODE), wanted, Scheduler(manager, state, None).requests(wanted), "spread")


def test_seed_example_is_scheduled_and_edited(manager, backend):
    state = node_state(manager, backend, [card(0), card(1)])
    wanted = pod({"cambricon.com/mlunum": "1", "cambricon.com/mlu.smlu.vmemory": "20", "cambricon.com/mlu.smlu.vcore": "10"})
    result = fit(manager, state, wanted)
    assert isinstance(result, Fit)
    ((grant,),) = result.devices["MLU"]
    assert (grant.memory, grant.cores) == (20 * 256, 10)
    edits = edits_for(manager, [grant], wanted, wanted["spec"]["containers"][0])
    slot = int(grant.id.rsplit("-", 1)[1])
    assert edits.env == {
        "CAMBRICON_DSMLU_PROFILE": f"{slot}_10_20",
        "CAMBRICON_DSMLU_ASSIGNED": "false",
        "CAMBRICON_VISIBLE_DEVICES": str(slot),
    }
    # HAMi's PatchAnnotations (pkg/device/cambricon/device.go): the profile is a pod annotation
    devices = dict(state.node(NODE).devices)
    assert manager.allocation_annotations("MLU", result.devices["MLU"], devices, wanted) == {
        "CAMBRICON_DSMLU_PROFILE": f"{slot}_10_20",
        "CAMBRICON_DSMLU_ASSIGNED": "false",
    }
    assert edits.devices == tuple(
        DeviceNode(p, p) for p in ("/dev/cambricon_ctl", f"/dev/cambricon_dev{slot}", f"/dev/cambricon_ipcm{slot}", f"/dev/commu{slot}")
    )


def test_too_much_vmemory_does_not_fit(manager, backend):
    state = node_state(manager, backend, [card(0)])
    result = fit(
        manager, state, pod({"cambricon.com/vmlu": "1", "cambricon.com/mlu.smlu.vmemory": "92", "cambricon.com/mlu.smlu.vcore": "10"})
    )
    assert isinstance(result, Misfit) and "CardInsufficientMemory" in result.reason  # 92 x 256 = 23552 > 23374


def test_type_selector_in_the_fit(manager, backend):
    state = node_state(manager, backend, [card(0, type_="MLU370-X4"), card(1)])
    result = fit(
        manager, state, pod({"cambricon.com/vmlu": "1", "cambricon.com/mlu.smlu.vcore": "10"}, {"cambricon.com/use-mlutype": "x8"})
    )
    assert isinstance(result, Fit) and result.devices["MLU"][0][0].id.endswith("-1")
    refused = fit(manager, state, pod({"cambricon.com/vmlu": "1"}, {"cambricon.com/nouse-mlutype": "MLU370"}))
    assert isinstance(refused, Misfit) and "2/2 CardTypeMismatch" in refused.reason


def test_whole_cards_get_visible_devices_without_profile(manager, backend):
    grants = [Grant(f"{NODE}-cambricon-mlu-0", "MLU", 23374, 100), Grant(f"{NODE}-cambricon-mlu-3", "MLU", 23374, 100)]
    edits = edits_for(manager, grants, pod({}), {"name": "c"})
    assert edits.env == {"CAMBRICON_VISIBLE_DEVICES": "0,3"} and not edits.annotations


def test_cdi_names(hami_manager, register_backend):
    backend = CambriconBackend()
    register_backend(backend, config={"cdi": True})
    edits = edits_for(hami_manager, [Grant(card(5).id, "MLU", 23374, 100)], pod({}), {"name": "c"})
    assert edits.cdi_devices == ("cambricon.com/mlu=mlu-5",) and not edits.devices


def test_vmlu_above_one_means_whole_cards(manager):
    (request,) = manager.container_requests(
        {"name": "c", "resources": {"limits": {"cambricon.com/vmlu": "2", "cambricon.com/mlu.smlu.vmemory": "20"}}}, {}
    )
    assert (request.count, request.memory, request.memory_percentage, request.cores) == (2, 0, 100, 100)


def test_vmemory_unit_is_configurable(hami_manager, register_backend):
    register_backend(CambriconBackend(), config={"vmemory_unit_mib": 512})
    (request,) = hami_manager.container_requests(
        {"name": "c", "resources": {"limits": {"cambricon.com/vmlu": "1", "cambricon.com/mlu.smlu.vmemory": "3"}}}, {}
    )
    assert request.memory == 1536


# ------------------------------------------------------------ topology


def test_node_annotation_publishes_links(manager, backend):
    physical = [card(i) for i in range(8)]
    values = manager.node_annotations("cambricon", [manager.split(d) for d in physical], physical)
    links = topology.decode(values[MLULINK_ANNOTATION])
    assert links[f"{NODE}-cambricon-mlu-4"] == tuple(f"{NODE}-cambricon-mlu-{p}" for p in (5, 7, 6, 6, 3))


def ids(*indexes):
    return [f"{NODE}-cambricon-mlu-{i}" for i in indexes]


def select(manager, count, free, policy=None):
    candidates = [DeviceUsage(SchedulableDevice(id=i, vendor="MLU", type="MLU370-X8", count=100, memory=23374)) for i in ids(*free)]
    physical = [card(i) for i in range(8)]
    annotations = manager.node_annotations("cambricon", [manager.split(d) for d in physical], physical)
    wanted = pod({}, {"cambricon.com/mlulink-policy": policy} if policy else {})
    return manager.select_devices(DeviceRequest("MLU", count=count), candidates, annotations, wanted)


def test_four_cards_form_a_ring(manager):
    assert sorted(select(manager, 4, range(8))) == ids(0, 1, 2, 3)
    assert sorted(select(manager, 4, [1, 2, 3, 4, 5, 6, 7])) == ids(4, 5, 6, 7)


def test_two_cards_prefer_the_double_link(manager):
    assert sorted(select(manager, 2, range(8))) == ids(0, 2)


def test_policies_when_no_good_ring_is_free(manager):
    free = [1, 3, 5, 7]  # no two of these are linked
    assert select(manager, 2, free, "best-effort") is None  # the core picks by score
    assert select(manager, 2, free, "guaranteed") == []
    assert select(manager, 2, free, "restricted") == []
    # a single link is a ring (guaranteed) but not the best pair on this board (restricted wants a double link)
    assert sorted(select(manager, 2, [1, 2], "guaranteed")) == ids(1, 2)
    assert select(manager, 2, [1, 2], "restricted") == []
    assert sorted(select(manager, 2, [0, 2, 5], "restricted")) == ids(0, 2)


def test_guaranteed_rejection_is_a_topology_misfit(hami_manager, register_backend):
    backend = CambriconBackend()
    register_backend(backend, config={"mlulink": LINKS, "mlulink_policy": "guaranteed"})
    state = node_state(hami_manager, backend, [card(i, healthy=i % 2 == 1) for i in range(8)])  # only 1, 3, 5, 7 usable
    result = fit(hami_manager, state, pod({"cambricon.com/vmlu": "2"}))
    assert isinstance(result, Misfit) and "TopologyNotFit" in result.reason


def test_one_card_and_odd_counts_are_left_to_the_core(manager):
    assert select(manager, 3, range(8), "guaranteed") is None
