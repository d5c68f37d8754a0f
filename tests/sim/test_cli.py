"""``hami simulate``: JSON lines per (policy, seed), the table, errors and the optional plot."""

from __future__ import annotations

import importlib.util
import json

from click.testing import CliRunner

from hami.sim.cli import simulate_command

from .conftest import write_nodes, write_pods

KEYS = {
    "policy",
    "seed",
    "tune",
    "tasks",
    "placed",
    "failed",
    "failed_by_shape",
    "seconds",
    "capacity_gpu_milli",
    "arrived_gpu_milli",
    "allocated_gpu_milli",
    "alloc_at_100",
    "alloc_at_arrived",
}


def trace(tmp_path):
    nodes = write_nodes(tmp_path / "nodes.csv", [(f"n{i}", 32000, 131072, 2, "T4") for i in range(4)])
    pods = write_pods(
        tmp_path / "pods.csv", [(f"p{i}", 4000, 8192, *shape) for i, shape in enumerate([(1, 500), (1, 1000), (0, 0), (2, 1000), (1, 250)])]
    )
    return ["--nodes", str(nodes), "--pods", str(pods)]


def test_json_lines_one_per_policy_and_seed(tmp_path):
    result = CliRunner().invoke(simulate_command, [*trace(tmp_path), "--policy", "fgd", "--policy", "binpack", "--seeds", "1-2", "--json"])
    assert result.exit_code == 0, result.output
    runs = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["policy"], r["seed"]) for r in runs] == [("fgd", 1), ("fgd", 2), ("binpack", 1), ("binpack", 2)]
    for run in runs:
        assert run.keys() >= KEYS
        assert len(run["alloc_at_arrived"]) == 131 and all(isinstance(v, float) for v in run["alloc_at_arrived"])
        assert run["placed"] + run["failed"] == run["tasks"]
        assert run["arrived_gpu_milli"] > 1.3 * run["capacity_gpu_milli"] == 1.3 * 8000


def test_table_and_errors(tmp_path):
    args = trace(tmp_path)
    table = CliRunner().invoke(simulate_command, [*args, "--policy", "bestfit", "--seed", "3"])
    assert table.exit_code == 0 and "bestfit" in table.output and "alloc % @100 % arrived" in table.output
    unknown = CliRunner().invoke(simulate_command, [*args, "--policy", "tetris"])
    assert unknown.exit_code != 0 and "unknown node scheduling policy 'tetris'" in unknown.output
    both = CliRunner().invoke(simulate_command, [*args, "--seed", "1", "--seeds", "2-3"])
    assert both.exit_code != 0 and "not both" in both.output
    bad = CliRunner().invoke(simulate_command, [*args, "--seeds", "9-x"])
    assert bad.exit_code != 0 and "'9-x' is not a number or a range" in bad.output


def test_plot_needs_matplotlib_or_writes_a_png(tmp_path):
    out = tmp_path / "curve.png"
    result = CliRunner().invoke(simulate_command, [*trace(tmp_path), "--policy", "random", "--plot", str(out)])
    if importlib.util.find_spec("matplotlib") is None:
        assert result.exit_code != 0 and "pip install 'hami[sim]'" in result.output
    else:
        assert result.exit_code == 0 and out.read_bytes().startswith(b"\x89PNG")
