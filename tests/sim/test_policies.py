"""The packing policies as registered objects: FGD's arithmetic, and use from the extender's filter."""

from __future__ import annotations

import pytest

from hami import hookimpl
from hami.plugin.model import DeviceRequest, DeviceUsage, NodeUsage, SchedulableDevice
from hami.plugin.policy import ClusterView, DevicePolicy, DeviceScoreContext, NodePolicy, ScoreContext
from hami.policies.fgd import INFEASIBLE, fgd_policies
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


VIEW = ClusterView()


def test_fgd_prefers_the_placement_that_keeps_capacity_usable():
    node_policy, device_policy = fgd_policies()
    half_used = NodeUsage("a", [gpu("a", 0, used_cores=50)])
    empty = NodeUsage("b", [gpu("b", 0)])
    for i in range(3):  # the workload: 50 % shares
        node_policy.score_nodes([half_used, empty], ScoreContext(pod(f"seen-{i}"), [share(50)], VIEW))
    scores = node_policy.score_nodes([half_used, empty], ScoreContext(pod("new"), [share(30)], VIEW))
    # 30 % on a leaves 20 %, useless to 50 % tasks: fragmentation grows there; b keeps 70 % usable
    assert scores[1] > scores[0]
    # the same answer per device, as the device policy (it shares the node policy's learner)
    assert device_policy.score_device(empty.devices[0], DeviceScoreContext(pod("new"), share(30), VIEW)) == pytest.approx(scores[1], abs=30)
    assert node_policy.score_nodes([half_used], ScoreContext(pod("big"), [share(60)], VIEW))[0] == INFEASIBLE


def test_fgd_multi_device_classes_value_whole_free_devices():
    node_policy, _ = fgd_policies()
    two = DeviceRequest("NVIDIA", count=2, cores=100)
    spare = NodeUsage("spare", [gpu("s", 0), gpu("s", 1), gpu("s", 2, used_cores=40)])
    tight = NodeUsage("tight", [gpu("t", 0), gpu("t", 1), gpu("t", 2)])
    for i in range(5):
        node_policy.score_nodes([spare, tight], ScoreContext(pod(f"two-{i}"), [two], VIEW))
    # a 40 % share on the node with three idle GPUs breaks the pair it could still host later;
    # on "spare" it joins the partly used GPU and both idle GPUs stay whole
    scores = node_policy.score_nodes([spare, tight], ScoreContext(pod("share"), [share(40)], VIEW))
    assert scores[0] > scores[1]


def test_fgd_starts_afresh_with_a_new_cluster_view():
    node_policy, _ = fgd_policies()
    half_used = NodeUsage("a", [gpu("a", 0, used_cores=50)])
    empty = NodeUsage("b", [gpu("b", 0)])
    for i in range(3):
        node_policy.score_nodes([half_used, empty], ScoreContext(pod(f"seen-{i}"), [share(50)], VIEW))
    assert node_policy.fgd.book.total == 3
    node_policy.score_nodes([half_used, empty], ScoreContext(pod("next-run"), [share(30)], ClusterView(seed=1)))
    assert node_policy.fgd.book.total == 1  # what was learnt in the other view is gone


def test_fgd_works_from_the_extender_filter(hami_manager, register_backend):
    from hami_nvidia.plugin import plugin

    register_backend(plugin)
    state = ClusterState({"NVIDIA": KIND})
    for name in ("a", "b"):
        devices = [gpu(name, 0).device]
        state.apply_node(
            {"metadata": {"name": name, "annotations": {KIND.annotations.node_register: encode_node_devices(devices, "json")}}}
        )
    scheduler = Scheduler(hami_manager, state, None)
    policies = {"hami.io/node-scheduler-policy": "fgd", "hami.io/gpu-scheduler-policy": "fgd"}

    def ask(uid, percent):
        limits = {"nvidia.com/gpu": "1", "nvidia.com/gpucores": str(percent), "nvidia.com/gpumem-percentage": str(percent)}
        spec = {
            "metadata": {"name": uid, "namespace": "default", "uid": uid, "annotations": policies},
            "spec": {"containers": [{"name": "c", "resources": {"limits": limits}}]},
        }
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
    assert hami_manager.score_device("bestfit", share(30), nodes[0].devices[0], pod("x")) > hami_manager.score_device(
        "bestfit", share(30), nodes[1].devices[0], pod("x")
    )
    draws = hami_manager.score_nodes("random", nodes, [share(30)], pod("x"))
    assert len(draws) == 2 and all(0 <= d < 1 for d in draws)


