"""MIG instance identity (issue 18): discovery reads each instance's GPU-instance/compute-instance ids
and placement through the real nvidia-ml-py bindings and the fake libnvidia-ml, and Allocate reports
the instance each container got as HAMi records it (``hami.io/vgpu-mig-allocations``).

Upstream: Project-HAMi/HAMi pkg/device/nvidia/mig_allocations.go (MigAllocation: containerIndex,
deviceIndex, gpuUUID, profile, placement{start,size}, migUUID, gpuInstanceID, computeInstanceID),
pkg/device-plugin/nvidiadevice/nvinternal/plugin/server.go annotateMigRuntimeInfo (the plugin fills
migUUID and the GI/CI ids from NVML once the instance exists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hami.sdk import Grant, PartitionInstance
from hami.wire import partitions

A100 = "NVIDIA A100-SXM4-80GB"
NODE = "gpu-node"


def mig_gpu(migs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "uuid": "GPU-0",
        "name": A100,
        "memory_mib": 81920,
        "bus_id": "00000000:10:00.0",
        "numa": 0,
        "cc": [8, 0],
        "mig": 1,
        "mig_devices": migs,
    }


def test_discovery_records_each_instance_s_ids_and_placement(run_nvml):
    migs = [
        {"uuid": "MIG-a", "name": f"{A100} MIG 1g.10gb", "memory_mib": 9728, "gi": 9, "ci": 0, "placement": [6, 1]},
        {"uuid": "MIG-b", "name": f"{A100} MIG 3g.40gb", "memory_mib": 40192, "gi": 2, "ci": 1, "placement": [0, 4]},
    ]
    out, log = run_nvml({"devices": [mig_gpu(migs)]})
    found = out["devices"][0]["attributes"]["mig_devices"]
    assert found == [
        {
            "uuid": "MIG-a",
            "profile": "1g.10gb",
            "memory": 9728,
            "gpu_instance_id": 9,
            "compute_instance_id": 0,
            "placement_start": 6,
            "placement_size": 1,
        },
        {
            "uuid": "MIG-b",
            "profile": "3g.40gb",
            "memory": 40192,
            "gpu_instance_id": 2,
            "compute_instance_id": 1,
            "placement_start": 0,
            "placement_size": 4,
        },
    ]
    assert "nvml_attribute_degraded" not in log


def test_a_driver_that_cannot_tell_the_ids_still_hands_the_instance_out(run_nvml):
    """No GI id (NOT_SUPPORTED) or a missing placement call: the instance is listed without them,
    one degraded line names what is missing."""
    migs = [{"uuid": "MIG-a", "name": f"{A100} MIG 1g.10gb", "memory_mib": 9728}]
    out, log = run_nvml({"devices": [mig_gpu(migs)]})
    assert out["devices"][0]["attributes"]["mig_devices"] == [{"uuid": "MIG-a", "profile": "1g.10gb", "memory": 9728}]
    assert out["split"][0]["mode"] == "mig" and out["split"][0]["count"] == 1
    assert log.count("event=nvml_attribute_degraded") == 1 and "attribute=mig_identity" in log and "Not Supported" in log

    migs = [{"uuid": "MIG-a", "name": f"{A100} MIG 1g.10gb", "memory_mib": 9728, "gi": 3, "ci": 0, "placement": [2, 1]}]
    out, log = run_nvml({"devices": [mig_gpu(migs)], "missing": ["nvmlGpuInstanceGetInfo"]})
    assert out["devices"][0]["attributes"]["mig_devices"] == [
        {"uuid": "MIG-a", "profile": "1g.10gb", "memory": 9728, "gpu_instance_id": 3, "compute_instance_id": 0}
    ]
    assert "attribute=mig_placement" in log and "NVMLError_FunctionNotFound" in log


@pytest.fixture
def mig_node(nvidia, on_node, tmp_path: Path, host_root: Path):
    """GPU-0 in MIG mode: two 1g.10gb instances (one without a placement) and a 3g.40gb one."""
    instances = [
        {
            "uuid": "MIG-small",
            "profile": "1g.10gb",
            "memory": 9728,
            "gpu_instance_id": 9,
            "compute_instance_id": 0,
            "placement_start": 6,
            "placement_size": 1,
        },
        {"uuid": "MIG-unplaced", "profile": "1g.10gb", "memory": 9728},
        {
            "uuid": "MIG-big",
            "profile": "3g.40gb",
            "memory": 40192,
            "gpu_instance_id": 2,
            "compute_instance_id": 0,
            "placement_start": 0,
            "placement_size": 4,
        },
    ]
    devices = [
        {"vendor": "NVIDIA", "type": A100, "memory": 81920, "id": "GPU-0", "attributes": {"mig_enabled": True, "mig_devices": instances}}
    ]
    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(yaml.safe_dump({"nodes": [{"name": NODE, "devices": devices}]}))
    return on_node(nvidia(inventory=str(inventory), host_root=str(host_root)), NODE)


def _pod(uid: str) -> dict[str, Any]:
    return {"metadata": {"name": uid, "namespace": "default", "uid": uid, "annotations": {"nvidia.com/vgpu-mode": "mig"}}}


def _container(name: str = "main") -> dict[str, Any]:
    return {"name": name, "resources": {"limits": {"nvidia.com/gpu": "2"}}}


def test_allocate_reports_the_instance_each_grant_got(mig_node):
    grants = [Grant("GPU-0", "NVIDIA", 40192, 0), Grant("GPU-0", "NVIDIA", 9728, 0)]
    edits = mig_node.manager.container_edits(grants, _pod("a"), _container(), mig_node.node, mig_node.devices(grants))
    assert edits.env["NVIDIA_VISIBLE_DEVICES"] == "MIG-big,MIG-small"
    assert edits.partitions == (
        PartitionInstance(0, "GPU-0", "3g.40gb", 0, 4, "MIG-big", 2, 0),
        PartitionInstance(1, "GPU-0", "1g.10gb", 6, 1, "MIG-small", 9, 0),
    )
    # what the agent writes for container #1 of the pod: HAMi's JSON, its readers' field names
    raw = partitions.with_container(None, 1, edits.partitions)
    assert partitions.decode(raw)[1].instance.uuid == "MIG-small"
    assert '"containerIndex":1,"deviceIndex":1,"gpuUUID":"GPU-0","profile":"1g.10gb","placement":{"start":6,"size":1},' in raw
    assert '"migUUID":"MIG-small","gpuInstanceID":9,"computeInstanceID":0' in raw


def test_an_instance_without_a_placement_is_handed_out_but_not_recorded(mig_node):
    """HAMi's decoder rejects a whole pod's list for one entry without placement
    (DecodeMigAllocations: "MIG allocation %d is incomplete"), so such an instance is left out."""
    small = [Grant("GPU-0", "NVIDIA", 9728, 0)]
    first = mig_node.manager.container_edits(small, _pod("a"), _container(), mig_node.node, mig_node.devices(small))
    second = mig_node.manager.container_edits(small, _pod("b"), _container(), mig_node.node, mig_node.devices(small))
    assert (first.env["NVIDIA_VISIBLE_DEVICES"], second.env["NVIDIA_VISIBLE_DEVICES"]) == ("MIG-small", "MIG-unplaced")
    assert [p.uuid for p in first.partitions] == ["MIG-small"] and second.partitions == ()


def test_a_hami_core_container_reports_no_partition(mig_node, nvidia, on_node, tmp_path: Path, host_root: Path):
    inventory = tmp_path / "plain.yaml"
    inventory.write_text(
        yaml.safe_dump({"nodes": [{"name": "plain", "devices": [{"vendor": "NVIDIA", "type": A100, "memory": 81920, "id": "GPU-9"}]}]})
    )
    node = on_node(nvidia(inventory=str(inventory), host_root=str(host_root)), "plain", simulated=True)
    grants = [Grant("GPU-9", "NVIDIA", 4000, 30)]
    pod = {"metadata": {"name": "p", "namespace": "default", "uid": "u", "annotations": {}}}
    edits = node.manager.container_edits(grants, pod, _container(), node.node, node.devices(grants))
    assert edits.partitions == () and "CUDA_DEVICE_MEMORY_LIMIT_0" in edits.env
