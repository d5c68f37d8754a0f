"""What an Ascend container gets: environment for the Ascend Docker Runtime, device nodes, and for the
soft split HAMi's vNPU core library.

Four shapes (the MindCluster virtual-instance guide defines the runtime variables):
- whole chips: ``ASCEND_VISIBLE_DEVICES=<phy ids>`` and ``/dev/davinci<N>``;
- hard split, vNPU created by ``hami_prepare`` (``vnpu_create: npu-smi``, the default):
  ``ASCEND_VISIBLE_DEVICES=<vnpu id>``, ``ASCEND_RUNTIME_OPTIONS=VIRTUAL``, host ``/dev/vdavinci<id>``
  → container ``/dev/davinci<id>``;
- hard split left to the runtime (``vnpu_create: runtime``, HAMi's device plugin's way):
  ``ASCEND_VISIBLE_DEVICES=<phy id>``, ``ASCEND_VNPU_SPECS=<template>``; the runtime creates and
  destroys the vNPU, so no device nodes are handed out here;
- soft split (``huawei.com/vnpu-mode: hami-core``): physical chips plus ``NPU_MEM_QUOTA``,
  ``NPU_PRIORITY`` and the mounts HAMi's ascend device plugin makes for ``/usr/local/hami-vnpu-core``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hami.sdk import BackendError, ContainerEdits, DeviceNode, Grant, Mount
from hami_ascend.vnpu import VNpu

MANAGEMENT_NODES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
VNPU_CORE_DIR = "/usr/local/hami-vnpu-core"
SHARED_REGION_DIR = "/usr/local/hami-shared-region"
DRIVER_MOUNTS = (
    "/usr/local/bin/npu-smi",
    "/etc/ascend_install.info",
    "/usr/local/Ascend/driver/lib64/driver",
    "/usr/local/Ascend/driver/version.info",
)
HOST_PATHS = (
    "/dev",
    "/usr/local/Ascend/driver",
    "/usr/local/dcmi",
    "/usr/local/bin/npu-smi",
    "/etc/ascend_install.info",
    VNPU_CORE_DIR,
    SHARED_REGION_DIR,
)
"""Every host path an Ascend container edit may expose (``BackendInfo.host_paths``)."""


def _management() -> list[DeviceNode]:
    return [DeviceNode(p, p) for p in MANAGEMENT_NODES]


def host(config: Mapping[str, Any], path: str) -> Path:
    """``path`` on the host as this process sees it (``host_root`` lets tests and containers re-root it)."""
    return Path(str(config.get("host_root") or "/")) / path.lstrip("/")


def require_vnpu_core(config: Mapping[str, Any], simulated: bool) -> None:
    """Refuse the soft split when HAMi's vNPU core library is not installed on the host (a simulated
    node has no host to look at)."""
    for path in () if simulated else (VNPU_CORE_DIR, f"{VNPU_CORE_DIR}/ld.so.preload"):
        if not host(config, path).exists():
            raise BackendError(
                f"huawei.com/vnpu-mode=hami-core needs HAMi's vNPU core library on the host, but {path} is missing "
                f"(looked at {host(config, path)}); install hami-vnpu-core on this node or drop the annotation"
            )


def shmem_dir(pod: Mapping[str, Any], container: Mapping[str, Any]) -> str:
    return f"{VNPU_CORE_DIR}/containers/{(pod.get('metadata') or {}).get('uid', '')}_{container.get('name')}"


def whole(phy_ids: Sequence[int]) -> ContainerEdits:
    return ContainerEdits(
        env={"ASCEND_VISIBLE_DEVICES": ",".join(map(str, phy_ids))},
        devices=[DeviceNode(f"/dev/davinci{p}", f"/dev/davinci{p}") for p in phy_ids] + _management(),
    )


def created_vnpus(vnpus: Sequence[VNpu]) -> ContainerEdits:
    return ContainerEdits(
        env={"ASCEND_VISIBLE_DEVICES": ",".join(str(v.vnpu_id) for v in vnpus), "ASCEND_RUNTIME_OPTIONS": "VIRTUAL"},
        devices=[DeviceNode(f"/dev/davinci{v.vnpu_id}", f"/dev/vdavinci{v.vnpu_id}") for v in vnpus] + _management(),
    )


def runtime_vnpu(phy_id: int, template: str) -> ContainerEdits:
    return ContainerEdits(env={"ASCEND_VISIBLE_DEVICES": str(phy_id), "ASCEND_VNPU_SPECS": template})


def soft(
    grants: Sequence[Grant],
    phy_ids: Sequence[int],
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    config: Mapping[str, Any],
    simulated: bool,
) -> ContainerEdits:
    require_vnpu_core(config, simulated)
    mounts = [Mount(p, p, read_only=True) for p in DRIVER_MOUNTS] + [
        Mount("/hami-vnpu-core", VNPU_CORE_DIR, read_only=True),
        Mount("/etc/ld.so.preload", f"{VNPU_CORE_DIR}/ld.so.preload", read_only=True),
        Mount("/hami-shared-region", SHARED_REGION_DIR),
        Mount("/hami-vnpu-shmem", shmem_dir(pod, container)),
    ]
    env = {
        "ASCEND_VISIBLE_DEVICES": ",".join(map(str, phy_ids)),
        "NPU_MEM_QUOTA": str(grants[0].memory),
        "NPU_PRIORITY": str(grants[0].cores),
        "NPU_GLOBAL_SHM_PATH": f"/hami-shared-region/{phy_ids[0]}_global_registry",
        "NPU_LOCAL_SHM_PATH": "/hami-vnpu-shmem/vnpu_local_shmem",
    }
    devices = [DeviceNode(f"/dev/davinci{p}", f"/dev/davinci{p}") for p in phy_ids] + _management()
    return ContainerEdits(env=env, mounts=mounts, devices=devices)
