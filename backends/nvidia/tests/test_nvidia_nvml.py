"""Discovery and XID health through the real nvidia-ml-py bindings and a fake libnvidia-ml.so.1.

Each case runs the backend in a subprocess (nvidia-ml-py loads the library by name, once per
process) with the fake first on LD_LIBRARY_PATH and its devices described by JSON.
"""

from __future__ import annotations

import ctypes.util
import json

import pytest

A100 = "NVIDIA A100-SXM4-80GB"


def gpu(i: int, **extra):
    spec = {
        "uuid": f"GPU-{i}",
        "name": A100,
        "memory_mib": 81920,
        "numa": i // 2,
        "bus_id": f"00000000:{0x10 + i:02X}:00.0",
        "cc": [8, 0],
        "mig": 0,
    }
    spec.update(extra)
    return spec


def bus(i: int) -> str:
    return f"00000000:{0x10 + i:02X}:00.0"


# GPU-0 and GPU-1 share two NVLinks; GPU-2 and GPU-3 one; GPU-0/2 sit under one PCIe switch.
FOUR = {
    "devices": [
        gpu(0, nvlinks=[bus(1), bus(1)], switch=1),
        gpu(1, nvlinks=[bus(0), bus(0)]),
        gpu(2, nvlinks=[bus(3)], switch=1),
        gpu(3, nvlinks=[bus(2)]),
    ]
}


def test_discovery_reads_every_gpu_through_the_bindings(run_nvml):
    out, log = run_nvml(FOUR)
    devices = out["devices"]
    assert [(d["id"], d["index"], d["type"], d["memory"], d["numa"], d["healthy"]) for d in devices] == [
        ("GPU-0", 0, A100, 81920, 0, True),
        ("GPU-1", 1, A100, 81920, 0, True),
        ("GPU-2", 2, A100, 81920, 1, True),
        ("GPU-3", 3, A100, 81920, 1, True),
    ]
    first = devices[0]["attributes"]
    assert first["source"] == "nvml" and "node_name" not in first  # hooks get the node; devices do not carry it
    assert first["compute_capability"] == "8.0" and first["bus_id"] == "00000000:10:00.0"
    assert first["nvlink_peers"] == {"GPU-1": 2}
    # HAMi's pair score: 100 per NVLink + the PCIe path (same NUMA node 20, one switch 50, across sockets 10)
    assert first["pair_scores"] == {"GPU-1": 220, "GPU-2": 50, "GPU-3": 10}
    assert [(s["count"], s["memory"], s["cores"], s["mode"]) for s in out["split"]] == [(10, 81920, 100, "hami-core")] * 4
    scores = json.loads(out["annotations"]["hami.io/node-nvidia-score"])
    assert scores[0] == {"uuid": "GPU-0", "score": {"GPU-1": 220, "GPU-2": 50, "GPU-3": 10}}
    assert "event=nvml_discovered node=gpu-node-1 devices=4" in log
    assert "nvml_attribute_degraded" not in log


def test_a_function_the_driver_reports_missing_degrades_only_that_attribute(run_nvml, tmp_path):
    sysfs = tmp_path / "host/sys/bus/pci/devices/0000:11:00.0"
    sysfs.mkdir(parents=True)
    (sysfs / "numa_node").write_text("3\n")
    out, log = run_nvml(
        {"devices": [gpu(0, numa=1), gpu(1, numa=1)], "missing": ["nvmlDeviceGetNumaNodeId"]}, config={"host_root": str(tmp_path / "host")}
    )
    # NUMA falls back to sysfs (GPU-1 has an entry; GPU-0 has none and reads as 0); everything else intact
    assert [(d["id"], d["numa"], d["memory"]) for d in out["devices"]] == [("GPU-0", 0, 81920), ("GPU-1", 3, 81920)]
    assert log.count("event=nvml_attribute_degraded") == 1
    assert "attribute=numa" in log and "NVMLError_FunctionNotFound" in log


def test_an_old_driver_without_the_symbols_still_lists_its_gpus(run_nvml):
    out, log = run_nvml({"devices": [gpu(0, numa=1)]}, variant="old")
    (device,) = out["devices"]
    assert (device["id"], device["memory"], device["numa"], device["attributes"]["compute_capability"]) == ("GPU-0", 81920, 0, "")
    assert "attribute=compute_capability" in log and "attribute=numa" in log


