"""Prometheus helpers shared by the scheduler's and the node agent's metrics: HAMi's const label
``zone="vGPU"`` and ``hami_build_info`` (Project-HAMi/HAMi ``pkg/metrics/metrics.go``, v2.10.0)."""

from __future__ import annotations

import platform
from collections.abc import Callable

from prometheus_client.core import GaugeMetricFamily

import hami

ZONE = "vGPU"
"""HAMi registers its collectors with the const label ``zone="vGPU"`` (``NewClusterManager("vGPU", …)``)."""

# HAMi's names for the realized hardware partition instances (hami.wire.partitions): one series per
# instance on the scheduler, one per container's instance on the node monitor, and their
# --legacy-metrics names. Labels follow upstream (cmd/scheduler/metrics.go, cmd/vGPUmonitor/metrics.go).
PARTITION_NODE_METRIC = "hami_node_gpu_mig_instance_info"
PARTITION_NODE_LEGACY = "nodeGPUMigInstance"
PARTITION_CONTAINER_METRIC = "hami_mig_device_info"
PARTITION_CONTAINER_LEGACY = "MigInfo"
PARTITION_UUID_LABEL = "mig_uuid"
PARTITION_LEGACY_NAME_LABEL = "migname"
PARTITION_NODE_LABELS = [
    "node",
    "device_uuid",
    "device_index",
    PARTITION_UUID_LABEL,
    "profile",
    "gpu_instance_id",
    "compute_instance_id",
    "placement_start",
    "placement_size",
]
PARTITION_CONTAINER_LABELS = [
    "namespace",
    "pod",
    "container",
    "vdevice_index",
    "device_uuid",
    PARTITION_UUID_LABEL,
    "profile",
    "gpu_instance_id",
    "compute_instance_id",
]


class Families:
    """Gauge families that all carry the const label ``zone`` (what ``prometheus.WrapRegistererWith`` adds upstream)."""

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self.families: list[GaugeMetricFamily] = []

    def gauge(self, name: str, documentation: str, labels: list[str]) -> Callable[..., None]:
        family = GaugeMetricFamily(name, documentation, labels=[*labels, "zone"])
        self.families.append(family)

        def add(value: float, *values: str) -> None:
            if len(values) != len(labels):
                raise ValueError(f"{name}: {len(values)} label values for {len(labels)} labels {labels}")
            family.add_metric([*values, self.zone], value)

        return add


def build_info() -> GaugeMetricFamily:
    """``hami_build_info`` with upstream's label names (``pkg/metrics/metrics.go``); no zone, as upstream."""
    labels = {
        "version": hami.__version__,
        "revision": "",
        "build_date": "",
        "go_version": "",
        "compiler": platform.python_implementation().lower(),
        "platform": f"{platform.system().lower()}/{platform.machine()}",
    }
    family = GaugeMetricFamily("hami_build_info", "hami build metadata exposed as labels with a constant value of 1.", labels=list(labels))
    family.add_metric(list(labels.values()), 1.0)
    return family
