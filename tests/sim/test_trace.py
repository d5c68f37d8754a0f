"""Reading openb CSVs and node inventories: good rows become tasks, bad rows name their line."""

from __future__ import annotations

import pytest

from hami.sim.trace import TraceError, read_nodes, read_pods_csv

from .conftest import NODE_HEADER, POD_HEADER, write_nodes, write_pods


def test_nodes_and_pods_are_read(tmp_path):
    nodes = read_nodes(write_nodes(tmp_path / "n.csv", [("a", 64000, 262144, 2, "P100"), ("b", 8000, 32768, 0, "")]))
    assert [(n.name, n.cpu_milli, n.memory_mib, len(n.gpus)) for n in nodes] == [("a", 64000, 262144, 2), ("b", 8000, 32768, 0)]
    assert nodes[0].gpus[0].model == "P100" and nodes[0].gpu_milli == 2000
    tasks = read_pods_csv(
        write_pods(tmp_path / "p.csv", [("t0", 1000, 2048, 1, 460), ("t1", 500, 100, 0, 0), ("t2", 1, 1, 2, 1000, "V100M16|V100M32")])
    )
    assert [(t.num_gpu, t.gpu_milli, t.total_gpu_milli) for t in tasks] == [(1, 460, 460), (0, 0, 0), (2, 1000, 2000)]
    assert tasks[2].gpu_spec == ("V100M16", "V100M32")


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("t,abc,1,1,500,,LS,Running,0,0,0", "line 3: cpu_milli='abc' is not a whole number"),
        ("t,1,1,2,500,,LS,Running,0,0,0", "line 3: task 't': num_gpu=2 with gpu_milli=500"),
        ("t,1,1,1,1500,,LS,Running,0,0,0", "line 3: task 't': gpu_milli=1500 must be 1..1000"),
        ("t,1,-5,0,0,,LS,Running,0,0,0", "line 3: memory_mib='-5' must not be negative"),
    ],
)
def test_a_bad_pod_row_names_its_line(tmp_path, row, fragment):
    path = tmp_path / "pods.csv"
    path.write_text(POD_HEADER + "ok,1,1,0,0,,LS,Running,0,0,0\n" + row + "\n")
    with pytest.raises(TraceError) as caught:
        read_pods_csv(path)
    assert str(path) in str(caught.value) and fragment in str(caught.value)


def test_missing_columns_and_repeated_nodes_are_errors(tmp_path):
    path = tmp_path / "pods.csv"
    path.write_text("name,cpu_milli\nx,1\n")
    with pytest.raises(TraceError, match=r"line 1: missing column\(s\) memory_mib, num_gpu, gpu_milli \("):
        read_pods_csv(path)
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(NODE_HEADER + "a,1,1,1,T4\na,1,1,1,T4\n")
    with pytest.raises(TraceError, match="line 3: node 'a' appears twice"):
        read_nodes(nodes)
    with pytest.raises(TraceError, match="No such file"):
        read_nodes(tmp_path / "absent.csv")


def test_node_inventory_yaml(tmp_path):
    path = tmp_path / "nodes.yaml"
    path.write_text(
        "nodes:\n  - name: big\n    cpu: 96\n    memory: 384Gi\n    devices: [{vendor: NVIDIA, type: A100, memory: 80Gi, count: 8}]\n"
    )
    (node,) = read_nodes(path)
    assert (node.name, node.cpu_milli, node.memory_mib, len(node.gpus), node.gpus[0].model, node.gpus[0].memory) == (
        "big",
        96000,
        393216,
        8,
        "A100",
        81920,
    )
