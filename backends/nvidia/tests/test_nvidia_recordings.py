"""Discovery and usage on machines people published ``nvidia-smi`` outputs of (``recordings/``).

Each recording is replayed through the fake ``libnvidia-ml.so.1`` (``recorded.py`` turns it into the
fake's JSON) and the real backend; each test states, from the recording, what ``hami devices`` must
show: every GPU the recording lists, advertised or explained, with the fields the recording has.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

_SPEC = importlib.util.spec_from_file_location("hami_nvidia_tests_recorded", Path(__file__).with_name("recorded.py"))
assert _SPEC is not None and _SPEC.loader is not None
recorded = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = recorded
_SPEC.loader.exec_module(recorded)

README = Path(__file__).parents[1] / "README.md"


def replay(run_nvml, name: str, action: str = "discover", **kwargs):
    return run_nvml(recorded.scenario(recorded.load(recorded.HERE / name)), action=action, **kwargs)


def rows(out):
    return [(d["index"], d["id"], d["type"], d["memory"], d["attributes"]["bus_id"], d["healthy"]) for d in out["devices"]]


def test_tesla_p100_in_a_vm_driver_510(run_nvml):
    out, log = replay(run_nvml, "nvidia-smi-q-x_tesla-p100-pcie-16gb_510.47.03.txt")
    assert rows(out) == [(0, "GPU-d3da8716-eaab-75db-efc1-60e88e1cd55e", "Tesla P100-PCIE-16GB", 16384, "00000000:00:04.0", True)]
    assert out["unadvertised"] == []
    attributes = out["devices"][0]["attributes"]
    assert attributes["mig_enabled"] is False and attributes["mig_devices"] == []  # MIG N/A: a Pascal card has none
    assert [(s["count"], s["memory"], s["mode"]) for s in out["split"]] == [(10, 16384, "hami-core")]
    assert "attribute=mig_mode" in log  # N/A is NOT_SUPPORTED: degraded, not an error


def test_geforce_rtx_2080_on_windows_wddm_busy(run_nvml):
    name = "nvidia-smi-q-x_geforce-rtx-2080_516.59-windows.txt"
    out, _ = replay(run_nvml, name)
    assert rows(out) == [(0, "GPU-fbd55ed4-1eec-4423-0a47-ad594b4333e3", "NVIDIA GeForce RTX 2080", 8192, "00000000:0a:00.0", True)]
    usage, _ = replay(run_nvml, name, action="usage")
    (sample,) = usage["rounds"][0]["devices"]
    # fb used 862 MiB of 8192, utilization 2 % / 7 %, 14.50 W, 29 C, as the recording shows
    assert (sample["memory_used"], sample["memory_total"]) == (862 << 20, 8192 << 20)
    assert (sample["utilization"], sample["memory_utilization"], sample["power_watts"], sample["temperature_celsius"]) == (
        0.02,
        0.07,
        14.5,
        29.0,
    )


def test_two_busy_tesla_p100_driver_375_before_mig(run_nvml):
    name = "nvidia-smi-q-x_2x-tesla-p100-pcie-12gb_375.66.txt"
    out, _ = replay(run_nvml, name)
    assert rows(out) == [
        (0, "GPU-28604e81-21ec-cc48-6759-bf2648b22e16", "Tesla P100-PCIE-12GB", 11567, "0000:04:00.0", True),
        (1, "GPU-46915a82-3fd2-8e11-ae26-a80b607c04f3", "Tesla P100-PCIE-12GB_2", 12290, "0000:82:00.0", True),
    ]
    # no MIG element at all in this driver's output: MIG off, each card split evenly by its own total
    assert [(s["id"][-4:], s["count"], s["memory"], s["mode"]) for s in out["split"]] == [
        ("2e16", 10, 11567, "hami-core"),
        ("04f3", 10, 12290, "hami-core"),
    ]
    usage, _ = replay(run_nvml, name, action="usage")
    used = [(d["memory_used"] >> 20, d["utilization"], d["power_watts"]) for d in usage["rounds"][0]["devices"]]
    assert used == [(11400, 0.33, 24.84), (11800, 0.10, 25.54)]  # "33.4 %" reaches NVML's whole percents as 33


def test_a100_80gb_pcie_split_into_four_mig_devices(run_nvml):
    out, _ = replay(run_nvml, "nvidia-smi-L_a100-80gb-pcie-mig.txt")
    (gpu,) = out["devices"]
    assert (gpu["index"], gpu["id"], gpu["type"]) == (0, "GPU-4101de38-535a-4255-ac14-a63e072d7a10", "NVIDIA A100 80GB PCIe")
    assert gpu["attributes"]["mig_enabled"] is True
    assert gpu["attributes"]["mig_devices"] == [
        {"uuid": "MIG-d771d938-b556-4f9d-b742-2dd26b864023", "profile": "3g.40gb", "memory": 40192},
        {"uuid": "MIG-08bce7f3-bac7-4715-b56f-91541f15fe37", "profile": "2g.20gb", "memory": 19968},
        {"uuid": "MIG-761ea9d1-82ac-41cb-9e19-d3593973f144", "profile": "1g.10gb", "memory": 9728},
        {"uuid": "MIG-a5b1e9ac-1c96-4ca0-b57c-53878e7531dc", "profile": "1g.10gb", "memory": 9728},
    ]
    (split,) = out["split"]
    assert (split["mode"], split["count"], split["memory"]) == ("mig", 4, 40192 + 19968 + 2 * 9728)
    assert split["partitions"] == [
        [
            {"name": "1g.10gb", "memory": 9728, "count": 2},
            {"name": "2g.20gb", "memory": 19968, "count": 1},
            {"name": "3g.40gb", "memory": 40192, "count": 1},
        ]
    ]


def test_tesla_t4_driver_525_from_a_device_plugin_report(run_nvml):
    out, _ = replay(run_nvml, "nvidia-smi-q_tesla-t4_525.89.02-aws.txt")
    assert [(d["index"], d["id"], d["type"], d["attributes"]["bus_id"], d["healthy"]) for d in out["devices"]] == [
        (0, "GPU-84b0bf9a-67bf-493c-9214-4fad8b125a6d", "Tesla T4", "00000000:00:1e.0", True)
    ]
    assert out["devices"][0]["attributes"]["mig_enabled"] is False and out["unadvertised"] == []


def test_four_rtx_2080_ti_with_one_off_the_bus(run_nvml):
    out, log = replay(run_nvml, "nvidia-smi-L_4x-geforce-rtx-2080-ti_520.61.05-gpu-off-the-bus.txt")
    assert [(d["index"], d["id"], d["type"]) for d in out["devices"]] == [
        (0, "GPU-67a571b1-79ee-1016-8ea3-c1fff3f1c1d2", "NVIDIA GeForce RTX 2080 Ti"),
        (2, "GPU-2d540dd6-583b-cf11-80dd-cc28edc1dd62", "NVIDIA GeForce RTX 2080 Ti"),
        (3, "GPU-80be5c9a-eb7d-2388-ad7c-7d3ee8f87235", "NVIDIA GeForce RTX 2080 Ti"),
    ]
    # nvidia-smi: "Unable to determine the device handle for GPU 0000:0B:00.0: Unknown Error"
    assert out["unadvertised"] == [
        {
            "id": "nvml-index-1",
            "index": 1,
            "type": "NVIDIA GPU",
            "healthy": False,
            "reason": "NVML cannot read GPU 1 (nvmlDeviceGetHandleByIndex: Unknown Error (NVML error 999))",
        }
    ]
    assert "event=nvml_discovered node=gpu-node-1 devices=3 unadvertised=1" in log


def test_hami_devices_lists_the_gpu_off_the_bus_with_its_reason(fake_nvml, tmp_path):
    """The operator's view: ``hami devices --json`` on that machine (the real CLI, every installed
    backend; the others find no tools and stay quiet)."""
    name = "nvidia-smi-L_4x-geforce-rtx-2080-ti_520.61.05-gpu-off-the-bus.txt"
    spec = tmp_path / "nvml.json"
    spec.write_text(json.dumps(recorded.scenario(recorded.load(recorded.HERE / name))))
    env = {k: v for k, v in os.environ.items() if k not in ("HAMI_INVENTORY", "LD_LIBRARY_PATH", "LD_PRELOAD")}
    env.update(LD_LIBRARY_PATH=str(fake_nvml["full"]), FAKE_NVML_CONFIG=str(spec), PATH=str(tmp_path))  # no vendor tools
    done = subprocess.run(
        [sys.executable, "-m", "hami.cli", "devices", "--json", "--node-name", "gpu-node-1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = [r for r in json.loads(done.stdout) if r["backend"] == "nvidia"]
    assert [(r["index"], r["id"][:12], r["advertised"]) for r in rows] == [
        (0, "GPU-67a571b1", True),
        (1, "nvml-index-1", False),
        (2, "GPU-2d540dd6", True),
        (3, "GPU-80be5c9a", True),
    ]
    assert rows[1]["reason"] == "NVML cannot read GPU 1 (nvmlDeviceGetHandleByIndex: Unknown Error (NVML error 999))"
    assert rows[1]["health"] == "Unhealthy" and rows[1]["slots"] == 0
    assert "WARNING" not in done.stderr, done.stderr  # absent tools of other vendors are not warnings


def test_every_recording_has_a_test_and_cites_a_public_source():
    names = [p.name for p in recorded.recordings()]
    assert len(names) >= 5
    this = Path(__file__).read_text()
    for name in names:
        recording = recorded.load(recorded.HERE / name)
        assert re.match(r"https?://|MortalGPU", recording.source), f"{name}: source {recording.source!r} is no public address"
        assert "absent from the source" in recording.header, f"{name}: say which figures the source does not show"
        assert f'"{name}"' in this, f"{name} has no test replaying it"


def test_the_readme_lists_every_recording():
    text = README.read_text()
    missing = [p.name for p in recorded.recordings() if p.name not in text]
    assert missing == [], f"backends/nvidia/README.md does not list {missing}"


@pytest.mark.parametrize("header", ["", "# command: nvidia-smi -L\n"])
def test_a_recording_without_a_source_is_refused(tmp_path, header):
    path = tmp_path / "x.txt"
    path.write_text(f"{header}GPU 0: NVIDIA T4 (UUID: GPU-1)\n")
    with pytest.raises(ValueError, match="no '# source:' header"):
        recorded.load(path)


_HEX = st.text("0123456789abcdef", min_size=8, max_size=8)
_NAME = st.from_regex(r"NVIDIA [A-Z][A-Za-z0-9 -]{0,20}[A-Za-z0-9]", fullmatch=True)
_PROFILE = st.from_regex(r"[1-7]g\.[1-9][0-9]?gb", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_NAME, _HEX, st.lists(st.tuples(_PROFILE, _HEX), max_size=7)), min_size=1, max_size=8))
def test_any_listing_reads_back_as_written(gpus):
    """The -L reader (a test helper, but the recordings' meaning rests on it): every GPU and MIG line
    nvidia-smi could print comes back with its name, UUID and profile, in order."""
    lines = []
    for i, (name, uid, migs) in enumerate(gpus):
        lines.append(f"GPU {i}: {name} (UUID: GPU-{uid})")
        lines += [f"  MIG {profile:<12}Device {d:>2}: (UUID: MIG-{mid})" for d, (profile, mid) in enumerate(migs)]
    devices = recorded.scenario(recorded.Recording("x", {"source": "-"}, "\n".join(lines)))["devices"]
    assert [(d["name"], d["uuid"]) for d in devices] == [(name, f"GPU-{uid}") for name, uid, _ in gpus]
    for device, (name, _, migs) in zip(devices, gpus, strict=True):
        assert [(m["uuid"], m["name"]) for m in device.get("mig_devices", [])] == [(f"MIG-{mid}", f"{name} MIG {p}") for p, mid in migs]
        assert device.get("mig") == (1 if migs else None)
