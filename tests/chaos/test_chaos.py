"""The bounded chaos suite (issue 19): seeded runs of hami.sandbox.chaos in the default test run —
parallel pods onto nearly full nodes under API faults (409/500/503 on pod, binding and node writes,
latency, clean and abrupt watch cuts), fuzzed extender and webhook bodies, forged and edited allocation
annotations — each asserting 0 over-allocation, 0 leaks and 0 unclear errors. A failing seed replays
with ``run_chaos(seed)`` (bench/chaos.py --seed N prints the figures)."""

from __future__ import annotations

import json

import pytest

from hami.plugin.model import Grant
from hami.sandbox.chaos import _leaks, _over_allocated, run_chaos
from hami.sandbox.cluster import Sandbox
from hami.wire.allocation import Allocation
from hami.wire.annotations import NODE_LOCK


@pytest.mark.parametrize("seed", [7, 19])
def test_chaos_run_keeps_every_invariant(seed):
    report = run_chaos(seed, pods=24, workers=6, fuzz=40)
    print("\n".join(report.lines()))
    assert report.over_allocated == ()
    assert report.leaked == ()
    assert report.unclear == ()
    assert report.crashes == 0
    assert report.inputs == 40 and report.faults > 0 and report.running > 0
    # kube-scheduler's retries (RetryQueue): a pod that lost a bind race or met a fault is tried until
    # it runs; only a pod that fits no node once the cluster is at rest stays Pending
    assert len(report.tries) == report.pods and min(report.tries) >= 1
    assert report.running + report.unschedulable == report.pods, report.reasons


def test_the_checks_see_an_over_allocation_and_a_leak():
    """The invariants are not vacuous: a signed grant beyond a device's memory and a lock left on a
    node are reported, naming the device and the node."""
    with Sandbox() as sandbox:
        raw = sandbox._raw
        device = sorted(sandbox.service.state.nodes["gpu-a100"].devices.values(), key=lambda d: d.id)[0]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "big", "namespace": "default"},
            "spec": {"nodeName": "gpu-a100", "containers": [{"name": "c", "image": "x"}]},
        }
        created = json.loads(raw.create_namespaced_pod("default", pod, _preload_content=False).data)
        grant = Grant(device.id, device.vendor, device.memory * 2, 0)
        annotations = Allocation("gpu-a100", {"NVIDIA": ((grant,),)}).annotations(
            sandbox.manager.kinds, created["metadata"]["uid"], 0, sandbox.keys
        )
        raw.patch_namespaced_pod("big", "default", {"metadata": {"annotations": annotations}}, _preload_content=False)
        found = _over_allocated(sandbox)
        assert any(device.id in line and f"{device.memory * 2} MiB" in line for line in found), found
        raw.delete_namespaced_pod("big", "default", _preload_content=False)
        raw.patch_node("gpu-a100", {"metadata": {"annotations": {NODE_LOCK: "2026-01-01T00:00:00Z,default,gone"}}}, _preload_content=False)
        assert any("node gpu-a100: lock" in line for line in _leaks(sandbox, timeout=0.5))
