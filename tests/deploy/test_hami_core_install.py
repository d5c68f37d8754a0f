"""Issue 28: the chart installs HAMi-core where the agent looks for it.

The init container's script is taken from the rendered chart and run for real (sh, coreutils) against
a directory laid out like HAMi's image (upstream docker/Dockerfile: ``/k8s-vgpu/lib/nvidia/
libvgpu.so.<VERSION>``) and a host directory; the agent's check (``hami_enforcement``, with the settings
the chart renders, read by the agent's own reader) then finds HAMi-core ready with its version."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hami.sdk import NodeContext, PhysicalDevice
from hami.settings import load_settings
from hami_nvidia import enforcement

GPUS = [PhysicalDevice(id="GPU-0", vendor="NVIDIA", type="A100", memory=40960)]


def _pod(docs: Any) -> dict[str, Any]:
    return docs.one("DaemonSet")["spec"]["template"]["spec"]


def _init(docs: Any) -> dict[str, Any] | None:
    return next((c for c in _pod(docs).get("initContainers") or [] if c["name"] == "hami-core"), None)


@pytest.fixture(scope="module")
def libvgpu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("a C compiler (cc/gcc) is needed to build the stand-in libvgpu.so")
    root = tmp_path_factory.mktemp("image")
    (root / "v.c").write_text("int cuInit(unsigned int flags) { return (int)flags; }\n")
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(root / "libvgpu.so"), str(root / "v.c")], check=True, capture_output=True)
    return root / "libvgpu.so"


def test_the_init_container_is_pinned_mounts_the_hook_dir_and_can_be_turned_off(render) -> None:
    docs = render("default")
    init = _init(docs)
    assert init is not None and init["image"] == "docker.io/projecthami/hami:v2.10.0"
    vgpu = next(m for m in init["volumeMounts"] if m["mountPath"] == "/usr/local/vgpu")
    host = {v["name"]: v["hostPath"]["path"] for v in _pod(docs)["volumes"] if "hostPath" in v}
    assert host[vgpu["name"]] == "/usr/local/vgpu"
    agent = next(c for c in _pod(docs)["containers"] if c["name"] == "agent")
    assert "/usr/local/vgpu" in {m["mountPath"] for m in agent["volumeMounts"]}  # the agent checks what was installed
    nvidia = yaml.safe_load(docs.one("ConfigMap", "hami-device-config")["data"]["config.yaml"])["backends"]["nvidia"]
    assert nvidia["libvgpu_version"] == "v2.10.0"  # containers get the versioned file, as upstream GetLibPath
    own = render("default", "--set", "agent.hamiCore.image.repository=registry.local/hami-core", "--set", "agent.hamiCore.image.tag=v2.9.1")
    assert _init(own)["image"] == "registry.local/hami-core:v2.9.1"  # type: ignore[index]
    assert 'lib="libvgpu.so.v2.9.1"' in _init(own)["args"][0]  # type: ignore[index]
    off = render("default", "--set", "agent.hamiCore.enabled=false")
    assert _init(off) is None
    assert "libvgpu_version" not in yaml.safe_load(off.one("ConfigMap", "hami-device-config")["data"]["config.yaml"])["backends"]["nvidia"]
    assert _init(render("ha-ascend")) is None  # no NVIDIA backend: nothing to install


def test_a_bad_version_suffix_is_refused(helm) -> None:
    from hami_deploy_tools import CHART, NAMESPACE  # type: ignore[import-not-found]

    done = subprocess.run(
        [str(helm), "template", "hami", str(CHART), "--namespace", NAMESPACE, "--set", "agent.hamiCore.libvgpuVersion=../x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "libvgpuVersion" in done.stderr


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-ec", script], capture_output=True, text=True, timeout=60, check=False)


def test_the_rendered_script_installs_what_the_agent_finds_ready(render, libvgpu: Path, tmp_path: Path) -> None:
    image = tmp_path / "image" / "k8s-vgpu" / "lib" / "nvidia"
    image.mkdir(parents=True)
    shutil.copy(libvgpu, image / "libvgpu.so.v2.10.0")
    (image / "ld.so.preload").write_text("/usr/local/vgpu/libvgpu.so\n")  # the image's own copy is never installed
    hook = tmp_path / "host" / "usr" / "local"
    docs = render("default", "--set", f"agent.hamiCore.sourceDir={image}", "--set", f"agent.hookPath={hook}")
    script = _init(docs)["args"][0]  # type: ignore[index]
    first = _run(script)
    assert first.returncode == 0, first.stderr
    vgpu = hook / "vgpu"
    assert (vgpu / "libvgpu.so").is_symlink() and (vgpu / "libvgpu.so").resolve() == (vgpu / "libvgpu.so.v2.10.0").resolve()
    assert (vgpu / "ld.so.preload").read_text() == f"{vgpu}/libvgpu.so\n"
    assert f"installed {vgpu}/libvgpu.so.v2.10.0" in first.stdout
    again = _run(script)  # an agent pod restart: nothing copied again, the same layout
    assert again.returncode == 0 and "installed" not in again.stdout
    config_file = tmp_path / "agent.yaml"
    config_file.write_text(docs.one("ConfigMap", "hami-device-config")["data"]["config.yaml"])
    nvidia = load_settings(str(config_file))["backends"]["nvidia"]
    (report,) = enforcement.check(GPUS, nvidia, NodeContext("gpu-1"))
    assert report.ready, report.reason
    assert report.mechanism == f"HAMi-core {vgpu}/libvgpu.so.v2.10.0 (v2.10.0)"
    (vgpu / "libvgpu.so.v2.10.0").unlink()  # someone removed it: the agent says so, and what to do
    (report,) = enforcement.check(GPUS, nvidia, NodeContext("gpu-1"))
    assert not report.ready and "libvgpu.so is missing" in report.reason and "agent.hamiCore" in report.reason


def test_an_image_without_the_library_fails_the_init_container_naming_the_values(render, tmp_path: Path) -> None:
    empty = tmp_path / "image"
    empty.mkdir()
    docs = render("default", "--set", f"agent.hamiCore.sourceDir={empty}", "--set", f"agent.hookPath={tmp_path / 'host'}")
    done = _run(_init(docs)["args"][0])  # type: ignore[index]
    assert done.returncode == 1 and "set agent.hamiCore.libvgpuVersion or sourceDir" in done.stderr
    assert not (tmp_path / "host" / "vgpu").exists()
