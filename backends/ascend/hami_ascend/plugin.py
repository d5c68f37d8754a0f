"""Huawei Ascend NPUs: one device kind per chip, with HAMi's per-chip resource and annotation names.

npu-smi discovery, vNPU templates (hard split) and the soft split arrive with the Ascend issue;
until then devices come from the node inventory (the simulated source) and split evenly.
"""

from __future__ import annotations

from hami.model import AnnotationKeys, BackendInfo, DeviceKind, ResourceNames
from hami.standard import StandardBackend

CHIPS = ("Ascend910A", "Ascend910B2", "Ascend910B3", "Ascend910B4", "Ascend910B4-1", "Ascend910C", "Ascend310P")


def chip_kind(chip: str) -> DeviceKind:
    """``huawei.com/<Chip>``, ``-memory``, ``-core``; ``hami.io/node-register-<Chip>``; ``hami.io/<Chip>-devices-…``."""
    return DeviceKind(
        vendor=chip,
        resources=ResourceNames(count=f"huawei.com/{chip}", memory=f"huawei.com/{chip}-memory", cores=f"huawei.com/{chip}-core"),
        annotations=AnnotationKeys.hami(f"hami.io/node-register-{chip}", f"hami.io/node-handshake-{chip}", f"hami.io/{chip}"),
    )


INFO = BackendInfo(
    name="ascend",
    kinds=[chip_kind(chip) for chip in CHIPS],
    description="Huawei Ascend NPUs split into vNPU templates (hard) or by HAMi's vNPU library (soft)",
    default_config={"split_count": 7, "memory_scaling": 1, "core_scaling": 1, "default_memory": 0, "default_cores": 0},
    host_paths=("/dev", "/usr/local/Ascend/driver", "/usr/local/dcmi", "/usr/local/bin/npu-smi"),
)

plugin = StandardBackend(INFO)
