"""What ``hami sandbox`` runs when told nothing (issue 22): the packaged node sets' nodes of every installed
vendor, and every example pod whose resources an installed backend serves; the others are reported as
skipped with the reason, so an install with one backend still gets a green sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from hami.sandbox import defaults

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"


def _names(document):
    return [n["name"] for n in document["nodes"]]


def test_a_full_install_gets_every_node_of_every_node_set():
    expected = _names(yaml.safe_load((EXAMPLES / "nodes.yaml").read_text())) + _names(
        yaml.safe_load((EXAMPLES / "nodes-all-vendors.yaml").read_text())
    )
    vendors = {
        d["vendor"]
        for f in ("nodes.yaml", "nodes-all-vendors.yaml")
        for n in yaml.safe_load((EXAMPLES / f).read_text())["nodes"]
        for d in n["devices"]
    }
    assert [p.name for p in defaults.node_set_files()] == ["nodes.yaml", "nodes-all-vendors.yaml"]
    assert _names(defaults.default_cluster(vendors)) == expected


def test_one_backend_gets_only_the_nodes_it_serves(tmp_path):
    assert _names(defaults.default_cluster({"NVIDIA"})) == ["gpu-a100", "gpu-v100"]
    assert _names(defaults.default_cluster({"NVIDIA", "Vastai"})) == ["gpu-a100", "gpu-v100", "vastai-va1"]
    written = defaults.write_default_cluster(tmp_path, {"DCU"})
    assert written == tmp_path / "nodes.yaml" and _names(yaml.safe_load(written.read_text())) == ["dcu-z100"]
    assert defaults.default_cluster(set()) == {"nodes": []}


def _pod(limits=None, requests=None, init=None):
    container = {"name": "c", "resources": {"limits": limits or {}, "requests": requests or {}}}
    spec = {"containers": [container], **({"initContainers": [{"name": "i", "resources": {"limits": init}}]} if init else {})}
    return {"metadata": {"name": "p"}, "spec": spec}


def test_unserved_resources_are_the_extended_ones_no_backend_serves():
    pod = _pod({"cpu": "1", "memory": "1Gi", "hugepages-2Mi": "1Gi", "acme.com/npu": 1}, {"example.com/fpga": 1}, init={"other.io/x": 1})
    assert defaults.unserved_resources(pod, {"acme.com/npu"}) == ["example.com/fpga", "other.io/x"]
    assert defaults.unserved_resources(_pod({"nvidia.com/gpu": 1, "ephemeral-storage": "1Gi"}), {"nvidia.com/gpu"}) == []
    assert defaults.unserved_resources(_pod({"example.kubernetes.io/thing": 1}), set()) == []
    assert defaults.skip_reason(_pod({"acme.com/npu": 1}), set()) == (
        "asks for acme.com/npu, which no installed backend serves (`hami backends` lists those installed)"
    )
    assert defaults.skip_reason(_pod({"acme.com/npu": 1}), {"acme.com/npu"}) == ""


@given(st.dictionaries(st.from_regex(r"\A[a-z]{1,6}\.(com|io)/[a-z]{1,6}\Z"), st.integers(1, 8), max_size=6), st.data())
def test_a_pod_is_unserved_exactly_by_what_is_missing(limits, data):
    served = data.draw(st.sets(st.sampled_from(sorted(limits) or ["none.com/x"])))
    assert defaults.unserved_resources(_pod(limits), served) == sorted(set(limits) - served)


def _sandbox(*args, backends):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMI_")} | {"HAMI_BACKENDS": backends}
    return subprocess.run(
        [sys.executable, "-m", "hami.cli", "sandbox", "--json", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_with_one_backend_the_default_sandbox_is_green_and_says_what_it_skipped():
    result = _sandbox(backends="nvidia")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert {n["name"] for n in report["nodes"]} == {"gpu-a100", "gpu-v100"}
    ran = {p["name"] for p in report["pods"]}
    skipped = {s["name"]: s["reason"] for s in report["skipped"]}
    examples = {d["metadata"]["name"]: d for f in defaults.example_pod_files() for d in yaml.safe_load_all(f.read_text()) if d}
    assert ran | set(skipped) == set(examples) and not ran & set(skipped)
    assert {"amd-share", "npu-910b", "dcu-share", "vastai-va"} <= set(skipped) and "gpu-multi-container" in ran
    assert all(p["phase"] == p["expected"] for p in report["pods"])
    assert "amd.com/gpu" in skipped["amd-share"] and "which no installed backend serves" in skipped["amd-share"]


def test_pods_the_user_names_are_never_skipped(tmp_path):
    pods = tmp_path / "pods.yaml"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "wants-amd"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    pod["spec"]["containers"][0]["resources"] = {"limits": {"amd.com/gpu": 1}}
    pods.write_text(yaml.safe_dump(pod))
    result = _sandbox("--pods", str(pods), backends="nvidia")
    assert result.returncode == 1 and "error: pod default/wants-amd is Pending, expected Running" in result.stderr
    report = json.loads(result.stdout)
    assert report["skipped"] == [] and "Insufficient amd.com/gpu" in report["pods"][0]["reason"]
