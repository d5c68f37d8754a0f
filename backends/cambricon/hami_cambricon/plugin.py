"""Cambricon MLUs: identity, HAMi's resource and annotation names, standard hooks.

cnmon discovery, dynamic sMLU profiles and MLULink topology arrive with the Cambricon issue; until
then devices come from the node inventory (the simulated source). ``cambricon.com/mlunum`` (older
docs) is accepted as an alias of the count resource.
"""

from __future__ import annotations

from hami.model import AnnotationKeys, BackendInfo, DeviceKind, ResourceNames
from hami.standard import StandardBackend

COUNT_ALIAS = "cambricon.com/mlunum"

KIND = DeviceKind(
    vendor="MLU",
    resources=ResourceNames(
        count="cambricon.com/vmlu",
        memory="cambricon.com/mlu.smlu.vmemory",
        cores="cambricon.com/mlu.smlu.vcore",
        extra=(COUNT_ALIAS,),
    ),
    annotations=AnnotationKeys.hami("hami.io/node-mlu-register", "hami.io/node-handshake-mlu", "hami.io/cambricon-mlu"),
)

INFO = BackendInfo(
    name="cambricon",
    kinds=[KIND],
    description="Cambricon MLUs shared through dynamic sMLU (vcore and vmemory slices)",
    default_config={"split_count": 10, "memory_scaling": 1, "core_scaling": 1, "default_memory": 0, "default_cores": 0},
    host_paths=("/dev", "/usr/bin/cnmon"),
)

plugin = StandardBackend(INFO, count_aliases={"MLU": [COUNT_ALIAS]})
