"""Replays with known answers, through the real scheduler filter."""

from __future__ import annotations

import random

import pytest

from hami import hookimpl
from hami.backendkit.standard import StandardBackend
from hami.plugin.manager import BackendManager
from hami.plugin.policy import NodePolicy
from hami.sim.engine import Simulator
from hami.sim.trace import GpuModelDevice, TraceNode, TraceTask
from hami_nvidia.plugin import INFO as NVIDIA_INFO
from hami_nvidia.plugin import plugin as nvidia_plugin


def gpu_nodes(*specs: tuple[str, int, str], cpu: int = 64000, mem: int = 262144) -> list[TraceNode]:
    return [TraceNode(name, cpu, mem, (GpuModelDevice(model),) * gpus) for name, gpus, model in specs]


def tasks(*millis: int, cpu: int = 1000) -> list[TraceTask]:
    return [TraceTask(f"t{i}", cpu, 1024, 1 if m else 0, m) for i, m in enumerate(millis)]


def replay(manager, nodes, workload, policy, seed=42, **kwargs):
    return Simulator(nodes, workload, manager=manager, **kwargs).run(policy, seed, tune=0, shuffle=False)


def test_fgd_avoids_the_fragmenting_placement_binpack_makes(nvidia_manager):
    nodes = gpu_nodes(("a", 1, "T4"), ("b", 1, "T4"))
    workload = tasks(500, 300, 700, 500)
    binpack = replay(nvidia_manager, nodes, workload, "binpack")
    # binpack puts the 300 beside the 500 (busiest node), leaving 200 that nothing can use
    assert binpack.placements == ("a", "a", "b", None) and binpack.failed_by_shape == {"share": 1}
    fgd = replay(nvidia_manager, nodes, workload, "fgd")
    assert fgd.placements == ("a", "b", "b", "a") and fgd.failed == 0
    assert fgd.allocated_milli == 2000 and fgd.alloc_at_arrived[100] == 100.0


def test_cpu_only_tasks_take_cpu_and_memory_only(nvidia_manager):
    nodes = [TraceNode("a", 4000, 65536, (GpuModelDevice("T4"),)), TraceNode("b", 4000, 65536)]
    workload = [TraceTask("cpu", 3000, 1024), TraceTask("gpu", 2000, 1024, 1, 1000)]
    # binpack scores both nodes 0 for a CPU-only task: the tie goes to "a", whose CPU the GPU task then lacks
    binpack = replay(nvidia_manager, nodes, workload, "binpack")
    assert binpack.placements == ("a", None) and binpack.allocated_milli == 0 and binpack.failed_by_shape == {"whole": 1}
    # FGD sees that taking a's CPU strands its GPU
    assert replay(nvidia_manager, nodes, workload, "fgd").placements == ("b", "a")


def test_random_is_seeded(nvidia_manager):
    rng = random.Random(7)
    nodes = gpu_nodes(*((f"n{i}", 2, "T4") for i in range(8)))
    workload = tasks(*(rng.choice((0, 250, 500, 1000)) for _ in range(30)))
    sim = Simulator(nodes, workload, manager=nvidia_manager)
    first, again, other = sim.run("random", 1, tune=0), sim.run("random", 1, tune=0), sim.run("random", 2, tune=0)
    assert first.placements == again.placements and first.alloc_at_arrived == again.alloc_at_arrived
    assert sim.run("random", 1, tune=0, shuffle=False).placements != sim.run("random", 2, tune=0, shuffle=False).placements
    assert other.tasks == first.tasks


@pytest.mark.parametrize("policy", ["binpack", "bestfit", "fgd", "spread"])
def test_narrowing_candidates_never_changes_a_decision(nvidia_manager, policy):
    rng = random.Random(3)
    nodes = [
        TraceNode(f"n{i:02d}", rng.choice((8000, 32000)), 65536, (GpuModelDevice(rng.choice(("T4", "G2"))),) * rng.choice((1, 2, 4)))
        for i in range(12)
    ]
    workload = [
        TraceTask(f"t{i}", rng.choice((500, 4000)), 1024, *rng.choice(((0, 0), (1, 300), (1, 460), (1, 1000), (2, 1000))))
        for i in range(80)
    ]
    narrowed = Simulator(nodes, workload, manager=nvidia_manager).run(policy, 5, tune=1.2)
    full = Simulator(nodes, workload, manager=nvidia_manager, narrow=False).run(policy, 5, tune=1.2)
    assert narrowed.placements == full.placements and narrowed.failed > 0


class Quarantine:
    """A cross-cutting predicate registered in-process: nothing may land on node a's GPUs."""

    @hookimpl
    def hami_device_fits(self, request, device, pod, config):
        return "Quarantined" if device.device.id.startswith("GPU-a-") else None


class LastFirst:
    """A policy registered in-process: prefer the node whose name sorts last."""

    class Policy(NodePolicy):
        name = "last-first"
        description = "test policy"

        def score_node(self, node, context):
            return float(ord(node.name[-1]))

    @hookimpl
    def hami_policies(self):
        return [self.Policy()]


def test_placements_go_through_the_scheduler_filter():
    manager = BackendManager(strict=True, allow=(), deny=())
    manager.register(nvidia_plugin, distribution="in-process")
    nodes = gpu_nodes(("a", 2, "T4"), ("b", 1, "T4"), ("c", 1, "T4"))
    workload = tasks(1000, 1000, 1000)
    assert replay(manager, nodes, workload, "binpack/binpack").placements == ("a", "a", "b")
    manager.register(LastFirst(), distribution="in-process")
    assert replay(manager, nodes, workload, "last-first/binpack").placements == ("c", "b", "a")
    manager.register(Quarantine(), distribution="in-process")
    result = replay(manager, nodes, workload, "binpack/binpack")
    assert result.placements == ("b", "c", None) and result.failed_by_shape == {"whole": 1}


class TypedNvidia(StandardBackend):
    """The NVIDIA backend with the ``nvidia.com/use-gputype`` selector (what the NVIDIA issue adds)."""

    @hookimpl
    def hami_device_fits(self, request, device, pod, config):
        wanted = ((pod.get("metadata") or {}).get("annotations") or {}).get("nvidia.com/use-gputype")
        if wanted and not any(w.strip().lower() in device.device.type.lower() for w in wanted.split(",")):
            return "CardTypeMismatch"
        return None


@pytest.mark.parametrize("policy", ["binpack", "fgd", "bestfit"])
def test_gpu_spec_becomes_the_type_selector(policy):
    manager = BackendManager(strict=True, allow=(), deny=())
    manager.register(TypedNvidia(NVIDIA_INFO), distribution="in-process")
    nodes = gpu_nodes(("a", 1, "T4"), ("b", 1, "V100M16"), ("c", 1, "V100M32"))
    workload = [
        TraceTask("x", 1000, 1024, 1, 1000, ("V100M32", "P100")),
        TraceTask("y", 1000, 1024, 1, 500, ("V100M16",)),
        TraceTask("z", 1000, 1024, 1, 1000, ("P100",)),
    ]
    assert replay(manager, nodes, workload, policy).placements == ("c", "b", None)
