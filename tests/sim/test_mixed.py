"""Mixed inventories (issue 21 step 3): NVIDIA, Ascend and Cambricon nodes in one replay, each
vendor's devices split and fitted by its own backend; pods as Kubernetes specs or openb rows; per-
vendor results. The cluster and pods are those of docs/simulator.md's worked example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from hami.sim.cli import simulate_command
from hami.sim.mixed import MixedSimulator, csv_pods, read_pod_specs
from hami.sim.trace import TraceError

from .conftest import write_pods

NODES = """\
nodes:
  - {name: a100-0, cpu: 64, memory: 512Gi, devices: [{vendor: NVIDIA, type: NVIDIA A100-SXM4-80GB, memory: 80Gi, count: 8}]}
  - {name: a100-1, cpu: 64, memory: 512Gi, devices: [{vendor: NVIDIA, type: NVIDIA A100-SXM4-80GB, memory: 80Gi, count: 8}]}
  - {name: npu-0, cpu: 192, memory: 1024Gi, devices: [{vendor: Ascend910B3, type: Ascend910B3, memory: 64Gi, count: 8}]}
  - {name: npu-1, cpu: 192, memory: 1024Gi, devices: [{vendor: Ascend910B3, type: Ascend910B3, memory: 64Gi, count: 8}]}
  - {name: mlu-0, cpu: 64, memory: 256Gi, devices: [{vendor: MLU, type: MLU370-X8, memory: 48Gi, count: 4}]}
  - {name: mlu-1, cpu: 64, memory: 256Gi, devices: [{vendor: MLU, type: MLU370-X8, memory: 48Gi, count: 4}]}
"""


def pod(name: str, replicas: int, cpu: str, memory: str, limits: dict) -> str:
    return (
        f'apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{sim.hami.io/replicas: "{replicas}"}}}}\n'
        f"spec:\n  containers:\n    - name: main\n      image: app\n      resources:\n"
        f'        requests: {{cpu: "{cpu}", memory: {memory}}}\n        limits: {json.dumps(limits)}\n'
    )


PODS = "---\n".join(
    [
        pod("cuda-10g", 40, "2", "8Gi", {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 10240, "nvidia.com/gpucores": 20}),
        pod("npu-12g", 72, "4", "16Gi", {"huawei.com/Ascend910B3": 1, "huawei.com/Ascend910B3-memory": 12288}),
        pod("mlu-5g", 30, "2", "8Gi", {"cambricon.com/vmlu": 1, "cambricon.com/mlu.smlu.vcore": 20, "cambricon.com/mlu.smlu.vmemory": 20}),
    ]
)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    nodes, pods = tmp_path / "nodes.yaml", tmp_path / "pods.yaml"
    nodes.write_text(NODES)
    pods.write_text(PODS)
    return nodes, pods


@pytest.fixture
def mixed(files) -> MixedSimulator:
    return MixedSimulator(files[0], read_pod_specs(files[1]))


def test_every_vendor_goes_through_its_own_backend(mixed):
    result = mixed.run("fgd", 42)
    vendors = {v.vendor: v for v in result.vendors}
    assert set(vendors) == {"NVIDIA", "Ascend910B3", "MLU"}
    # 12 GiB asks 18.75 % of a 64 GiB chip; the smallest vNPU template that holds it is 16 GiB (25 %):
    # four per chip, 64 on 16 chips, the other 8 pods fail, and 64 x 6.25 % = 3.97 devices go to rounding
    npu = vendors["Ascend910B3"]
    assert (npu.pods, npu.placed, npu.failed, npu.granted_milli) == (72, 64, 8, 16000)
    assert npu.granted_milli - npu.requested_milli == 64 * 62  # round(187.5) = 188 asked per pod
    assert npu.failures == {"NodeInsufficientDevice": 8}
    nvidia, mlu = vendors["NVIDIA"], vendors["MLU"]
    assert (nvidia.placed, nvidia.requested_milli, nvidia.granted_milli) == (40, 8000, 8000)  # cores 20 % dominate 10 GiB of 80
    assert (mlu.placed, mlu.granted_milli) == (30, 6000)
    assert result.placed == 134 and result.failed == 8


def test_pods_land_only_on_their_vendors_nodes(mixed):
    import random

    order = list(range(len(mixed.pods)))
    random.Random(7).shuffle(order)
    result = mixed.run("binpack", 7)
    prefixes = {"cuda": "a100-", "npu": "npu-", "mlu": "mlu-"}
    for i, node in zip(order, result.placements, strict=True):
        if node is not None:
            assert node.startswith(prefixes[mixed.pods[i]["metadata"]["name"].split("-")[0]])


def test_cli_json_has_per_vendor_results(files):
    out = CliRunner().invoke(simulate_command, ["--nodes", str(files[0]), "--pods", str(files[1]), "--policy", "fgd", "--json"])
    assert out.exit_code == 0, out.output
    run = json.loads(out.output)
    assert set(run["vendors"]) == {"NVIDIA", "Ascend910B3", "MLU"}
    assert run["vendors"]["Ascend910B3"]["rounding_milli"] == 3968 and run["vendors"]["Ascend910B3"]["granted_pct"] == 100.0
    table = CliRunner().invoke(simulate_command, ["--nodes", str(files[0]), "--pods", str(files[1]), "--policy", "binpack"])
    assert table.exit_code == 0 and "Ascend910B3" in table.output and "rounding" in table.output
    live = CliRunner().invoke(simulate_command, ["--nodes", str(files[0]), "--pods", str(files[1]), "--live"])
    assert live.exit_code != 0 and "--live replays one device kind" in live.output


def test_openb_rows_go_to_the_kind_declaring_their_model(files, tmp_path, nvidia_manager):
    rows = write_pods(tmp_path / "pods.csv", [("p0", 1000, 1024, 1, 500, "V100M32"), ("p1", 1000, 1024, 0, 0)])
    pods = csv_pods(rows, nvidia_manager.kinds, None)
    assert "nvidia.com/gpu" in pods[0]["spec"]["containers"][0]["resources"]["limits"]
    unpinned = write_pods(tmp_path / "free.csv", [("p2", 1000, 1024, 1, 500)])
    with pytest.raises(TraceError, match="task 'p2': no installed kind declares its models"):
        csv_pods(unpinned, nvidia_manager.kinds, None)
    assert csv_pods(unpinned, nvidia_manager.kinds, "NVIDIA")[0]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_bad_pod_files_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Deployment\nspec: {}\n")
    with pytest.raises(TraceError, match="document 1: not a Pod"):
        read_pod_specs(bad)
    bad.write_text("kind: Pod\nmetadata: {name: x, annotations: {sim.hami.io/replicas: '0'}}\nspec: {containers: []}\n")
    with pytest.raises(TraceError, match="replicas='0' is not a positive whole number"):
        read_pod_specs(bad)
    bad.write_text("")
    with pytest.raises(TraceError, match="no pods"):
        read_pod_specs(bad)


@given(st.text(max_size=3))
def test_replicas_are_a_positive_count_or_named(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("pods") / "p.yaml"
    path.write_text(
        json.dumps({"kind": "Pod", "metadata": {"name": "x", "annotations": {"sim.hami.io/replicas": text}}, "spec": {"containers": []}})
    )
    if text.isascii() and text.isdigit() and int(text) >= 1:
        assert len(read_pod_specs(path)) == int(text)
    else:
        with pytest.raises(TraceError, match=r"sim\.hami\.io/replicas"):
            read_pod_specs(path)
