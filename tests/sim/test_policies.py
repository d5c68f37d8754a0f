"""The packing policies as hook plugins: FGD's arithmetic, and use from the extender's filter."""

from __future__ import annotations

import pytest
from hami.plugin.model import DeviceRequest, DeviceUsage, NodeUsage, SchedulableDevice
from hami.policies.fgd import INFEASIBLE, FgdPolicy
from hami.scheduler.core import Scheduler
from hami.scheduler.state import ClusterState
from hami.wire.codec import encode_node_devices
from hami_nvidia.plugin import KIND


def gpu(node, i, used_cores=0, type_="T4"):
    device = SchedulableDevice(id=f"{node}-{i}", vendor="NVIDIA", type=type_, count=100, memory=16000, cores=100, index=i)
    return DeviceUsage(device, 1 if used_cores else 0, 160 * used_cores, used_cores)


def share(percent):
    return DeviceRequest("NVIDIA", memory_percentage=percent, cores=percent)


def pod(uid, cpu="1", annotations=None):
    return {"metadata": {"uid": uid, "annotations": annotations or {}}, "spec": {"containers": [{"resources": {"requests": {"cpu": cpu}}}]}}


def test_fgd_prefers_the_placement_that_keeps_capacity_usable():
    policy = FgdPolicy()
    half_used = NodeUsage("a", [gpu("a", 0, used_cores=50)])
    empty = NodeUsage("b", [gpu("b", 0)])
    for i in range(3):  # the workload: 50 % shares
        policy.hami_score_nodes("fgd", [half_used, empty], [share(50)], pod(f"seen-{i}"))
    scores = policy.hami_score_nodes("fgd", [half_used, empty], [share(30)], pod("new"))
    # 30 % on a leaves 20 %, useless to 50 % tasks: fragmentation grows there; b keeps 70 % usable
    assert scores[1] > scores[0]
    # the same answer per device, as the device policy
    assert policy.hami_score_device("fgd", share(30), empty.devices[0], pod("new")) == pytest.approx(scores[1], abs=30)
    assert policy.hami_score_nodes("fgd", [half_used], [share(60)], pod("big"))[0] == INFEASIBLE


def test_fgd_multi_device_classes_value_whole_free_devices():
    policy = FgdPolicy()
    two = DeviceRequest("NVIDIA", count=2, cores=100)
    spare = NodeUsage("spare", [gpu("s", 0), gpu("s", 1), gpu("s", 2, used_cores=40)])
    tight = NodeUsage("tight", [gpu("t", 0), gpu("t", 1), gpu("t", 2)])
    for i in range(5):
        policy.hami_score_nodes("fgd", [spare, tight], [two], pod(f"two-{i}"))
    # a 40 % share on the node with three idle GPUs breaks the pair it could still host later;
    # on "spare" it joins the partly used GPU and both idle GPUs stay whole
    scores = policy.hami_score_nodes("fgd", [spare, tight], [share(40)], pod("share"))
    assert scores[0] > scores[1]


def test_fgd_works_from_the_extender_filter(hami_manager, register_backend):
    from hami_nvidia.plugin import plugin

    register_backend(plugin)
    state = ClusterState({"NVIDIA": KIND})
    for name in ("a", "b"):
        devices = [gpu(name, 0).device]
        state.apply_node({"metadata": {"name": name, "annotations": {KIND.annotations.node_register: encode_node_devices(devices, "json")}}})
    scheduler = Scheduler(hami_manager, state, None)
    policies = {"hami.io/node-scheduler-policy": "fgd", "hami.io/gpu-scheduler-policy": "fgd"}

    def ask(uid, percent):
        limits = {"nvidia.com/gpu": "1", "nvidia.com/gpucores": str(percent), "nvidia.com/gpumem-percentage": str(percent)}
        spec = {"metadata": {"name": uid, "namespace": "default", "uid": uid, "annotations": policies}, "spec": {"containers": [{"name": "c", "resources": {"limits": limits}}]}}
        return scheduler.filter(spec, ["a", "b"]).node

    assert ask("p1", 50) == "a"  # ties go by name
    assert ask("p2", 30) == "b"  # not beside the 50 % share, which would strand 20 %
    assert ask("p3", 50) == "a"
    assert ask("p4", 70) == "b"


def test_bestfit_and_random_policies(hami_manager):
    nodes = [NodeUsage("full", [gpu("f", 0, used_cores=60)]), NodeUsage("idle", [gpu("i", 0)])]
    scores = hami_manager.score_nodes("bestfit", nodes, [share(30)], pod("x"))
    assert scores[0] > scores[1]
    assert hami_manager.score_nodes("bestfit", nodes, [share(50)], pod("y"))[0] < -1e17  # does not fit
    assert hami_manager.score_device("bestfit", share(30), nodes[0].devices[0], pod("x")) > hami_manager.score_device("bestfit", share(30), nodes[1].devices[0], pod("x"))
    draws = hami_manager.score_nodes("random", nodes, [share(30)], pod("x"))
    assert len(draws) == 2 and all(0 <= d < 1 for d in draws)
