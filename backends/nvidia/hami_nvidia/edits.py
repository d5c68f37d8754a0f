"""What a container gets for its GPUs, one builder per isolation mode.

``hami-core`` is a wire contract (hami-compat.md): HAMi-core's ``libvgpu.so`` reads exactly these
variables and paths, so they must not drift. The other modes follow NVIDIA's own tooling (MPS
client variables, MIG instance UUIDs, CDI names).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hami.sdk import (
    BackendError,
    ContainerEdits,
    Grant,
    Mount,
    QuantityError,
    container_resources,
    parse_count,
)

from hami_nvidia.mps import MpsPaths

PRIORITY_RESOURCE = "nvidia.com/priority"
VGPU_LOCK = "/tmp/vgpulock"
LD_SO_PRELOAD = "/etc/ld.so.preload"


def visibility(ids: Sequence[str], strategy: str, cdi_class: str = "gpu") -> ContainerEdits:
    """The device list for NVIDIA's runtime: ``NVIDIA_VISIBLE_DEVICES`` or CDI names."""
    if strategy == "cdi":
        return ContainerEdits(cdi_devices=[f"nvidia.com/{cdi_class}={i}" for i in ids])
    return ContainerEdits(env={"NVIDIA_VISIBLE_DEVICES": ",".join(ids)})


def _owner(pod: Mapping[str, Any], container: Mapping[str, Any]) -> tuple[str, str]:
    uid = (pod.get("metadata") or {}).get("uid")
    name = container.get("name")
    if not uid or not name:
        raise BackendError(f"pod {(pod.get('metadata') or {}).get('name')!r} container {name!r}: a pod uid and a container name are needed for the per-container cache")
    return str(uid), str(name)


def _disabled_control(container: Mapping[str, Any]) -> bool:
    """HAMi-core's escape hatch: ``CUDA_DISABLE_CONTROL=true`` in the container's own env."""
    for var in container.get("env") or ():
        if isinstance(var, Mapping) and var.get("name") == "CUDA_DISABLE_CONTROL":
            return str(var.get("value", "")).strip().lower() == "true"
    return False


def priority(container: Mapping[str, Any]) -> int | None:
    value = container_resources(container).get(PRIORITY_RESOURCE)
    if value is None:
        return None
    try:
        return parse_count(value, PRIORITY_RESOURCE)
    except QuantityError as exc:
        raise BackendError(str(exc)) from None


def hook_dir(config: Mapping[str, Any]) -> str:
    return f"{str(config.get('hook_path') or '/usr/local').rstrip('/')}/vgpu"


def host_path(config: Mapping[str, Any], path: str) -> Path:
    """Where the agent sees host ``path`` (``host_root`` is where the host's / is mounted)."""
    return Path(str(config.get("host_root") or "/"), path.lstrip("/"))


def cache_dir(config: Mapping[str, Any], owner: tuple[str, str]) -> str:
    return f"{hook_dir(config)}/containers/{owner[0]}_{owner[1]}"


def hami_core(grants: Sequence[Grant], pod: Mapping[str, Any], container: Mapping[str, Any], config: Mapping[str, Any], strategy: str, check_host: bool) -> ContainerEdits:
    """HAMi-core's env and mounts; refuses when ``libvgpu.so`` (or ``ld.so.preload``) is not on the
    host (``check_host``: a simulated node has none)."""
    vgpu = hook_dir(config)
    owner = _owner(pod, container)
    preload = not _disabled_control(container)
    needed = [f"{vgpu}/libvgpu.so"] + ([f"{vgpu}/ld.so.preload"] if preload else [])
    for path in needed if check_host else ():
        if not host_path(config, path).is_file():
            raise BackendError(f"isolation mode hami-core needs HAMi-core's {path} on the host, and it is missing; install HAMi-core there or choose another nvidia.com/vgpu-mode")
    env = {f"CUDA_DEVICE_MEMORY_LIMIT_{i}": f"{g.memory}m" for i, g in enumerate(grants)}
    env["CUDA_DEVICE_SM_LIMIT"] = str(grants[0].cores if grants else 0)
    # Deterministic per container, so a retried Allocate gets the same cache file.
    env["CUDA_DEVICE_MEMORY_SHARED_CACHE"] = f"{vgpu}/{uuidlib.uuid5(uuidlib.NAMESPACE_URL, f'hami:{owner[0]}/{owner[1]}')}.cache"
    task_priority = priority(container)
    if task_priority is not None:
        env["CUDA_TASK_PRIORITY"] = str(task_priority)
    if config.get("core_utilization_policy"):
        env["GPU_CORE_UTILIZATION_POLICY"] = str(config["core_utilization_policy"])
    if config.get("libcuda_log_level") not in (None, ""):
        env["LIBCUDA_LOG_LEVEL"] = str(config["libcuda_log_level"])
    mounts = [
        Mount(f"{vgpu}/libvgpu.so", f"{vgpu}/libvgpu.so", read_only=True),
        Mount(vgpu, cache_dir(config, owner)),
        Mount(VGPU_LOCK, VGPU_LOCK),
    ]
    if preload:
        mounts.append(Mount(LD_SO_PRELOAD, f"{vgpu}/ld.so.preload", read_only=True))
    return ContainerEdits(env=env, mounts=mounts).merge(visibility([g.id for g in grants], strategy))


def mps(grants: Sequence[Grant], config: Mapping[str, Any], strategy: str) -> ContainerEdits:
    """An MPS client: the daemon's pipe directory and shared memory, and per-client limits."""
    paths = MpsPaths(str(config.get("mps_root") or MpsPaths().root))
    env = {
        "CUDA_MPS_PIPE_DIRECTORY": paths.pipe,
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": ",".join(f"{i}={g.memory}M" for i, g in enumerate(grants)),
    }
    cores = grants[0].cores if grants else 0
    if cores:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(cores)
    mounts = [Mount(paths.pipe, paths.pipe), Mount("/dev/shm", paths.shm)]
    return ContainerEdits(env=env, mounts=mounts).merge(visibility([g.id for g in grants], strategy))


def mig(instance_ids: Sequence[str], strategy: str) -> ContainerEdits:
    """MIG instances by UUID (``NVIDIA_VISIBLE_DEVICES=MIG-…``) or CDI ``nvidia.com/mig=MIG-…``."""
    return visibility(instance_ids, strategy, cdi_class="mig")


def none(grants: Sequence[Grant], strategy: str) -> ContainerEdits:
    """Time-slicing: the GPUs are visible, nothing is enforced."""
    return visibility([g.id for g in grants], strategy)
