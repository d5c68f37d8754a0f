"""Container edits per isolation mode, key by key against the documented contract (hami-compat.md,
vendors.md), plus what prepare and release do on the host."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from hami.plugin.manager import BackendManager
from hami.sdk import BackendError, Grant
from hami_nvidia.plugin import INFO, NvidiaBackend

NODE = "gpu-node"


@pytest.fixture
def gpu_node(nvidia, on_node, tmp_path: Path, host_root: Path):
    """``gpu_node(simulated=False, **config)`` → the node with GPU-0, GPU-1 and MIG-enabled GPU-2."""

    def build(simulated: bool = False, **config: Any):
        instances = [{"uuid": f"MIG-2-{n}", "profile": "1g.10gb", "memory": 9728} for n in range(2)]
        devices = [
            {"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 81920, "id": "GPU-0"},
            {"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 81920, "id": "GPU-1", "index": 1},
            {
                "vendor": "NVIDIA",
                "type": "NVIDIA A100",
                "memory": 81920,
                "id": "GPU-2",
                "index": 2,
                "attributes": {"mig_enabled": True, "mig_devices": instances},
            },
        ]
        inventory = tmp_path / "nodes.yaml"
        inventory.write_text(yaml.safe_dump({"nodes": [{"name": NODE, "devices": devices}]}))
        return on_node(nvidia(inventory=str(inventory), host_root=str(host_root), **config), NODE, simulated=simulated)

    return build


def pod(mode: str | None = None, uid: str = "uid-p") -> dict[str, Any]:
    annotations = {"nvidia.com/vgpu-mode": mode} if mode else {}
    return {"metadata": {"name": "p", "namespace": "default", "uid": uid, "annotations": annotations}}


def container(name: str = "main", env: list[dict[str, str]] | None = None, priority: str | None = None) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": "2", **({"nvidia.com/priority": priority} if priority else {})}
    return {"name": name, "env": env or [], "resources": {"limits": limits}}


TWO = [Grant("GPU-0", "NVIDIA", 3000, 30), Grant("GPU-1", "NVIDIA", 5000, 30)]


def mounts(edits) -> list[tuple[str, str, bool]]:
    return [(m.container_path, m.host_path, m.read_only) for m in edits.mounts]


def test_hami_core_env_and_mounts_are_exactly_hamis(gpu_node):
    manager = gpu_node()
    edits = manager.container_edits(TWO, pod(), container(priority="1"))
    env = dict(edits.env)
    cache = env.pop("CUDA_DEVICE_MEMORY_SHARED_CACHE")
    assert re.fullmatch(r"/usr/local/vgpu/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.cache", cache)
    assert env == {
        "CUDA_DEVICE_MEMORY_LIMIT_0": "3000m",
        "CUDA_DEVICE_MEMORY_LIMIT_1": "5000m",
        "CUDA_DEVICE_SM_LIMIT": "30",
        "CUDA_TASK_PRIORITY": "1",
        "NVIDIA_VISIBLE_DEVICES": "GPU-0,GPU-1",
    }
    assert mounts(edits) == [
        ("/usr/local/vgpu/libvgpu.so", "/usr/local/vgpu/libvgpu.so", True),
        ("/usr/local/vgpu", "/usr/local/vgpu/containers/uid-p_main", False),
        ("/tmp/vgpulock", "/tmp/vgpulock", False),
        ("/etc/ld.so.preload", "/usr/local/vgpu/ld.so.preload", True),
    ]
    assert edits.devices == () and edits.cdi_devices == ()
    # a retried Allocate gets the same cache file; another container another one
    assert manager.container_edits(TWO, pod(), container(priority="1")).env["CUDA_DEVICE_MEMORY_SHARED_CACHE"] == cache
    assert manager.container_edits(TWO, pod(), container("other")).env["CUDA_DEVICE_MEMORY_SHARED_CACHE"] != cache


def test_hami_core_optional_knobs(gpu_node):
    edits = gpu_node(core_utilization_policy="force", libcuda_log_level=0).container_edits(TWO[:1], pod(), container())
    assert (edits.env["GPU_CORE_UTILIZATION_POLICY"], edits.env["LIBCUDA_LOG_LEVEL"]) == ("force", "0")
    assert "CUDA_TASK_PRIORITY" not in edits.env


def test_cuda_disable_control_drops_only_the_preload_mount(gpu_node):
    edits = gpu_node().container_edits(TWO, pod(), container(env=[{"name": "CUDA_DISABLE_CONTROL", "value": "true"}]))
    assert "/etc/ld.so.preload" not in [m[0] for m in mounts(edits)]
    assert len(edits.mounts) == 3 and edits.env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"


@pytest.mark.parametrize("missing", ["libvgpu.so", "ld.so.preload"])
def test_hami_core_is_refused_naming_the_missing_host_file(gpu_node, host_root, missing):
    (host_root / "usr/local/vgpu" / missing).unlink()
    manager = gpu_node()
    with pytest.raises(BackendError, match=re.escape(f"/usr/local/vgpu/{missing} on the host, and it is missing")):
        manager.container_edits(TWO, pod(), container())
    # another mode is still served
    assert manager.container_edits(TWO, pod("none"), container()).env == {"NVIDIA_VISIBLE_DEVICES": "GPU-0,GPU-1"}


def test_cdi_strategy_names_devices_instead_of_the_env(gpu_node):
    edits = gpu_node(device_list_strategy="cdi").container_edits(TWO, pod(), container())
    assert edits.cdi_devices == ("nvidia.com/gpu=GPU-0", "nvidia.com/gpu=GPU-1")
    assert "NVIDIA_VISIBLE_DEVICES" not in edits.env and edits.env["CUDA_DEVICE_MEMORY_LIMIT_1"] == "5000m"


def test_mps_client_env_and_mounts(gpu_node):
    edits = gpu_node(mps_manage_daemon=False).container_edits(TWO, pod("mps"), container())
    assert dict(edits.env) == {
        "CUDA_MPS_PIPE_DIRECTORY": "/run/nvidia/mps/pipe",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=3000M,1=5000M",
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "30",
        "NVIDIA_VISIBLE_DEVICES": "GPU-0,GPU-1",
    }
    assert mounts(edits) == [("/run/nvidia/mps/pipe", "/run/nvidia/mps/pipe", False), ("/dev/shm", "/run/nvidia/mps/shm", False)]
    no_cores = gpu_node(mps_manage_daemon=False).container_edits([Grant("GPU-0", "NVIDIA", 1000, 0)], pod("mps"), container())
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in no_cores.env


def test_node_default_mode_applies_without_the_pod_annotation(gpu_node):
    edits = gpu_node(nodes={NODE: {"mode": "none"}}).container_edits(TWO, pod(), container())
    assert dict(edits.env) == {"NVIDIA_VISIBLE_DEVICES": "GPU-0,GPU-1"} and edits.mounts == ()


def test_mig_containers_get_distinct_instances_and_release_frees_them(gpu_node):
    manager = gpu_node()
    grant = [Grant("GPU-2", "NVIDIA", 9728, 0)]
    manager.prepare(grant, pod(uid="a"), container())
    first = manager.container_edits(grant, pod(uid="a"), container())  # mode from the device: no annotation needed
    assert dict(first.env) == {"NVIDIA_VISIBLE_DEVICES": "MIG-2-0"}
    assert manager.container_edits(grant, pod(uid="a"), container()).env == first.env  # idempotent
    second = manager.container_edits(grant, pod("mig", uid="b"), container())
    assert dict(second.env) == {"NVIDIA_VISIBLE_DEVICES": "MIG-2-1"}
    with pytest.raises(BackendError, match="every MIG instance of 9728 MiB on GPU GPU-2 is taken"):
        manager.container_edits(grant, pod(uid="c"), container())
    manager.release(grant, pod(uid="a"), container())
    assert manager.container_edits(grant, pod(uid="c"), container()).env["NVIDIA_VISIBLE_DEVICES"] == "MIG-2-0"
    assert json.loads((manager.node.state_dir / "mig.json").read_text()) == {"MIG-2-0": ["c", "main"], "MIG-2-1": ["b", "main"]}


def test_the_mig_ledger_is_the_node_s_and_survives_a_restart(gpu_node):
    """Kept in the node's state directory, not in the backend: a fresh backend (agent restart) knows
    who holds what; another node (the sandbox runs several in one process) has its own instances."""
    manager = gpu_node()
    grant = [Grant("GPU-2", "NVIDIA", 9728, 0)]
    manager.prepare(grant, pod(uid="a"), container())
    assert json.loads((manager.node.state_dir / "mig.json").read_text()) == {"MIG-2-0": ["a", "main"]}
    fresh = BackendManager(strict=True, allow=(), deny=())
    fresh.register(NvidiaBackend(INFO), distribution="in-process")
    fresh.configure("nvidia", manager.manager.config("nvidia"))
    restarted = attrs.evolve(manager, manager=fresh)
    assert restarted.container_edits(grant, pod(uid="b"), container()).env["NVIDIA_VISIBLE_DEVICES"] == "MIG-2-1"
    other = attrs.evolve(
        manager, node=attrs.evolve(manager.node, name="other-node", state_dir=manager.node.state_dir.parent / "other-node")
    )
    assert other.container_edits(grant, pod(uid="c"), container()).env["NVIDIA_VISIBLE_DEVICES"] == "MIG-2-0"


def test_a_corrupt_mig_ledger_is_an_error_naming_the_file(gpu_node):
    manager = gpu_node()
    manager.node.state_dir.mkdir(parents=True)
    (manager.node.state_dir / "mig.json").write_text('{"MIG-2-0": "uid"}')
    with pytest.raises(BackendError, match=r"MIG ledger '.*mig.json' cannot be read .*expected"):
        manager.prepare([Grant("GPU-2", "NVIDIA", 9728, 0)], pod(), container())


def test_mig_cdi_names_and_refusals(gpu_node):
    manager = gpu_node(device_list_strategy="cdi")
    assert manager.container_edits([Grant("GPU-2", "NVIDIA", 9728, 0)], pod(), container()).cdi_devices == ("nvidia.com/mig=MIG-2-0",)
    with pytest.raises(BackendError, match="GPU-2 has no MIG instance of 20000 MiB"):
        manager.container_edits([Grant("GPU-2", "NVIDIA", 20000, 0)], pod(uid="x"), container())
    with pytest.raises(BackendError, match="GPU GPU-0 is not a MIG-enabled GPU"):
        manager.container_edits(TWO, pod("mig"), container())


def test_mixed_modes_need_the_pod_to_choose(gpu_node):
    with pytest.raises(BackendError, match=r"different isolation modes \['hami-core', 'mig'\]"):
        gpu_node().container_edits([TWO[0], Grant("GPU-2", "NVIDIA", 9728, 0)], pod(), container())


def test_prepare_creates_and_release_removes_the_cache_dir(gpu_node, host_root):
    manager = gpu_node()
    cache = host_root / "usr/local/vgpu/containers/uid-p_main"
    manager.prepare(TWO, pod(), container())
    manager.prepare(TWO, pod(), container())  # idempotent
    assert cache.is_dir()
    manager.release(TWO, pod(), container())
    manager.release(TWO, pod(), container())
    assert not cache.exists()


def test_simulated_nodes_build_the_edits_without_host_files(gpu_node, host_root):
    """A simulated node (the sandbox: ``NodeContext.simulated``) has no HAMi-core on the host and must
    not write there."""
    for name in ("libvgpu.so", "ld.so.preload"):
        (host_root / "usr/local/vgpu" / name).unlink()
    manager = gpu_node(simulated=True)
    manager.prepare(TWO, pod(), container())
    edits = manager.container_edits(TWO, pod(), container())
    assert edits.env["CUDA_DEVICE_MEMORY_LIMIT_1"] == "5000m" and len(edits.mounts) == 4
    assert not (host_root / "usr/local/vgpu/containers").exists()
    manager.release(TWO, pod(), container())
    with pytest.raises(BackendError, match="missing"):  # the same node, real: the host is looked at
        gpu_node().container_edits(TWO, pod(), container())


def test_a_failed_mig_prepare_holds_nothing(gpu_node):
    manager = gpu_node()
    with pytest.raises(BackendError, match="GPU-2 has no MIG instance of 40000 MiB"):
        manager.prepare([Grant("GPU-2", "NVIDIA", 9728, 0), Grant("GPU-2", "NVIDIA", 40000, 0)], pod("mig"), container())
    assert json.loads((manager.node.state_dir / "mig.json").read_text()) == {}
