"""The backend's configuration: defaults, per-node overrides and validation.

Every hook gets ``config`` (the defaults overlaid with the operator's settings). Some settings
differ per node (HAMi's ``nodeconfig``): ``nodes: {<node name>: {split_count: 4, mode: mps}}``
overrides the top level for that node. Every node-side hook gets the node (``NodeContext.name``),
so discovery, splitting and the runtime hooks apply the right overrides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hami.sdk import BackendError

MODES = ("hami-core", "mps", "mig", "none")
"""Isolation modes: HAMi-core's libvgpu.so, the MPS control daemon, MIG partitions, visibility only."""

STRATEGIES = ("envvar", "cdi")
"""Device list strategies: ``NVIDIA_VISIBLE_DEVICES`` or CDI device names."""

DEFAULT_IGNORED_XIDS = (13, 31, 43, 45, 68, 109)
"""Application errors (graphics engine exception, MMU fault, reset channel, preemptive cleanup,
video processor exception, context switch timeout): they never mark a device unhealthy."""

NODE_OVERRIDABLE = frozenset(
    {
        "split_count",
        "memory_scaling",
        "core_scaling",
        "mode",
        "include",
        "exclude",
        "filterdevices",
        "device_list_strategy",
        "preconfigured_device_memory",
    }
)

DEFAULT_CONFIG: dict[str, Any] = {
    "split_count": 10,
    "memory_scaling": 1,
    "core_scaling": 1,
    "default_memory": 0,
    "default_cores": 0,
    "mode": "hami-core",
    "device_list_strategy": "envvar",
    "include": [],
    "exclude": [],
    "filterdevices": {},  # HAMi's nodeconfig filterdevices: {uuid: [...], index: [...]} are not registered
    "preconfigured_device_memory": 0,  # MiB of a GPU whose NVML has no memory query (HAMi's preConfiguredDeviceMemory)
    "nodes": {},
    "hook_path": "/usr/local",
    "libvgpu_version": "",
    "host_root": "/",
    "core_utilization_policy": "",
    "libcuda_log_level": "",
    "topology_aware": True,
    "ignored_xids": list(DEFAULT_IGNORED_XIDS),
    "health_recovery_seconds": 300,
    "health_wait_ms": 1000,
    "mps_root": "/run/nvidia/mps",
    "mps_control": "nvidia-cuda-mps-control",
    "mps_manage_daemon": True,
    "mps_default_active_thread_percentage": 0,
    "mps_default_pinned_mem_limit": 0,
}


def node_config(config: Mapping[str, Any], node_name: str | None) -> dict[str, Any]:
    """``config`` with the overrides of ``node_name`` applied; unknown override keys are refused."""
    merged = dict(config)
    nodes = config.get("nodes") or {}
    if not isinstance(nodes, Mapping):
        raise BackendError(f"config nodes={nodes!r:.80}: must map node names to settings")
    overrides = nodes.get(node_name) if node_name else None
    if overrides:
        if not isinstance(overrides, Mapping):
            raise BackendError(f"config nodes[{node_name!r}]={overrides!r:.80}: must be a mapping")
        unknown = sorted(set(overrides) - NODE_OVERRIDABLE)
        if unknown:
            raise BackendError(
                f"config nodes[{node_name!r}] sets {unknown}, which cannot differ per node (allowed: {sorted(NODE_OVERRIDABLE)})"
            )
        merged.update(overrides)
    return merged


def mode_of(config: Mapping[str, Any]) -> str:
    mode = config.get("mode", "hami-core")
    if mode not in MODES:
        raise BackendError(f"config mode={mode!r}: must be one of {', '.join(MODES)}")
    return str(mode)


def strategy_of(config: Mapping[str, Any]) -> str:
    strategy = config.get("device_list_strategy", "envvar")
    if strategy not in STRATEGIES:
        raise BackendError(f"config device_list_strategy={strategy!r}: must be one of {', '.join(STRATEGIES)}")
    return str(strategy)


def _selectors(config: Mapping[str, Any], key: str) -> tuple[str, ...]:
    raw = config.get(key) or ()
    value = [raw] if isinstance(raw, (str, int)) else raw
    if not isinstance(value, Sequence) or any(isinstance(v, bool) or not isinstance(v, (str, int)) for v in value):
        raise BackendError(f"config {key}={raw!r:.80}: must be a list of GPU UUIDs or indexes")
    return tuple(str(v).strip() for v in value if str(v).strip())


def _filterdevices(config: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """HAMi's ``filterdevices: {uuid: [...], index: [...]}`` (nodeconfig), checked."""
    raw = config.get("filterdevices") or {}
    if not isinstance(raw, Mapping) or set(raw) - {"uuid", "index"}:
        raise BackendError(f"config filterdevices={raw!r:.80}: must be a mapping with 'uuid' and/or 'index' lists")
    uuids, indexes = raw.get("uuid") or [], raw.get("index") or []
    if isinstance(uuids, str) or not isinstance(uuids, Sequence) or not all(isinstance(u, str) for u in uuids):
        raise BackendError(f"config filterdevices.uuid={uuids!r:.80}: must be a list of GPU UUIDs")
    if (
        isinstance(indexes, str)
        or not isinstance(indexes, Sequence)
        or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in indexes)
    ):
        raise BackendError(f"config filterdevices.index={indexes!r:.80}: must be a list of GPU indexes >= 0")
    return tuple(uuids), tuple(indexes)


def exclusion(config: Mapping[str, Any], uuid: str, index: int, node_name: str | None = None) -> str:
    """Why ``include`` / ``exclude`` (UUIDs or indexes) or ``filterdevices`` drop this GPU, naming the
    config key and its value ("" when the GPU is kept). With ``node_name``, ``config`` is the top level
    and that node's overrides apply (and are named as ``nodes.<node>.<key>``)."""
    overrides: Mapping[str, Any] = {}
    if node_name is not None:
        overrides = (config.get("nodes") or {}).get(node_name) or {}
        config = node_config(config, node_name)

    def key(name: str) -> str:
        return f"nodes.{node_name}.{name}" if name in overrides else name

    include, exclude = _selectors(config, "include"), _selectors(config, "exclude")
    names = {uuid, str(index)}
    if include and not names & set(include):
        return f"not included by config key {key('include')}={list(include)}"
    if names & set(exclude):
        return f"excluded by config key {key('exclude')}={list(exclude)}"
    uuids, indexes = _filterdevices(config)
    if uuid in uuids or index in indexes:
        return f"excluded by config key {key('filterdevices')}={{'uuid': {list(uuids)}, 'index': {list(indexes)}}}"
    return ""


def selected(config: Mapping[str, Any], uuid: str, index: int) -> bool:
    """Whether ``include`` / ``exclude`` / ``filterdevices`` keep this GPU (``config``: the node's)."""
    return not exclusion(config, uuid, index)


def ignored_xids(config: Mapping[str, Any]) -> frozenset[int]:
    value = config.get("ignored_xids", DEFAULT_IGNORED_XIDS)
    if not isinstance(value, Sequence) or isinstance(value, str) or any(isinstance(x, bool) or not isinstance(x, int) for x in value):
        raise BackendError(f"config ignored_xids={value!r:.80}: must be a list of XID numbers")
    return frozenset(value)


def number(config: Mapping[str, Any], key: str, minimum: float = 0) -> float:
    value = config.get(key, DEFAULT_CONFIG.get(key))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise BackendError(f"config {key}={value!r}: must be a number >= {minimum}")
    return value
