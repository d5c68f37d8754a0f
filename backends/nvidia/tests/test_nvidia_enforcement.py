"""Issue 28 on NVIDIA nodes: what enforces a share is checked on a fake host root (HAMi-core as a
real ELF shared object built here, or missing, or a fake file), the MPS pipe, and MIG mode as the
fake NVML reports it; the agent's discovery then advertises exactly what is enforceable."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hami.node.devices import discover_node
from hami.sdk import Grant, GrantedDevice, NodeContext, PhysicalDevice
from hami_nvidia import enforcement, nvml

VERSION = "v2.10.0"


@pytest.fixture(scope="module")
def libvgpu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real shared object for this host, standing in for HAMi-core's libvgpu.so."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("a C compiler (cc/gcc) is needed to build the stand-in libvgpu.so")
    root = tmp_path_factory.mktemp("libvgpu")
    (root / "vgpu.c").write_text("int cuInit(unsigned int flags) { return (int)flags; }\n")
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(root / "libvgpu.so"), str(root / "vgpu.c")], check=True, capture_output=True)
    return root / "libvgpu.so"


def install(root: Path, lib: Path, *, versioned: bool = True, preload: bool = True) -> Path:
    """Lay HAMi-core out as the chart's init container does: the versioned file, a stable link, the preload list."""
    vgpu = root / "usr/local/vgpu"
    vgpu.mkdir(parents=True, exist_ok=True)
    if versioned:
        shutil.copy(lib, vgpu / f"libvgpu.so.{VERSION}")
        os.symlink(f"libvgpu.so.{VERSION}", vgpu / "libvgpu.so")
    else:
        shutil.copy(lib, vgpu / "libvgpu.so")
    if preload:
        (vgpu / "ld.so.preload").write_text("/usr/local/vgpu/libvgpu.so\n")
    return root


def fake_file(root: Path) -> Path:
    """What the older tests' host root holds: a file that starts like ELF and is nothing more."""
    (root / "usr/local/vgpu").mkdir(parents=True)
    (root / "usr/local/vgpu/libvgpu.so").write_bytes(b"\x7fELF fake")
    (root / "usr/local/vgpu/ld.so.preload").write_text("/usr/local/vgpu/libvgpu.so\n")
    return root


def _node(config: dict[str, Any]) -> NodeContext:
    return NodeContext("gpu-1", config=config)


GPUS = [PhysicalDevice(id=f"GPU-{i}", vendor="NVIDIA", type="NVIDIA A100", memory=40960, index=i) for i in range(2)]


def test_hami_core_installed_as_the_chart_does_is_ready_with_its_version(tmp_path, libvgpu):
    root = install(tmp_path, libvgpu)
    (report,) = enforcement.check(GPUS, {"host_root": str(root)}, _node({}))
    assert report.ready and report.mode == "hami-core"
    assert report.mechanism == f"HAMi-core /usr/local/vgpu/libvgpu.so ({VERSION})"
    (pinned,) = enforcement.check(GPUS, {"host_root": str(root), "libvgpu_version": VERSION}, _node({}))
    assert pinned.mechanism == f"HAMi-core /usr/local/vgpu/libvgpu.so.{VERSION} ({VERSION})"


def test_an_unversioned_library_is_ready_and_says_so(tmp_path, libvgpu):
    (report,) = enforcement.check(GPUS, {"host_root": str(install(tmp_path, libvgpu, versioned=False))}, _node({}))
    assert report.ready and report.mechanism.endswith("(version unknown)")


@pytest.mark.parametrize(
    ("lay_out", "why"),
    [
        (lambda root, lib: root, "/usr/local/vgpu/libvgpu.so is missing"),
        (lambda root, lib: install(root, lib, preload=False), "/usr/local/vgpu/ld.so.preload is missing"),
        (lambda root, lib: fake_file(root), "truncated ELF"),
    ],
)
def test_missing_or_broken_hami_core_is_not_ready_and_says_what_to_do(tmp_path, libvgpu, lay_out, why):
    root = lay_out(tmp_path / "host", libvgpu)
    (report,) = enforcement.check(GPUS, {"host_root": str(root)}, _node({}))
    assert not report.ready and why in report.reason and "agent.hamiCore" in report.reason