def test_a_gpu_that_is_lost_is_listed_unadvertised_with_the_nvml_error(run_nvml):
    out, log = run_nvml({"devices": [gpu(0), gpu(1, lost=True)]})
    assert [(d["id"], d["healthy"]) for d in out["devices"]] == [("GPU-0", True)]
    assert out["unadvertised"] == [
        {
            "id": "GPU-1",
            "index": 1,
            "type": A100,
            "healthy": False,
            "reason": "memory unknown (nvmlDeviceGetMemoryInfo: GPU is lost (NVML error 15))",
        }
    ]
    assert [s["id"] for s in out["split"]] == ["GPU-0"]  # never split, scored or registered
    assert out["annotations"] == {}  # one GPU: no pairs to score
    assert "event=nvml_discovered node=gpu-node-1 devices=1 unadvertised=1" in log


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ({"handle_error": 15}, "NVML cannot read GPU 1 (nvmlDeviceGetHandleByIndex: GPU is lost (NVML error 15))"),
        ({"handle_error": 4}, "NVML cannot read GPU 1 (nvmlDeviceGetHandleByIndex: Insufficient Permissions (NVML error 4))"),
        ({"uuid_error": 999}, "NVML cannot read GPU 1 (nvmlDeviceGetUUID: Unknown Error (NVML error 999))"),
    ],
)
def test_a_gpu_without_a_handle_or_uuid_is_listed_by_index_with_the_nvml_error(run_nvml, broken, reason):
    out, _ = run_nvml({"devices": [gpu(0), gpu(1, **broken), gpu(2)]})
    assert [d["id"] for d in out["devices"]] == ["GPU-0", "GPU-2"]
    assert out["unadvertised"] == [{"id": "nvml-index-1", "index": 1, "type": "NVIDIA GPU", "healthy": False, "reason": reason}]
    assert set(out["devices"][0]["attributes"]["pair_scores"]) == {"GPU-2"}


def test_a_gpu_without_a_memory_query_takes_preconfigured_device_memory_as_hami(run_nvml):
    # upstream pkg/device-plugin/nvidiadevice/nvinternal/plugin/register.go: NOT_SUPPORTED (unified memory,
    # GB10) uses preConfiguredDeviceMemory, else the GPU is skipped; we list it with the reason instead
    spec = {"devices": [gpu(0, name="NVIDIA GB10", memory_error=3)]}
    out, _ = run_nvml(spec)
    assert out["devices"] == []
    (row,) = out["unadvertised"]
    assert row["reason"].startswith(
        "memory unknown (nvmlDeviceGetMemoryInfo: Not Supported (NVML error 3)): set preconfigured_device_memory"
    )
    out, _ = run_nvml(spec, config={"nodes": {"gpu-node-1": {"preconfigured_device_memory": 122880}}})
    assert [(d["id"], d["memory"], d["healthy"]) for d in out["devices"]] == [("GPU-0", 122880, True)] and out["unadvertised"] == []
    # another failure is no size even with the setting (a lost GPU is not 120 GiB)
    out, _ = run_nvml({"devices": [gpu(0, memory_error=15)]}, config={"preconfigured_device_memory": 122880})
    assert out["devices"] == [] and "GPU is lost" in out["unadvertised"][0]["reason"]


def test_a_bad_preconfigured_device_memory_is_an_error_naming_it(run_nvml):
    out, _ = run_nvml({"devices": [gpu(0)]}, config={"preconfigured_device_memory": "128Gi"})
    assert "preconfigured_device_memory='128Gi'" in out["error"]


def test_a_mig_gpu_without_instances_is_explained(run_nvml):
    out, _ = run_nvml({"devices": [gpu(0, mig=1, mig_devices=[]), gpu(1)]})
    assert [d["id"] for d in out["devices"]] == ["GPU-1"]
    (row,) = out["unadvertised"]
    assert row["id"] == "GPU-0" and row["healthy"] is True
    assert row["reason"] == (
        "MIG mode is on but GPU 0 has no MIG instances: create them (nvidia-smi mig -i 0 -cgi <profiles> -C) "
        "or turn MIG off (nvidia-smi -i 0 -mig 0)"
    )


def test_no_driver_loaded_means_no_devices_and_one_clear_line(run_nvml):
    out, log = run_nvml({"init_error": 9, "devices": [gpu(0)]})
    assert out["devices"] == [] and out["annotations"] == {}
    assert log.count("event=nvml_unavailable") == 1 and "no NVIDIA driver" in log and "Driver Not Loaded" in log


def test_a_broken_driver_is_an_error_naming_it(run_nvml):
    out, _ = run_nvml({"init_error": 4, "devices": [gpu(0)]})
    assert out["error"].startswith(
        "BackendRefused: backend 'nvidia', hami_discover_devices: NVML initialisation failed on node 'gpu-node-1': Insufficient Permissions"
    )


def test_no_library_at_all_means_no_devices_and_one_clear_line(run_nvml):
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has a real libnvidia-ml; the loader would find it")
    out, log = run_nvml({}, variant="none")
    assert out["devices"] == []
    lines = [line for line in log.splitlines() if "event=" in line and "hami_nvidia" in line]
    assert len(lines) == 1 and "event=nvml_unavailable" in lines[0] and "NVML Shared Library Not Found" in lines[0]


