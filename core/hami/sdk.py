"""The one import for backend authors: ``from hami.sdk import hookimpl, PhysicalDevice, ...``.

Everything a backend needs to implement the contract (:mod:`hami.plugin.hookspecs`) is re-exported
here under a stable name: the hook marker, the value types it receives and returns, the JSON-shaped
aliases for Kubernetes objects, the errors it may raise, the scoring-policy base classes
(``NodePolicy``/``DevicePolicy``, offered through ``hami_policies``), and the helpers for backends of
the usual shape (HAMi's request rules, even splitting, selectors, presence-based health, the
vendor-tool runner and discovery, the simulated inventory, tool-table pairing, per-node unit
ranges, whole-device backends, HAMi's pod allocation encoding). Internals may move; these names stay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hami.backendkit import selectors
from hami.backendkit.discovery import tool_devices, tool_json
from hami.backendkit.enforcement import (
    ISOLATION_MISSING,
    library_problem,
    simulated_enforcement,
    unenforced,
    vendor_stack_enforcement,
    whole_device_enforcement,
)
from hami.backendkit.inventory import INVENTORY_ENV, inventory_devices, inventory_path, load_inventory
from hami.backendkit.limits import container_resources, standard_request
from hami.backendkit.presence import PresenceWatch
from hami.backendkit.ranges import RangeLedger, owner_key
from hami.backendkit.splitting import split_evenly
from hami.backendkit.standard import StandardBackend
from hami.backendkit.tables import TableRow, paired_rows
from hami.backendkit.tools import ToolNotFound, run_tool
from hami.backendkit.usage import simulated_usage
from hami.backendkit.whole import WholeDeviceBackend, one_slot
from hami.errors import AnnotationError, BackendError, BackendRefused, HamiError, QuantityError, RequestError, ValidationError
from hami.plugin import hookimpl
from hami.plugin.model import (
    AnnotationKeys,
    BackendInfo,
    ContainerEdits,
    ContainerPatch,
    ContainerShare,
    DeviceKind,
    DeviceLoad,
    DeviceNode,
    DeviceRequest,
    DeviceUsage,
    Enforcement,
    Grant,
    GrantedDevice,
    HealthEvent,
    Mount,
    NodeAnnotations,
    NodeContext,
    NodeUsage,
    PartitionInstance,
    PhysicalDevice,
    ResourceNames,
    SchedulableDevice,
    ShareLoad,
    UsageReport,
)
from hami.plugin.naming import renamed_info
from hami.plugin.policy import ClusterView, DevicePolicy, DeviceScoreContext, HostView, NodePolicy, Policy, ScoreContext
from hami.wire.codec import encode_pod_devices
from hami.wire.quantity import parse_count, parse_quantity

Pod = Mapping[str, Any]
"""A Kubernetes Pod as a JSON-shaped mapping (``pod["metadata"]["annotations"]``); never mutate it."""
Container = Mapping[str, Any]
"""One entry of ``pod["spec"]["containers"]`` (or ``initContainers``)."""
Config = Mapping[str, Any]
"""A backend's ``default_config`` overlaid with the operator's settings."""

__all__ = [
    "INVENTORY_ENV",
    "ISOLATION_MISSING",
    "AnnotationError",
    "AnnotationKeys",
    "BackendError",
    "BackendInfo",
    "BackendRefused",
    "ClusterView",
    "Config",
    "Container",
    "ContainerEdits",
    "ContainerPatch",
    "ContainerShare",
    "DeviceKind",
    "DeviceLoad",
    "DeviceNode",
    "DevicePolicy",
    "DeviceRequest",
    "DeviceScoreContext",
    "DeviceUsage",
    "Enforcement",
    "Grant",
    "GrantedDevice",
    "HamiError",
    "HealthEvent",
    "HostView",
    "Mount",
    "NodeAnnotations",
    "NodeContext",
    "NodePolicy",
    "NodeUsage",
    "PartitionInstance",
    "PhysicalDevice",
    "Pod",
    "Policy",
    "PresenceWatch",
    "QuantityError",
    "RangeLedger",
    "RequestError",
    "ResourceNames",
    "SchedulableDevice",
    "ScoreContext",
    "ShareLoad",
    "StandardBackend",
    "TableRow",
    "ToolNotFound",
    "UsageReport",
    "ValidationError",
    "WholeDeviceBackend",
    "container_resources",
    "encode_pod_devices",
    "hookimpl",
    "inventory_devices",
    "inventory_path",
    "library_problem",
    "load_inventory",
    "one_slot",
    "owner_key",
    "paired_rows",
    "parse_count",
    "parse_quantity",
    "renamed_info",
    "run_tool",
    "selectors",
    "simulated_enforcement",
    "simulated_usage",
    "split_evenly",
    "standard_request",
    "tool_devices",
    "tool_json",
    "unenforced",
    "vendor_stack_enforcement",
    "whole_device_enforcement",
]
