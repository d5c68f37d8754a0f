"""Issue 27: the sandbox never shows a pod Running that Kubernetes would keep Pending, and the quick-start
pods people copy from HAMi articles reach the phase a real cluster gives them.

The sandbox's kube-scheduler stand-in (hami.sandbox.kubescheduler) checks every resource against the
nodes as NodeResourcesFit does (pkg/scheduler/framework/plugins/noderesources/fit.go) and reports
kube-scheduler's FailedScheduling message (FitError.Error in pkg/scheduler/framework/types.go:
``0/N nodes are available: <count> <reason>, ….``, reasons sorted as strings)."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from hami.sandbox.cli import load_pods
from hami.sandbox.cluster import Sandbox
from hami.sandbox.kubescheduler import fit_error, fit_reasons, merge_extender, node_reasons, pod_requests
from hami.wire.quantity import parse_quantity

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "deploy" / "examples" / "quickstart"


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox() as running:
        yield running


def _pod(name, limits=None, **spec):
    container = {"name": "c", "image": "busybox", **({"resources": {"limits": limits}} if limits else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [container], **spec}}


# ------------------------------------------------------------------ end to end


def test_a_pod_asking_a_resource_no_node_has_stays_pending_with_kube_schedulers_words(sandbox):
    outcome = sandbox.submit(_pod("wants-unknown", {"example.com/unknown-accelerator": 1}))
    assert outcome.phase == "Pending" and outcome.node == ""
    assert outcome.reason == "0/5 nodes are available: 5 Insufficient example.com/unknown-accelerator."


def test_cpu_and_memory_are_checked_against_each_nodes_allocatable(sandbox):
    # the default nodes have 32-192 cores (nodes.yaml): 100 fit only the 192-core node
    big = sandbox.submit(_pod("cpu-100", {"cpu": "100", "memory": "1Gi"}))
    assert big.phase == "Running" and big.node == "npu-910b3"
    # now nothing has 100 cores free
    again = sandbox.submit(_pod("cpu-100-again", {"cpu": "100"}))
    assert again.phase == "Pending" and again.reason == "0/5 nodes are available: 5 Insufficient cpu."
    sandbox.delete("default", "cpu-100")
    too_much = sandbox.submit(_pod("memory-2ti", {"memory": "2Ti"}))
    assert too_much.reason == "0/5 nodes are available: 5 Insufficient memory."


def test_node_selectors_count_as_kube_scheduler_counts_them(sandbox):
    outcome = sandbox.submit(
        _pod("wants-gpu-node", {"example.com/unknown-accelerator": 1}, nodeSelector={"kubernetes.io/hostname": "gpu-a100"})
    )
    assert outcome.reason == (
        "0/5 nodes are available: 1 Insufficient example.com/unknown-accelerator, 4 node(s) didn't match Pod's node affinity/selector."
    )
    plain = sandbox.submit(_pod("on-dcu", nodeSelector={"kubernetes.io/hostname": "dcu-z100"}))
    assert plain.phase == "Running" and plain.node == "dcu-z100"


def test_the_extenders_reasons_are_merged_with_the_plugins(sandbox):
    """Nodes the plugins refuse never reach the extender; the extender's failed nodes join the histogram."""
    pod = _pod("gpu-on-a100-only-too-big", {"nvidia.com/gpumem": 200000}, nodeSelector={"kubernetes.io/hostname": "gpu-a100"})
    outcome = sandbox.submit(pod)
    assert outcome.phase == "Pending"
    assert outcome.reason.startswith("0/5 nodes are available: 1 CardInsufficientMemory")
    assert outcome.reason.endswith(", 4 node(s) didn't match Pod's node affinity/selector.")


def test_a_pod_naming_a_scheduler_nobody_runs_waits(sandbox):
    outcome = sandbox.submit(_pod("other-scheduler", schedulerName="volcano"))
    assert outcome.phase == "Pending" and "no scheduler named 'volcano'" in outcome.reason


def test_nothing_runs_on_a_node_without_a_resource_it_asked_for(sandbox):
    """Whatever the sandbox ran, the node it ran on advertises every extended resource the pod
    asks for, or that resource is one hami's extender placed (and kubelet handed to its plugin)."""
    for path in [*sorted((ROOT / "deploy" / "examples").glob("*.yaml")), *sorted(QUICKSTART.glob("*.yaml"))]:
        if path.name.startswith("nodes"):
            continue
        for pod in load_pods((str(path),)):
            pod["metadata"]["name"] = f"check-{pod['metadata']['name']}"
            outcome = sandbox.submit(pod)
            if outcome.phase != "Running":
                continue
            stored = json.loads(sandbox._raw.read_namespaced_pod(outcome.name, "default", _preload_content=False).data)
            node = json.loads(sandbox._raw.read_node(outcome.node, _preload_content=False).data)
            allocatable = node["status"]["allocatable"]
            for name in pod_requests(stored):
                assert name in allocatable or name in sandbox.managed, (outcome.name, name, outcome.node)
            for container in outcome.containers:
                handed = container.envs or container.device_nodes or container.mounts
                assert not container.devices or handed, (outcome.name, container.name)  # granted devices reached the plugin
            sandbox.delete("default", outcome.name)


