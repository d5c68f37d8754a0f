"""Hooks for a backend of HAMi's usual shape, so a new backend starts from working defaults.

:class:`StandardBackend` answers identity, discovery from the node inventory (the simulated
source), the even split, HAMi's request rules and the webhook's count default for every device
kind it declares. A real backend subclasses it and overrides what its hardware does differently
(re-marking each override with ``@hookimpl``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from hami.backendkit.inventory import inventory_devices
from hami.backendkit.limits import container_resources, request_warnings, standard_request
from hami.backendkit.splitting import split_evenly
from hami.backendkit.usage import simulated_usage
from hami.plugin import hookimpl
from hami.plugin.model import (
    BackendInfo,
    ContainerPatch,
    ContainerShare,
    DeviceKind,
    DeviceRequest,
    NodeContext,
    PhysicalDevice,
    SchedulableDevice,
    UsageReport,
)
from hami.plugin.naming import renamed_info


class StandardBackend:
    def __init__(self, info: BackendInfo, *, count_aliases: Mapping[str, Sequence[str]] | None = None) -> None:
        self.info = info
        self.count_aliases = {vendor: tuple(names) for vendor, names in (count_aliases or {}).items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.name!r})"

    @hookimpl
    def hami_backend(self) -> BackendInfo:
        return self.info

    @hookimpl
    def hami_sample_usage(
        self, devices: Sequence[PhysicalDevice], containers: Sequence[ContainerShare], config: Mapping[str, Any], node: NodeContext
    ) -> UsageReport | None:
        """On a simulated node, plausible figures from the grants (the sandbox shows usage); a real
        backend overrides this with what its vendor tool reports."""
        return simulated_usage(devices, containers, time.time()) if node.simulated else None

    @hookimpl
    def hami_discover_devices(self, config: Mapping[str, Any], node_name: str) -> list[PhysicalDevice]:
        return inventory_devices(config, node_name, self.info.vendors)

    @hookimpl
    def hami_split_device(self, device: PhysicalDevice, config: Mapping[str, Any]) -> SchedulableDevice:
        return split_evenly(device, config)

    def kinds(self, config: Mapping[str, Any]) -> tuple[DeviceKind, ...]:
        """The declared kinds under the names ``config['resource_names']`` gives (hami.plugin.naming)."""
        return renamed_info(self.info, config).kinds

    def memory_unit_mib(self, config: Mapping[str, Any]) -> int:
        """MiB per unit of the memory resource (1: HAMi's plain MiB); a backend counting slices overrides it
        so that a refused byte quantity is answered with the number of slices to write."""
        return 1

    @hookimpl
    def hami_container_requests(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> list[DeviceRequest]:
        requests = (
            standard_request(
                container,
                kind,
                default_memory=config.get("default_memory", 0),
                default_cores=config.get("default_cores", 0),
                count_aliases=self.count_aliases.get(kind.vendor, ()),
                memory_unit_mib=self.memory_unit_mib(config),
            )
            for kind in self.kinds(config)
        )
        return [r for r in requests if r is not None]

    @hookimpl
    def hami_mutate_container(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> ContainerPatch | None:
        """HAMi's webhook default: asking for memory or cores alone means one device; warnings for
        what the request rules change (memory beside a percentage, cores clamped, 0 read as unset)."""
        resources = container_resources(container)
        limits = {}
        warnings: list[str] = []
        for kind in self.kinds(config):
            names = kind.resources
            counted = any(n in resources for n in (names.count, *self.count_aliases.get(kind.vendor, ())))
            shares = any(n is not None and n in resources for n in (names.memory, names.memory_percentage, names.cores))
            if shares and not counted:
                limits[names.count] = "1"
            if shares:
                warnings.extend(request_warnings(container, kind))
        return ContainerPatch(limits=limits, warnings=warnings) if limits or warnings else None
