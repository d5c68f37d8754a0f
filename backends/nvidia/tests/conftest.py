"""Fixtures of the NVIDIA backend's tests: a fake NVML built from C, fake HAMi-core files on a fake
host root, a backend registered in a fresh manager, and a node whose runtime calls get what the node
agent hands over (its NodeContext and the granted devices)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from hami.sdk import Grant, GrantedDevice, NodeContext, PhysicalDevice
from hami_nvidia.plugin import INFO, NvidiaBackend

HERE = Path(__file__).parent
FAKE_SOURCE = HERE / "fakenvml" / "fakenvml.c"
DRIVER = HERE / "fakenvml" / "driver.py"


@pytest.fixture(scope="session")
def fake_nvml(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Directories holding ``libnvidia-ml.so.1``: ``full`` (every function) and ``old`` (an old
    driver without nvmlDeviceGetNumaNodeId / nvmlDeviceGetCudaComputeCapability), plus ``none``."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc/gcc) on PATH to build the fake libnvidia-ml.so.1")
    root = tmp_path_factory.mktemp("fakenvml")
    dirs = {}
    for variant, flags in (("full", []), ("old", ["-DFAKE_OLD_DRIVER"])):
        out = root / variant
        out.mkdir()
        subprocess.run(
            [compiler, "-shared", "-fPIC", "-O1", *flags, "-o", str(out / "libnvidia-ml.so.1"), str(FAKE_SOURCE)],
            check=True,
            capture_output=True,
        )
        dirs[variant] = out
    (root / "none").mkdir()
    dirs["none"] = root / "none"
    return dirs


NvmlRun = Callable[..., tuple[dict[str, Any], str]]


@pytest.fixture
def run_nvml(fake_nvml: dict[str, Path], tmp_path: Path) -> NvmlRun:
    """Run the backend in a subprocess against the fake NVML; returns (JSON it printed, its log)."""

    def run(
        scenario: dict[str, Any], *args: str, action: str = "discover", config: dict[str, Any] | None = None, variant: str = "full"
    ) -> tuple[dict[str, Any], str]:
        spec = tmp_path / "nvml.json"
        spec.write_text(json.dumps(scenario))
        env = {k: v for k, v in os.environ.items() if k not in ("HAMI_INVENTORY", "LD_LIBRARY_PATH", "LD_PRELOAD")}
        env.update(LD_LIBRARY_PATH=str(fake_nvml[variant]), FAKE_NVML_CONFIG=str(spec))
        done = subprocess.run(
            [sys.executable, str(DRIVER), action, json.dumps(config or {}), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout), done.stderr

    return run


@pytest.fixture
def host_root(tmp_path: Path) -> Path:
    """A fake host filesystem with HAMi-core installed under the default hook path."""
    root = tmp_path / "host"
    vgpu = root / "usr/local/vgpu"
    vgpu.mkdir(parents=True)
    (vgpu / "libvgpu.so").write_bytes(b"\x7fELF fake")
    (vgpu / "ld.so.preload").write_text("/usr/local/vgpu/libvgpu.so\n")
    return root


@pytest.fixture
def backend() -> NvidiaBackend:
    """A fresh backend instance (its XID watcher and MPS daemon handle are per instance)."""
    fresh = NvidiaBackend(INFO)
    yield fresh
    fresh.close()


@pytest.fixture
def nvidia(hami_manager, register_backend, backend):
    """A manager with a fresh NVIDIA backend; call it with the config to use (again to reconfigure)."""

    def configure(**config: Any):
        if hami_manager.backends.get("nvidia") is None:
            register_backend(backend)
        hami_manager.configure("nvidia", config)
        return hami_manager

    return configure


@attrs.frozen
class GpuNode:
    """A node as the agent sees it: the runtime calls get its context and the granted devices with
    the physical GPU (read from the inventory) and its split on this node."""

    manager: Any
    node: NodeContext
    physical: dict[str, PhysicalDevice]

    def devices(self, grants: list[Grant]) -> list[GrantedDevice]:
        return [GrantedDevice(g, self.physical[g.id], self.manager.split(self.physical[g.id], self.node)) for g in grants]

    def prepare(self, grants: list[Grant], pod: Any, container: Any) -> None:
        self.manager.prepare(grants, pod, container, self.node, self.devices(grants))

    def container_edits(self, grants: list[Grant], pod: Any, container: Any) -> Any:
        return self.manager.container_edits(grants, pod, container, self.node, self.devices(grants))

    def release(self, grants: list[Grant], pod: Any, container: Any) -> None:
        self.manager.release(grants, pod, container, self.node, self.devices(grants))


@pytest.fixture
def on_node(tmp_path: Path) -> Callable[..., GpuNode]:
    """``on_node(manager, name, simulated=False)``: the inventory's GPUs of node ``name`` on a node that
    is simulated or real (a real one looks at the host root and runs the daemons), state in tmp_path."""

    def build(manager: Any, name: str, *, simulated: bool = False) -> GpuNode:
        node = NodeContext(name, simulated=simulated, config=manager.config("nvidia"), state_dir=tmp_path / "state" / name)
        found = manager.discover("nvidia", attrs.evolve(node, simulated=True))  # the inventory stands in for NVML
        return GpuNode(manager, node, {d.id: d for d in found})

    return build