# ------------------------------------------------------------------ the quick-start pods


@pytest.fixture(scope="module")
def quickstart(sandbox):
    pods = load_pods(tuple(str(p) for p in sorted(QUICKSTART.glob("*.yaml"))))
    return {o.name: o for o in (sandbox.submit(pod) for pod in pods)}


def test_every_quickstart_pod_reaches_the_phase_a_real_cluster_gives_it(quickstart):
    assert len(quickstart) == 5
    wrong = {name: (o.phase, o.expected, o.reason) for name, o in quickstart.items() if not o.as_expected}
    assert not wrong


def test_the_articles_nvidia_pods(quickstart):
    assert [(d.memory_mib, d.cores) for d in quickstart["quickstart-gpumem"].containers[0].devices] == [(3000, 0)]
    assert [d.cores for d in quickstart["quickstart-gpucores"].containers[0].devices] == [50]
    typed = quickstart["quickstart-use-gputype"]
    assert typed.node in ("gpu-a100", "gpu-v100") and typed.containers[0].envs


def test_the_older_ascend_names_run_on_the_910_family_chip_with_a_template(sandbox, quickstart):
    outcome = quickstart["quickstart-ascend910"]
    assert outcome.node == "npu-910b3"
    (device,) = outcome.containers[0].devices
    assert device.type == "Ascend910B3" and device.memory_mib == 16384  # 2000 MiB rounds up to vir05_1c_16g
    assert "ASCEND_VISIBLE_DEVICES" in outcome.containers[0].envs  # kubelet called the 910B3 plugin
    assert any("huawei.com/Ascend910B3" in w and "older name" in w for w in outcome.warnings)
    stored = json.loads(sandbox._raw.read_namespaced_pod(outcome.name, "default", _preload_content=False).data)
    limits = stored["spec"]["containers"][0]["resources"]["limits"]
    assert {k: parse_quantity(v) for k, v in limits.items()} == {"huawei.com/Ascend910B3": 1, "huawei.com/Ascend910B3-memory": 2000}


def test_the_older_cambricon_pod_gets_5120_mib_and_says_why(quickstart):
    outcome = quickstart["quickstart-mlu"]
    (device,) = outcome.containers[0].devices
    assert (device.memory_mib, device.cores) == (5120, 10)
    assert outcome.containers[0].envs["CAMBRICON_DSMLU_PROFILE"].endswith("_10_20")
    assert any("20 slices of 256 MiB = 5120 MiB" in w and "vmemory_percent" in w for w in outcome.warnings)
    assert any("cambricon.com/mlunum" in w and "rewritten" in w for w in outcome.warnings)


def test_with_aliases_off_the_older_ascend_names_are_refused_naming_the_chip_names():
    with Sandbox(settings={"backends": {"ascend": {"resource_aliases": {}}}}) as off:
        outcome = off.submit(load_pods((str(QUICKSTART / "ascend910-older-names.yaml"),))[0])
    assert outcome.phase == "Rejected"
    assert "aliases are off" in outcome.reason and "huawei.com/Ascend910B3" in outcome.reason


def test_the_percentage_reading_of_vmemory(tmp_path):
    with Sandbox(settings={"backends": {"cambricon": {"vmemory_percent": True}}}) as percent:
        outcome = percent.submit(load_pods((str(QUICKSTART / "cambricon-mlunum.yaml"),))[0])
    (device,) = outcome.containers[0].devices
    assert outcome.phase == "Running" and device.memory_mib == 49152 * 20 // 100  # 20 % of a 48 GiB MLU370
    assert any("read as 20 % of the card" in w for w in outcome.warnings)


# ------------------------------------------------------------------ the rules, without a cluster