def test_mps_needs_the_daemons_pipe_or_a_control_executable_the_agent_can_start(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    config = {"host_root": str(tmp_path), "mode": "mps", "mps_manage_daemon": False}
    (report,) = enforcement.check(GPUS, config, _node({}))
    assert (
        not report.ready
        and "no MPS control daemon pipe at /run/nvidia/mps/pipe" in report.reason
        and "mps_manage_daemon is off" in report.reason
    )
    (managed,) = enforcement.check(GPUS, {**config, "mps_manage_daemon": True}, _node({}))
    assert not managed.ready and "nvidia-cuda-mps-control is not on its PATH" in managed.reason
    (tmp_path / "bin").mkdir()
    control = tmp_path / "bin" / "nvidia-cuda-mps-control"
    control.write_text("#!/bin/sh\nexit 0\n")
    control.chmod(0o755)
    assert enforcement.check(GPUS, {**config, "mps_manage_daemon": True}, _node({}))[0].ready
    (tmp_path / "run/nvidia/mps/pipe").mkdir(parents=True)
    (piped,) = enforcement.check(GPUS, config, _node({}))
    assert piped.ready and piped.mechanism == "MPS control daemon pipe /run/nvidia/mps/pipe"


def _devices(out: dict[str, Any]) -> list[PhysicalDevice]:
    return [
        PhysicalDevice(id=d["id"], vendor="NVIDIA", type=d["type"], memory=d["memory"], index=d["index"], attributes=d["attributes"])
        for d in out["devices"]
    ]


def test_mig_mode_comes_from_the_fake_nvml_per_gpu(run_nvml):
    a100 = "NVIDIA A100-SXM4-40GB"
    migs = [{"uuid": f"MIG-{i}", "name": f"{a100} MIG 1g.5gb", "memory_mib": 4864} for i in range(2)]
    gpus = [
        {"uuid": "GPU-0", "name": a100, "memory_mib": 40960, "bus_id": "00000000:10:00.0", "mig": 1, "mig_devices": migs},
        {"uuid": "GPU-1", "name": a100, "memory_mib": 40960, "bus_id": "00000000:11:00.0", "mig": 0},
    ]
    out, _ = run_nvml({"devices": gpus}, config={"mode": "mig"})
    reports = enforcement.check(_devices(out), {"mode": "mig"}, _node({}))
    assert [(r.ready, r.device_ids) for r in reports] == [(True, ()), (False, ("GPU-1",))]
    assert "GPU 1 (GPU-1) is not in MIG mode (nvidia-smi -i 1 -mig 1" in reports[1].reason
    # hami-core nodes report MIG only for the GPUs in MIG mode, which are enforced by the hardware
    on = enforcement.check(_devices(out), {"host_root": "/nonexistent"}, _node({}))
    assert [(r.mode, r.ready) for r in on] == [("hami-core", False), ("mig", True)]


def test_mode_none_enforces_nothing():
    (report,) = enforcement.check(GPUS, {"mode": "none"}, _node({}))
    assert not report.ready and "time-slicing" in report.reason and "advisory_limits" in report.reason


def test_simulated_nodes_are_enforced_unless_the_inventory_says_otherwise():
    gpus = [
        GPUS[0],
        PhysicalDevice(
            id="GPU-1", vendor="NVIDIA", type="A100", memory=1, index=1, attributes={"isolation_missing": "HAMi-core not installed"}
        ),
    ]
    reports = enforcement.check(gpus, {}, NodeContext("sim", simulated=True))
    assert [(r.ready, r.device_ids) for r in reports] == [(True, ()), (False, ("GPU-1",))]


# ---------------------------------------------------------------- what the agent advertises


@pytest.fixture
def real_node(nvidia, monkeypatch):
    """The NVIDIA backend on a real (not simulated) node whose NVML shows two A100s."""
    monkeypatch.delenv("HAMI_INVENTORY", raising=False)
    monkeypatch.setattr(nvml, "discover", lambda node_name, config: list(GPUS))
    return nvidia


def _advertised(manager: Any, tmp_path: Path) -> list[tuple[int, str]]:
    return [(d.schedulable.count, d.isolation) for d in discover_node(manager, "gpu-1", tmp_path / "state").devices]


def test_the_agent_advertises_shares_only_where_hami_core_is(real_node, tmp_path, libvgpu):
    root = install(tmp_path / "host", libvgpu)
    assert _advertised(real_node(host_root=str(root)), tmp_path) == [(10, "enforced")] * 2
    (root / "usr/local/vgpu/libvgpu.so").unlink()  # removed by hand: the shares disappear at the next discovery
    assert _advertised(real_node(host_root=str(root)), tmp_path) == [(1, "whole-only")] * 2
    assert _advertised(real_node(host_root=str(root), advisory_limits=True), tmp_path) == [(10, "advisory")] * 2


def test_a_whole_gpu_without_hami_core_runs_visibility_only_and_a_share_is_refused(real_node, tmp_path):
    manager = real_node(host_root=str(tmp_path / "empty-host"))
    node = NodeContext("gpu-1", config=manager.config("nvidia"), state_dir=tmp_path / "state")
    pod = {"metadata": {"uid": "u1", "name": "p"}}
    container = {"name": "main"}
    whole = [GrantedDevice(Grant("GPU-0", "NVIDIA", 40960, 100), GPUS[0], manager.split(GPUS[0], node))]
    edits = manager.container_edits([whole[0].grant], pod, container, node, whole)
    assert edits.env == {"NVIDIA_VISIBLE_DEVICES": "GPU-0"} and not edits.mounts
    share = [GrantedDevice(Grant("GPU-0", "NVIDIA", 4096, 30), GPUS[0], manager.split(GPUS[0], node))]
    with pytest.raises(Exception, match=r"HAMi-core.s /usr/local/vgpu/libvgpu\.so"):
        manager.container_edits([share[0].grant], pod, container, node, share)