def test_mig_gpus_offer_their_instances(run_nvml):
    migs = [{"uuid": f"MIG-{i}", "name": f"{A100} MIG 1g.10gb", "memory_mib": 9728} for i in range(3)]
    migs.append({"uuid": "MIG-big", "name": f"{A100} MIG 3g.40gb", "memory_mib": 40192})
    out, _ = run_nvml({"devices": [gpu(0, mig=1, mig_devices=migs), gpu(1)]})
    attributes = out["devices"][0]["attributes"]
    assert attributes["mig_enabled"] is True and len(attributes["mig_devices"]) == 4
    assert attributes["mig_devices"][3] == {"uuid": "MIG-big", "profile": "3g.40gb", "memory": 40192}
    mig, plain = out["split"]
    assert (mig["mode"], mig["count"], mig["memory"]) == ("mig", 4, 3 * 9728 + 40192)
    assert mig["partitions"] == [[{"name": "1g.10gb", "memory": 9728, "count": 3}, {"name": "3g.40gb", "memory": 40192, "count": 1}]]
    assert (plain["mode"], plain["count"]) == ("hami-core", 10)


def test_filters_and_node_overrides_apply_to_nvml_discovery(run_nvml):
    config = {
        "exclude": ["GPU-3"],
        "nodes": {"gpu-node-1": {"include": [0, "GPU-1", "GPU-3"], "split_count": 4, "mode": "mps"}, "other": {"split_count": 2}},
    }
    out, log = run_nvml(FOUR, config=config)
    assert [d["id"] for d in out["devices"]] == ["GPU-0", "GPU-1"]
    assert [(s["count"], s["mode"]) for s in out["split"]] == [(4, "mps"), (4, "mps")]
    assert json.loads(out["annotations"]["hami.io/node-nvidia-score"]) == [
        {"uuid": "GPU-0", "score": {"GPU-1": 220}},
        {"uuid": "GPU-1", "score": {"GPU-0": 220}},
    ]
    assert "event=gpus_filtered node=gpu-node-1 kept=2 skipped=GPU-2,GPU-3" in log
    assert out["unadvertised"] == [
        {
            "id": "GPU-2",
            "index": 2,
            "type": A100,
            "healthy": True,
            "reason": "not included by config key nodes.gpu-node-1.include=['0', 'GPU-1', 'GPU-3']",
        },
        {"id": "GPU-3", "index": 3, "type": A100, "healthy": True, "reason": "excluded by config key exclude=['GPU-3']"},
    ]


def test_hami_filterdevices_drop_gpus_by_uuid_or_index_and_say_so(run_nvml):
    # upstream pkg/device/nvidia/device.go FilterDeviceToRegister, chart nodeConfiguration "filterdevices"
    config = {"nodes": {"gpu-node-1": {"filterdevices": {"uuid": ["GPU-1"], "index": [3]}}}}
    out, _ = run_nvml(FOUR, config=config)
    assert [d["id"] for d in out["devices"]] == ["GPU-0", "GPU-2"]
    why = "excluded by config key nodes.gpu-node-1.filterdevices={'uuid': ['GPU-1'], 'index': [3]}"
    assert [(u["id"], u["reason"]) for u in out["unadvertised"]] == [("GPU-1", why), ("GPU-3", why)]


def test_xid_events_mark_gpus_unhealthy_ignore_application_xids_and_recover(run_nvml):
    scenario = {
        **FOUR,
        "xid_events": [
            {"uuid": "GPU-0", "xid": 13},
            {"uuid": "GPU-1", "xid": 79},
            {"uuid": "GPU-2", "xid": 43},
            {"uuid": "GPU-3", "xid": 48},
        ],
    }
    scenario["devices"][3]["lost_after"] = 1  # found at discovery, then broken for good: it must not recover
    config = {"health_recovery_seconds": 0.3, "health_wait_ms": 20}
    out, log = run_nvml(scenario, "3", "3", action="health", config=config)
    assert out["watcher_error"] is None
    events = out["events"]
    assert {(e["id"], e["healthy"], e["reason"]) for e in events[:2]} == {
        ("GPU-1", False, "XID 79 (critical error)"),
        ("GPU-3", False, "XID 48 (critical error)"),
    }
    assert events[2]["id"] == "GPU-1" and events[2]["healthy"] is True
    assert "event=xid_ignored device=GPU-0 xid=13" in log and "event=xid_ignored device=GPU-2 xid=43" in log


def test_the_ignored_xids_are_configurable(run_nvml):
    scenario = {"devices": [gpu(0)], "xid_events": [{"uuid": "GPU-0", "xid": 13}]}
    out, _ = run_nvml(scenario, "1", "2", action="health", config={"ignored_xids": [31], "health_wait_ms": 20})
    assert out["events"] == [{"id": "GPU-0", "healthy": False, "reason": "XID 13 (critical error)"}]
