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
from hami_nvidia.selectors import parse_bool

PRIORITY_RESOURCE = "nvidia.com/priority"
"""The declared name; ``resource_names.priority`` in the config renames it (plugin passes the name in use)."""
VGPU_LOCK = "/tmp/vgpulock"
LD_SO_PRELOAD = "/etc/ld.so.preload"
LICENSE = "/tmp/license"
VALIDATOR = "/usr/bin/vgpuvalidator"


def visibility(ids: Sequence[str], strategy: str, cdi_class: str = "gpu") -> ContainerEdits:
    """The device list for NVIDIA's runtime: ``NVIDIA_VISIBLE_DEVICES`` or CDI names."""
    if strategy == "cdi":
        return ContainerEdits(cdi_devices=[f"nvidia.com/{cdi_class}={i}" for i in ids])
    return ContainerEdits(env={"NVIDIA_VISIBLE_DEVICES": ",".join(ids)})


def _owner(pod: Mapping[str, Any], container: Mapping[str, Any]) -> tuple[str, str]:
    uid = (pod.get("metadata") or {}).get("uid")
    name = container.get("name")
    if not uid or not name:
        raise BackendError(
            f"pod {(pod.get('metadata') or {}).get('name')!r} container {name!r}: a pod uid and a container name are needed for the per-container cache"
        )
    return str(uid), str(name)


DISABLE_CONTROL = "CUDA_DISABLE_CONTROL"


def disable_control_values(container: Mapping[str, Any]) -> list[str]:
    """The values of ``CUDA_DISABLE_CONTROL`` in the container's own env, in order."""
    return [str(v.get("value", "")) for v in container.get("env") or () if isinstance(v, Mapping) and v.get("name") == DISABLE_CONTROL]


def _disabled_control(container: Mapping[str, Any]) -> bool:
    """HAMi-core's escape hatch: ``CUDA_DISABLE_CONTROL`` set to a true value in Go's ParseBool spelling
    (``1``, ``t``, ``TRUE``, ``true``, ``True`` …); any entry that says so wins, a false or unparseable
    one is skipped, as upstream server.go Allocate does (the webhook warns about an unparseable one)."""
    return any(parse_bool(v) for v in disable_control_values(container))


def priority(container: Mapping[str, Any], resource: str = PRIORITY_RESOURCE) -> int | None:
    value = container_resources(container).get(resource)
    if value is None:
        return None
    try:
        return parse_count(value, resource)
    except QuantityError as exc:
        raise BackendError(str(exc)) from None


def hook_dir(config: Mapping[str, Any]) -> str:
    return f"{str(config.get('hook_path') or '/usr/local').rstrip('/')}/vgpu"


def host_path(config: Mapping[str, Any], path: str) -> Path:
    """Where the agent sees host ``path`` (``host_root`` is where the host's / is mounted)."""
    return Path(str(config.get("host_root") or "/"), path.lstrip("/"))


def cache_dir(config: Mapping[str, Any], owner: tuple[str, str]) -> str:
    return f"{hook_dir(config)}/containers/{owner[0]}_{owner[1]}"


def library(config: Mapping[str, Any]) -> str:
    """The host's ``libvgpu.so``: ``libvgpu.so.<libvgpu_version>`` when configured and present (what
    HAMi's image installs, upstream pkg/device-plugin/nvidiadevice/nvinternal/plugin/util.go GetLibPath),
    else ``libvgpu.so``."""
    vgpu = hook_dir(config)
    version = str(config.get("libvgpu_version") or "").strip()
    if version and "/" not in version and host_path(config, f"{vgpu}/libvgpu.so.{version}").is_file():
        return f"{vgpu}/libvgpu.so.{version}"
    return f"{vgpu}/libvgpu.so"


def oversubscribed(config: Mapping[str, Any]) -> bool:
    """Memory scaling above 1 hands out more memory than the GPU has: HAMi-core must be told."""
    scaling = config.get("memory_scaling", 1)
    return not isinstance(scaling, bool) and isinstance(scaling, (int, float)) and scaling > 1


def hami_core(
    grants: Sequence[Grant],
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    config: Mapping[str, Any],
    strategy: str,
    check_host: bool,
    priority_resource: str = PRIORITY_RESOURCE,
) -> ContainerEdits:
    """HAMi-core's env and mounts (upstream pkg/device-plugin/nvidiadevice/nvinternal/plugin/server.go
    Allocate); refuses when ``libvgpu.so`` (or ``ld.so.preload``) is not on the host (``check_host``: a
    simulated node has none) and when a grant has no memory (HAMi-core reads a 0 limit as none)."""
    vgpu = hook_dir(config)
    owner = _owner(pod, container)
    preload = not _disabled_control(container)
    lib = library(config)
    needed = [lib] + ([f"{vgpu}/ld.so.preload"] if preload else [])
    for path in needed if check_host else ():
        if not host_path(config, path).is_file():
            raise BackendError(
                f"isolation mode hami-core needs HAMi-core's {path} on the host, and it is missing; install HAMi-core there or choose another nvidia.com/vgpu-mode"
            )
    unlimited = [g.id for g in grants if g.memory <= 0]
    if unlimited:
        raise BackendError(
            f"the grant on {', '.join(unlimited)} has no memory amount; HAMi-core reads CUDA_DEVICE_MEMORY_LIMIT=0m as no limit, "
            "so the container is refused rather than run unlimited (reschedule the pod)"
        )
    env = {f"CUDA_DEVICE_MEMORY_LIMIT_{i}": f"{g.memory}m" for i, g in enumerate(grants)}
    env["CUDA_DEVICE_SM_LIMIT"] = str(grants[0].cores if grants else 0)
    # Deterministic per container, so a retried Allocate gets the same cache file.
    env["CUDA_DEVICE_MEMORY_SHARED_CACHE"] = f"{vgpu}/{uuidlib.uuid5(uuidlib.NAMESPACE_URL, f'hami:{owner[0]}/{owner[1]}')}.cache"
    if oversubscribed(config):
        env["CUDA_OVERSUBSCRIBE"] = "true"
    task_priority = priority(container, priority_resource)
    if task_priority is not None:
        env["CUDA_TASK_PRIORITY"] = str(task_priority)
    if config.get("core_utilization_policy"):
        env["GPU_CORE_UTILIZATION_POLICY"] = str(config["core_utilization_policy"])
    if config.get("libcuda_log_level") not in (None, ""):
        env["LIBCUDA_LOG_LEVEL"] = str(config["libcuda_log_level"])
    mounts = [
        Mount(f"{vgpu}/libvgpu.so", lib, read_only=True),
        Mount(vgpu, cache_dir(config, owner)),
        Mount(VGPU_LOCK, VGPU_LOCK),
    ]
    if preload:
        mounts.append(Mount(LD_SO_PRELOAD, f"{vgpu}/ld.so.preload", read_only=True))
    if host_path(config, f"{vgpu}/license").is_file():  # HAMi-core builds that check a license
        mounts += [Mount(LICENSE, f"{vgpu}/license", read_only=True), Mount(VALIDATOR, f"{vgpu}/vgpuvalidator", read_only=True)]
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
