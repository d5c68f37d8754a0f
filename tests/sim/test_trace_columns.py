"""openb lists as published: only name, cpu_milli, memory_mib, num_gpu, gpu_milli are required of a pod
list, and a missing required column is an error that names it; ``--plot`` without matplotlib fails
before any work, saying what to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from hami.sim.cli import simulate_command
from hami.sim.trace import POD_COLUMNS, TraceError, read_nodes, read_pods_csv

from .conftest import write_nodes


def test_a_pod_list_without_gpu_spec_qos_or_times_is_read(tmp_path):
    path = tmp_path / "pods.csv"
    path.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\nt0,1000,2048,1,460\nt1,500,100,0,0\nt2,1,1,2,1000\n")
    tasks = read_pods_csv(path)
    assert [(t.name, t.num_gpu, t.gpu_milli, t.gpu_spec) for t in tasks] == [("t0", 1, 460, ()), ("t1", 0, 0, ()), ("t2", 2, 1000, ())]


def test_columns_in_another_order_with_extras_are_read(tmp_path):
    path = tmp_path / "pods.csv"
    path.write_text("gpu_milli,num_gpu,qos,memory_mib,cpu_milli,name,gpu_spec\n500,1,LS,10,20,x,T4|P100\n")
    (task,) = read_pods_csv(path)
    assert (task.name, task.cpu_milli, task.memory_mib, task.num_gpu, task.gpu_milli, task.gpu_spec) == (
        "x",
        20,
        10,
        1,
        500,
        ("T4", "P100"),
    )


@pytest.mark.parametrize("missing", POD_COLUMNS)
def test_each_required_pod_column_is_named_when_missing(tmp_path, missing):
    columns = [c for c in POD_COLUMNS if c != missing]
    path = tmp_path / "pods.csv"
    path.write_text(",".join(columns) + "\n" + ",".join("1" for _ in columns) + "\n")
    with pytest.raises(TraceError) as caught:
        read_pods_csv(path)
    message = str(caught.value)
    assert f"missing column(s) {missing} (has: {', '.join(columns)})" in message and str(path) in message


def test_a_node_list_needs_model_only_where_it_has_gpus(tmp_path):
    path = tmp_path / "nodes.csv"
    path.write_text("sn,cpu_milli,memory_mib,gpu\ncpu-only,8000,32768,0\n")
    (node,) = read_nodes(path)
    assert (node.name, node.gpus) == ("cpu-only", ())
    path.write_text("sn,cpu_milli,memory_mib,gpu\ncpu-only,8000,32768,0\ngpu-node,8000,32768,2\n")
    with pytest.raises(TraceError, match=r"line 3: node 'gpu-node' has gpu=2 but no model \(the file has no model column\)"):
        read_nodes(path)
    path.write_text("sn,cpu_milli,memory_mib,model\na,1,1,T4\n")
    with pytest.raises(TraceError, match=r"missing column\(s\) gpu"):
        read_nodes(path)


def test_simulate_runs_a_pod_list_without_optional_columns(tmp_path):
    nodes = write_nodes(tmp_path / "nodes.csv", [(f"n{i}", 32000, 131072, 2, "T4") for i in range(2)])
    pods = tmp_path / "pods.csv"
    pods.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\n" + "".join(f"p{i},1000,1024,1,500\n" for i in range(6)))
    result = CliRunner().invoke(
        simulate_command, ["--nodes", str(nodes), "--pods", str(pods), "--policy", "binpack", "--seed", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    (run,) = [json.loads(line) for line in result.output.splitlines()]
    assert run["tasks"] >= 6 and run["placed"] > 0


BLOCKED_PLOT = """
import json, sys
sys.modules["matplotlib"] = None  # import matplotlib now raises ImportError, as on an install without the extra
sys.argv = ["hami", "simulate", *sys.argv[1:]]
from hami.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.stderr.write("REPORT=" + json.dumps({"code": code, "modules": sorted(sys.modules)}) + "\\n")
"""


def test_plot_without_matplotlib_fails_before_the_run(tmp_path):
    nodes = write_nodes(tmp_path / "nodes.csv", [("n0", 32000, 131072, 2, "T4")])
    pods = tmp_path / "pods.csv"
    pods.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,1024,1,500\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMI_")}
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_PLOT, "--nodes", str(nodes), "--pods", str(pods), "--plot", str(tmp_path / "out.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    report = json.loads(next(line for line in done.stderr.splitlines() if line.startswith("REPORT=")).removeprefix("REPORT="))
    assert report["code"] == 1
    assert "--plot needs matplotlib" in done.stderr and "pip install 'hami[sim]'" in done.stderr
    started = sorted(m for m in report["modules"] if m in ("numpy", "hami.sim.engine", "hami.sim.runner", "hami.plugin.manager"))
    assert not started, f"work began before the check: {started}"
    assert not (tmp_path / "out.png").exists()
