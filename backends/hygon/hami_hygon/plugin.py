"""Hygon DCUs: identity, HAMi's resource and annotation names (legacy CSV registration), standard hooks.

hy-smi discovery and virtual DCU (vdev config, CU masks) arrive with the Hygon issue; until then
devices come from the node inventory (the simulated source).
"""

from __future__ import annotations

from hami.model import AnnotationKeys, BackendInfo, DeviceKind, ResourceNames
from hami.standard import StandardBackend

KIND = DeviceKind(
    vendor="DCU",
    resources=ResourceNames(count="hygon.com/dcunum", memory="hygon.com/dcumem", cores="hygon.com/dcucores"),
    annotations=AnnotationKeys.hami("hami.io/node-dcu-register", "hami.io/node-handshake-dcu", "hami.io/dcu"),
    node_encoding="csv",
)

INFO = BackendInfo(
    name="hygon",
    kinds=[KIND],
    description="Hygon DCUs shared through virtual DCUs (compute-unit masks, memory limits)",
    default_config={"split_count": 4, "memory_scaling": 1, "core_scaling": 1, "default_memory": 0, "default_cores": 0},
    host_paths=("/dev", "/etc/vdev", "/opt/hygondriver", "/opt/hyhal"),
)

plugin = StandardBackend(INFO)