def test_random_draws_are_seeded_by_the_cluster_view(hami_manager):
    nodes = [NodeUsage(name, [gpu(name, 0)]) for name in ("c", "a", "b")]
    first = hami_manager.score_nodes("random", nodes, [share(30)], pod("x"), ClusterView(seed=7))
    again = hami_manager.score_nodes("random", nodes[::-1], [share(30)], pod("x"), ClusterView(seed=7))
    assert again == first[::-1]  # drawn in name order, so the order nodes come in does not matter
    other = hami_manager.score_nodes("random", nodes, [share(30)], pod("x"), ClusterView(seed=8))
    assert other != first


class Host:
    """A HostView: node a has 500 m CPU free, node b 8000 m."""

    def __init__(self):
        import numpy as np

        self.cpu_free, self.mem_free = np.array([500, 8000]), np.array([10_000, 10_000])
        self.cpu_total, self.mem_total = np.array([8000, 8000]), np.array([10_000, 10_000])

    def index(self, node):
        return {"a": 0, "b": 1}.get(node)


def test_bestfit_reads_host_cpu_and_the_type_predicate_from_the_view(hami_manager):
    nodes = [NodeUsage("a", [gpu("a", 0, used_cores=60)]), NodeUsage("b", [gpu("b", 0, type_="A100")])]
    assert hami_manager.score_nodes("bestfit", nodes, [share(30)], pod("x"))[0] > -1e17  # no view: device capacity only
    with_host = hami_manager.score_nodes("bestfit", nodes, [share(30)], pod("y", cpu="2"), ClusterView(host=Host()))
    assert with_host[0] < -1e17 < with_host[1]  # node a lacks the 2 CPUs
    only_t4 = ClusterView(device_fits=lambda request, device, pod: None if device.device.type == "T4" else "CardTypeMismatch")
    typed = pod("z", annotations={"nvidia.com/use-gputype": "T4"})  # a selector the predicate reads
    scores = hami_manager.score_nodes("bestfit", nodes, [share(30)], typed, only_t4)
    assert scores[1] < -1e17 < scores[0]


class Flaky:
    """A plugin whose node and device policies both fail."""

    class Node(NodePolicy):
        name = "flaky"

        def score_node(self, node, context):
            raise KeyError("temperature")

    class Device(DevicePolicy):
        name = "flaky"

        def score_device(self, device, context):
            return "hot"

    @hookimpl
    def hami_policies(self):
        return [self.Node(), self.Device()]


def test_a_failing_policy_is_the_filters_answer_naming_it(hami_manager, register_backend):
    from hami_nvidia.plugin import plugin

    register_backend(plugin)
    hami_manager.register(Flaky(), name="flaky-plugin")
    state = ClusterState({"NVIDIA": KIND})
    state.apply_node(
        {"metadata": {"name": "a", "annotations": {KIND.annotations.node_register: encode_node_devices([gpu("a", 0).device], "json")}}}
    )
    scheduler = Scheduler(hami_manager, state, None)

    def ask(uid, node_policy, device_policy):
        annotations = {"hami.io/node-scheduler-policy": node_policy, "hami.io/gpu-scheduler-policy": device_policy}
        limits = {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "10"}
        spec = {
            "metadata": {"name": uid, "namespace": "default", "uid": uid, "annotations": annotations},
            "spec": {"containers": [{"name": "c", "resources": {"limits": limits}}]},
        }
        return scheduler.filter(spec, ["a"])

    outcome = ask("p1", "flaky", "binpack")
    assert outcome.node is None and "backend 'flaky-plugin', node policy 'flaky' score_nodes: KeyError" in outcome.error
    outcome = ask("p2", "binpack", "flaky")
    assert outcome.node is None and "device policy 'flaky' score_device: returned 'hot', expected a number" in outcome.failed["a"]
    assert ask("p3", "binpack", "binpack").node == "a"
