"""NVIDIA GPUs: identity, HAMi's resource and annotation names, and the standard hooks.

NVML discovery, health, MIG and the isolation modes (HAMi-core, MPS) arrive with the NVIDIA issue;
until then devices come from the node inventory (the simulated source).
"""

from __future__ import annotations

from hami.model import AnnotationKeys, BackendInfo, DeviceKind, ResourceNames
from hami.standard import StandardBackend

HOOK_PATH = "/usr/local/vgpu"

KIND = DeviceKind(
    vendor="NVIDIA",
    resources=ResourceNames(
        count="nvidia.com/gpu",
        memory="nvidia.com/gpumem",
        memory_percentage="nvidia.com/gpumem-percentage",
        cores="nvidia.com/gpucores",
        extra=("nvidia.com/priority",),
    ),
    annotations=AnnotationKeys.hami("hami.io/node-nvidia-register", "hami.io/node-handshake", "hami.io/vgpu"),
)

INFO = BackendInfo(
    name="nvidia",
    kinds=[KIND],
    description="NVIDIA GPUs shared by memory and SM limits (HAMi-core, MPS, MIG)",
    default_config={"split_count": 10, "memory_scaling": 1, "core_scaling": 1, "default_memory": 0, "default_cores": 0},
    host_paths=(HOOK_PATH, "/tmp/vgpulock", "/dev", "/var/run/nvidia-container-devices"),
)

plugin = StandardBackend(INFO)
