"""GPU-model constraints (issue 21 step 2): openb's ``gpu_spec`` becomes the kind's type selector
(HAMi's ``use-gputype``), the fit refuses other models, and FGD's target workload counts a device
as fragmented for the task classes that may not use its model (Weng et al., ATC '23, §4: the task
distribution includes the GPU-type constraint), so unconstrained tasks leave the scarce model to
the tasks pinned to it."""

from __future__ import annotations

import pytest

from hami.plugin.policy import ClusterView
from hami.sim import engine
from hami.sim.engine import Simulator
from hami.sim.trace import GpuModelDevice, TraceNode, TraceTask


def cluster() -> list[TraceNode]:
    """Four V100M32 nodes (scarce, named first so name ties favour them) and four T4 nodes."""
    return [TraceNode(f"a-v100-{i}", 32000, 131072, (GpuModelDevice("V100M32", 32768),)) for i in range(4)] + [
        TraceNode(f"b-t4-{i}", 32000, 131072, (GpuModelDevice("T4", 15360),)) for i in range(4)
    ]


def constrained_workload() -> list[TraceTask]:
    """Tasks pinned to V100M32 alternating with tasks that run on any model, one whole GPU each."""
    tasks = []
    for i in range(4):
        tasks.append(TraceTask(f"pinned-{i}", 4000, 8192, 1, 1000, ("V100M32",)))
        tasks.append(TraceTask(f"any-{i}", 4000, 8192, 1, 1000))
    return tasks


def replay(manager, policy: str) -> engine.RunResult:
    return Simulator(cluster(), constrained_workload(), manager=manager).run(policy, 1, tune=0, shuffle=False)


@pytest.mark.parametrize("policy", ["fgd", "bestfit", "binpack", "random"])
def test_pinned_tasks_only_land_on_their_model(nvidia_manager, policy):
    result = replay(nvidia_manager, policy)
    for task, node in zip(constrained_workload(), result.placements, strict=True):
        if task.gpu_spec and node is not None:
            assert node.startswith("a-v100-"), (policy, task.name, node)


def test_fgd_keeps_the_scarce_model_for_the_tasks_pinned_to_it(nvidia_manager):
    result = replay(nvidia_manager, "fgd")
    assert result.failed == 0
    assert [n for t, n in zip(constrained_workload(), result.placements, strict=True) if not t.gpu_spec] == [f"b-t4-{i}" for i in range(4)]


def test_fgd_blind_to_the_constraint_fragments_the_scarce_model(nvidia_manager, monkeypatch):
    """The ablation: without the backends' predicate in the policy context, every model looks usable
    by every class, the V100s and T4s tie and names decide, so two pinned tasks find no V100 left."""
    monkeypatch.setattr(engine, "ClusterView", lambda **kw: ClusterView(**{**kw, "device_fits": None}))
    result = replay(nvidia_manager, "fgd")
    assert result.failed == 2 and result.failed_by_shape == {"whole": 2}
    assert result.placements[1] == "a-v100-1"  # the first unconstrained task took a V100


def test_live_scheduler_fgd_sees_the_constraint_too(nvidia_manager):
    from hami.sim.live import LiveReplay

    sim = Simulator(cluster(), constrained_workload(), manager=nvidia_manager)
    assert LiveReplay(sim).run("fgd", 1, tune=0, shuffle=False).placements == sim.run("fgd", 1, tune=0, shuffle=False).placements