def test_pod_requests_follow_kubernetes_pod_requests():
    pod = {
        "spec": {
            "initContainers": [
                {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "init", "resources": {"limits": {"cpu": "2", "example.com/x": "3"}}},
            ],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1"}}},
                {"name": "b", "resources": {"limits": {"example.com/x": "1"}}},
            ],
            "overhead": {"cpu": "250m"},
        }
    }
    asked = pod_requests(pod)
    # cpu: max(apps 0.5 + sidecar 0.1, init 2 + sidecar 0.1) + overhead 0.25; x: max(1, 3)
    assert asked == {"cpu": Decimal("2.35"), "memory": Decimal(2**30), "example.com/x": Decimal(3)}


def test_fit_reasons_ignore_what_the_extender_manages_and_count_the_pods():
    allocatable = {"cpu": "4", "memory": "8Gi", "pods": "2", "example.com/x": "1"}
    asked = {"cpu": Decimal("3.001"), "example.com/x": Decimal(2), "example.com/managed": Decimal(5)}
    reasons = fit_reasons(asked, allocatable, {"cpu": Decimal(1)}, 2, frozenset({"example.com/managed"}))
    assert reasons == ["Too many pods", "Insufficient cpu", "Insufficient example.com/x"]
    assert fit_reasons({"cpu": Decimal(3)}, allocatable, {"cpu": Decimal(1)}, 0, frozenset()) == []


def test_taints_and_unschedulable_nodes():
    node = {
        "metadata": {"name": "n", "labels": {}},
        "spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"pods": "110"}},
    }
    assert node_reasons({"spec": {}}, node, {}, {}, 0, frozenset()) == ["node(s) had untolerated taint {gpu: yes}"]
    tolerant = {"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}}
    assert node_reasons(tolerant, node, {}, {}, 0, frozenset()) == []
    cordoned = {**node, "spec": {"unschedulable": True}}
    assert node_reasons({"spec": {}}, cordoned, {}, {}, 0, frozenset()) == ["node(s) were unschedulable"]


def test_fit_error_sorts_count_prefixed_strings_and_merges_extender_answers():
    statuses = {"a": ["Insufficient cpu"], "b": ["Insufficient cpu", "Insufficient memory"]}
    merge_extender(statuses, {"FailedNodes": {"c": "CardTypeMismatch", "d": "x"}, "FailedAndUnresolvableNodes": {"d": "NodeUnfit"}})
    assert fit_error(4, statuses) == "0/4 nodes are available: 1 CardTypeMismatch, 1 Insufficient memory, 1 NodeUnfit, 2 Insufficient cpu."
    assert fit_error(0, {}) == "0/0 nodes are available:"


@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.lists(st.sampled_from(["Insufficient cpu", "Too many pods", "r"]), min_size=1, max_size=3),
    )
)
def test_fit_error_counts_every_reason_once_per_node(statuses):
    message = fit_error(len(statuses), statuses)
    parts = message.split(": ", 1)[1].rstrip(".").split(", ") if statuses else []
    assert sorted(parts) == parts
    assert sum(int(p.split(" ", 1)[0]) for p in parts) == sum(len(r) for r in statuses.values())


@given(
    st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=4),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=3),
)
def test_init_containers_count_as_a_maximum_and_apps_as_a_sum(apps, inits):
    pod = {
        "spec": {
            "containers": [{"name": f"a{i}", "resources": {"requests": {"cpu": f"{m}m"}}} for i, m in enumerate(apps)],
            "initContainers": [{"name": f"i{i}", "resources": {"limits": {"cpu": f"{m}m"}}} for i, m in enumerate(inits)],
        }
    }
    assert pod_requests(pod)["cpu"] * 1000 == max([sum(apps), *inits])


def test_the_webhook_patch_removes_the_alias(sandbox):
    """The JSON Patch the sandbox applies is the webhook's: the older names go, the chip's names come."""
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "someone"},
            "object": yaml.safe_load((QUICKSTART / "ascend910-older-names.yaml").read_text()),
        },
    }
    body["request"]["object"]["spec"]["containers"][0]["resources"]["requests"] = {"huawei.com/Ascend910": "1"}
    response = sandbox._post("webhook", body)["response"]
    ops = json.loads(base64.b64decode(response["patch"]))
    removed = sorted(op["path"] for op in ops if op["op"] == "remove")
    assert removed == [
        "/spec/containers/0/resources/limits/huawei.com~1Ascend910",
        "/spec/containers/0/resources/limits/huawei.com~1Ascend910-memory",
        "/spec/containers/0/resources/requests/huawei.com~1Ascend910",
    ]
    added = {op["path"]: op["value"] for op in ops if op["op"] == "add"}
    assert added["/spec/containers/0/resources/limits/huawei.com~1Ascend910B3"] == "1"
    assert added["/spec/containers/0/resources/limits/huawei.com~1Ascend910B3-memory"] == "2000"
