"""Discovery through NVML, with ``nvidia-ml-py`` (``import pynvml``) imported only when called.

Why so defensive: the node agent runs on every node, most without GPUs, and on drivers of every
age. No library or no driver means no devices and one log line; a function an old driver lacks
(``NVMLError_FunctionNotFound``) or a query a GPU does not support degrades that one attribute;
only a driver that is present but broken is an error, so the operator sees it. A GPU NVML counts
but cannot describe (no handle, no UUID, no memory size) is returned unadvertised with the NVML
error as its reason, so ``hami devices`` shows it instead of it vanishing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from hami.sdk import BackendError, PhysicalDevice

log = logging.getLogger(__name__)

VENDOR = "NVIDIA"
SOURCE = "nvml"
"""The ``source`` attribute of devices found through NVML (the inventory's have none)."""

_MIB = 1 << 20
_MIG_PROFILE = re.compile(r"(?:\d+c\.)?\d+g\.\d+gb(?:\+\w+)?$")
# NVML common-ancestor level → HAMi's P2P link score (go-gpuallocator's P2PLink types, as HAMi scores them).
_P2P_SCORE = {0: 60, 10: 50, 20: 40, 30: 30, 40: 20, 50: 10}
NVLINK_SCORE = 100
"""Points per NVLink between two GPUs, on top of the PCIe score (HAMi's calculateGPUPairScore)."""

T = TypeVar("T")


def load_pynvml() -> Any | None:
    """The bindings, or None when ``nvidia-ml-py`` is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


class _Probe:
    """One discovery pass: an NVML call that fails (a function an old driver lacks, a query this GPU
    does not support, a transient error) degrades one attribute, recorded for one log line."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.degraded: dict[str, str] = {}

    def optional(self, attribute: str, call: Callable[..., T], *args: Any, default: T) -> T:
        try:
            return call(*args)
        except self.nvml.NVMLError as exc:
            if attribute not in self.degraded:
                self.degraded[attribute] = f"{type(exc).__name__}: {exc}"
            return default


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _sysfs_numa(host_root: str, bus_id: str) -> int | None:
    """NUMA node from sysfs when NVML cannot say (NVML's 8-digit domain, sysfs's 4-digit one)."""
    domain, _, rest = bus_id.partition(":")
    if not rest:
        return None
    path = Path(host_root, "sys/bus/pci/devices", f"{domain[-4:]}:{rest}".lower(), "numa_node")
    try:
        node = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return max(node, 0)


def _mig_devices(probe: _Probe, handle: Any) -> list[dict[str, Any]]:
    nvml = probe.nvml
    found = []
    for i in range(probe.optional("mig_devices", nvml.nvmlDeviceGetMaxMigDeviceCount, handle, default=0)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
            name = _text(nvml.nvmlDeviceGetName(mig))
            memory = int(nvml.nvmlDeviceGetMemoryInfo(mig).total // _MIB)
            uuid = _text(nvml.nvmlDeviceGetUUID(mig))
        except nvml.NVMLError_NotFound:
            continue  # an empty slot of the geometry
        except nvml.NVMLError as exc:
            probe.degraded.setdefault("mig_devices", f"{type(exc).__name__}: {exc}")
            continue
        match = _MIG_PROFILE.search(name)
        found.append(
            {"uuid": uuid, "profile": match.group(0) if match else f"{memory}mb", "memory": memory, **_mig_identity(probe, handle, mig)}
        )
    return found


def _mig_identity(probe: _Probe, parent: Any, mig: Any) -> dict[str, int]:
    """The instance's GPU-instance and compute-instance ids and its GPU instance's placement (start
    and size in memory slices): what HAMi's device plugin writes back to the pod
    (``hami.io/vgpu-mig-allocations``). Left out where the driver cannot tell (the instance is
    still handed out; only its metrics lack the ids)."""
    nvml = probe.nvml
    try:
        gi = int(nvml.nvmlDeviceGetGpuInstanceId(mig))
        ci = int(nvml.nvmlDeviceGetComputeInstanceId(mig))
    except nvml.NVMLError as exc:
        probe.degraded.setdefault("mig_identity", f"{type(exc).__name__}: {exc}")
        return {}
    out = {"gpu_instance_id": gi, "compute_instance_id": ci}
    try:
        placement = nvml.nvmlGpuInstanceGetInfo(nvml.nvmlDeviceGetGpuInstanceById(parent, gi)).placement
        out.update(placement_start=int(placement.start), placement_size=int(placement.size))
    except nvml.NVMLError as exc:
        probe.degraded.setdefault("mig_placement", f"{type(exc).__name__}: {exc}")
    return out


def _nvlinks(probe: _Probe, handle: Any) -> dict[str, int]:
    """Active NVLinks of one GPU, counted per remote PCI bus id."""
    nvml = probe.nvml
    peers: dict[str, int] = {}
    for link in range(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18)):
        try:
            active = nvml.nvmlDeviceGetNvLinkState(handle, link)
        except (nvml.NVMLError_InvalidArgument, nvml.NVMLError_NotSupported):
            break  # past the last link, or no NVLink on this GPU
        except nvml.NVMLError as exc:  # an old driver without the function, a lost GPU
            probe.degraded.setdefault("nvlink", f"{type(exc).__name__}: {exc}")
            break
        if active:
            pci = probe.optional("nvlink", nvml.nvmlDeviceGetNvLinkRemotePciInfo, handle, link, default=None)
            if pci is not None:
                remote = _text(pci.busId).lower()
                peers[remote] = peers.get(remote, 0) + 1
    return peers


def pair_score(ancestor_level: int | None, nvlinks: int) -> int:
    """HAMi's score of a GPU pair: higher means more bandwidth between them."""
    return (_P2P_SCORE.get(ancestor_level, 0) if ancestor_level is not None else 0) + NVLINK_SCORE * nvlinks


def discover(node_name: str, config: Mapping[str, Any]) -> list[PhysicalDevice]:
    """Every GPU NVML reports on this node (filters and splitting come later)."""
    nvml = load_pynvml()
    if nvml is None:
        log.info("event=nvml_unavailable node=%s reason=%r", node_name, "nvidia-ml-py is not installed")
        return []
    try:
        nvml.nvmlInit()
    except (nvml.NVMLError_LibraryNotFound, nvml.NVMLError_DriverNotLoaded) as exc:
        log.info("event=nvml_unavailable node=%s reason=%r devices=0", node_name, f"no NVIDIA driver: {exc}")
        return []
    except nvml.NVMLError as exc:
        raise BackendError(f"NVML initialisation failed on node {node_name!r}: {exc} (NVML error {exc.value})") from None
    try:
        return _discover(nvml, node_name, str(config.get("host_root") or "/"), _preconfigured_memory(config))
    except nvml.NVMLError as exc:
        raise BackendError(f"NVML discovery failed on node {node_name!r}: {exc} (NVML error {exc.value})") from None
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


def _preconfigured_memory(config: Mapping[str, Any]) -> int:
    """HAMi's ``preConfiguredDeviceMemory`` (MiB): the size of a GPU whose NVML has no memory query."""
    value = config.get("preconfigured_device_memory") or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BackendError(f"config preconfigured_device_memory={value!r}: must be a whole number of MiB >= 0")
    return value


def _failed(call: str, exc: Any) -> str:
    return f"{call}: {exc} (NVML error {exc.value})"


def _unreadable(index: int, uuid: str, name: str, reason: str) -> PhysicalDevice:
    """A GPU NVML counts but cannot describe: listed, never offered (``hami devices`` shows why)."""
    return PhysicalDevice(
        id=uuid or f"nvml-index-{index}",
        vendor=VENDOR,
        type=name or "NVIDIA GPU",
        memory=0,
        index=index,
        healthy=False,
        attributes={"source": SOURCE},
        advertised=False,
        reason=reason,
    )


def _memory(nvml: Any, handle: Any, preconfigured: int) -> tuple[int, str]:
    """(MiB, "") or (0, why not): as HAMi's register.go, a GPU without a memory query (a unified-memory
    GPU answers NOT_SUPPORTED) takes ``preconfigured_device_memory``; any other failure is no size."""
    try:
        total = int(nvml.nvmlDeviceGetMemoryInfo(handle).total // _MIB)
    except nvml.NVMLError_NotSupported as exc:
        if preconfigured:
            return preconfigured, ""
        return 0, (
            f"memory unknown ({_failed('nvmlDeviceGetMemoryInfo', exc)}): set preconfigured_device_memory "
            "(MiB) in the nvidia config, as HAMi's preConfiguredDeviceMemory for unified-memory GPUs"
        )
    except nvml.NVMLError as exc:
        return 0, f"memory unknown ({_failed('nvmlDeviceGetMemoryInfo', exc)})"
    if total == 0 and preconfigured:
        return preconfigured, ""
    return total, "" if total else "memory unknown (NVML reports 0 MiB): set preconfigured_device_memory (MiB) in the nvidia config"


def _discover(nvml: Any, node_name: str, host_root: str, preconfigured: int = 0) -> list[PhysicalDevice]:
    probe = _Probe(nvml)
    gpus: list[tuple[Any, dict[str, Any]]] = []
    unreadable: list[PhysicalDevice] = []
    for index in range(nvml.nvmlDeviceGetCount()):
        try:  # nvidia-smi says "Unable to determine the device handle for GPU …" for these
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except nvml.NVMLError as exc:
            unreadable.append(_unreadable(index, "", "", f"NVML cannot read GPU {index} ({_failed('nvmlDeviceGetHandleByIndex', exc)})"))
            continue
        try:
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        except nvml.NVMLError as exc:
            unreadable.append(_unreadable(index, "", "", f"NVML cannot read GPU {index} ({_failed('nvmlDeviceGetUUID', exc)})"))
            continue
        facts: dict[str, Any] = {"uuid": uuid, "index": index, "healthy": True}
        facts["name"] = _text(probe.optional("name", nvml.nvmlDeviceGetName, handle, default="NVIDIA GPU")) or "NVIDIA GPU"
        facts["memory"], unsized = _memory(nvml, handle, preconfigured)
        if unsized:  # a lost GPU, a unified-memory GPU without preconfigured_device_memory
            unreadable.append(_unreadable(index, uuid, facts["name"], unsized))
            continue
        pci = probe.optional("bus_id", nvml.nvmlDeviceGetPciInfo, handle, default=None)
        facts["bus_id"] = _text(pci.busId).lower() if pci is not None else ""
        numa = probe.optional("numa", nvml.nvmlDeviceGetNumaNodeId, handle, default=None)
        if numa is None and facts["bus_id"]:
            numa = _sysfs_numa(host_root, facts["bus_id"])
        facts["numa"] = max(numa or 0, 0)
        cc = probe.optional("compute_capability", nvml.nvmlDeviceGetCudaComputeCapability, handle, default=None)
        facts["compute_capability"] = f"{cc[0]}.{cc[1]}" if cc else ""
        mig_mode = probe.optional("mig_mode", nvml.nvmlDeviceGetMigMode, handle, default=None)
        facts["mig_enabled"] = bool(mig_mode and mig_mode[0] == getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1))
        facts["mig_devices"] = _mig_devices(probe, handle) if facts["mig_enabled"] else []
        facts["nvlinks"] = _nvlinks(probe, handle)
        gpus.append((handle, facts))
    by_bus = {f["bus_id"]: f["uuid"] for _, f in gpus if f["bus_id"]}
    devices = []
    for handle, facts in gpus:
        scores = {}
        for other_handle, other in gpus:
            if other is facts:
                continue
            level = probe.optional("topology", nvml.nvmlDeviceGetTopologyCommonAncestor, handle, other_handle, default=None)
            links = sum(n for bus, n in facts["nvlinks"].items() if by_bus.get(bus) == other["uuid"])
            scores[other["uuid"]] = pair_score(level, links)
        peers = {by_bus[bus]: n for bus, n in facts["nvlinks"].items() if bus in by_bus}
        attributes = {
            "source": SOURCE,
            "bus_id": facts["bus_id"],
            "compute_capability": facts["compute_capability"],
            "mig_enabled": facts["mig_enabled"],
            "mig_devices": facts["mig_devices"],
            "nvlink_peers": peers,
            "pair_scores": scores,
        }
        devices.append(
            PhysicalDevice(
                id=facts["uuid"],
                vendor=VENDOR,
                type=facts["name"],
                memory=facts["memory"],
                index=facts["index"],
                numa=facts["numa"],
                healthy=facts["healthy"],
                attributes=attributes,
            )
        )
    for attribute, reason in sorted(probe.degraded.items()):
        log.info("event=nvml_attribute_degraded node=%s attribute=%s reason=%r", node_name, attribute, reason)
    log.info("event=nvml_discovered node=%s devices=%d unadvertised=%d", node_name, len(devices), len(unreadable))
    return sorted(devices + unreadable, key=lambda d: d.index)
