"""Prometheus helpers shared by the scheduler's and the node agent's metrics: HAMi's const label
``zone="vGPU"`` and ``hami_build_info`` (Project-HAMi/HAMi ``pkg/metrics/metrics.go``, v2.10.0)."""

from __future__ import annotations

import platform
from collections.abc import Callable

from prometheus_client.core import GaugeMetricFamily

import hami

ZONE = "vGPU"
"""HAMi registers its collectors with the const label ``zone="vGPU"`` (``NewClusterManager("vGPU", …)``)."""


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
