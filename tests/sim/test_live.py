"""``hami simulate --live`` (issue 21): the trace through the in-memory API server, the informer-fed
cache (devices and node CPU/memory), the extender's filter and bind places every task where the
simulator does."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

from hami.sim.cli import simulate_command
from hami.sim.engine import Simulator
from hami.sim.live import LiveReplay
from hami.sim.trace import GpuModelDevice, TraceNode, TraceTask

from .conftest import write_nodes, write_pods


def mixed_trace(seed: int = 7) -> tuple[list[TraceNode], list[TraceTask]]:
    """Nodes whose CPU runs out before their GPUs on some, shares/whole/multi/CPU-only tasks."""
    rng = random.Random(seed)
    nodes = [
        TraceNode(
            f"n{i:02d}",
            rng.choice((8000, 16000, 64000)),
            rng.choice((32768, 262144)),
            (GpuModelDevice(rng.choice(("T4", "V100M32"))),) * rng.choice((1, 2, 4, 8)),
        )
        for i in range(10)
    ]
    shapes = ((0, 0), (1, 250), (1, 500), (1, 1000), (2, 1000))
    workload = [TraceTask(f"t{i}", rng.choice((500, 4000, 12000)), rng.choice((1024, 16384)), *rng.choice(shapes)) for i in range(70)]
    return nodes, workload


@pytest.mark.parametrize("policy", ["fgd", "bestfit", "binpack"])
def test_live_path_places_like_the_simulator(nvidia_manager, policy):
    nodes, workload = mixed_trace()
    sim = Simulator(nodes, workload, manager=nvidia_manager)
    simulated = sim.run(policy, 3, tune=1.3)
    live = LiveReplay(sim).run(policy, 3, tune=1.3)
    assert simulated.failed > 0 and simulated.placed > 0  # the cluster fills: CPU and devices both bind
    assert live.placements == simulated.placements
    assert live.alloc_at_arrived == simulated.alloc_at_arrived and live.failed_by_shape == simulated.failed_by_shape


def test_live_over_the_extender_http_listener(nvidia_manager):
    nodes, workload = mixed_trace(11)
    sim = Simulator(nodes, workload[:30], manager=nvidia_manager)
    assert LiveReplay(sim, http=True).run("fgd", 1).placements == sim.run("fgd", 1).placements


def test_cli_live_reports_the_same_json(tmp_path):
    nodes = write_nodes(tmp_path / "nodes.csv", [(f"n{i}", 16000, 65536, 2, "T4") for i in range(4)])
    pods = write_pods(
        tmp_path / "pods.csv", [(f"p{i}", 4000, 8192, *s) for i, s in enumerate([(1, 500), (1, 1000), (0, 0), (2, 1000), (1, 250)])]
    )
    args = ["--nodes", str(nodes), "--pods", str(pods), "--policy", "fgd", "--seed", "2", "--json"]
    plain = CliRunner().invoke(simulate_command, args)
    live = CliRunner().invoke(simulate_command, [*args, "--live"])
    assert plain.exit_code == 0 and live.exit_code == 0, live.output
    a, b = json.loads(plain.output), json.loads(live.output)
    for run in (a, b):
        del run["seconds"], run["cpu_seconds"]
    assert a == b
