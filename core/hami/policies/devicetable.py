"""Device capacity of many nodes as numpy arrays, for policies that score every node per pod.

Converting thousands of :class:`NodeUsage` objects per pod would cost more than scoring them, so
rows are kept between calls and refreshed only for nodes whose ``NodeUsage`` object changed (the
scheduler's cache hands out a new one exactly when a node's usage changes).

Capacity is in milli of one device: a device's free share is the smaller of its free cores and free
memory fractions; a device without a free slot, or unhealthy, is *usable* for nothing although its
capacity *remains* unallocated (that is fragmentation too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hami.plugin.model import (
    MAX_REQUEST_CORES,
    DeviceRequest,
    DeviceUsage,
    NodeUsage,
    SchedulableDevice,
)
from hami.plugin.policy import DeviceFits, HostView

MILLI = 1000


def numpy() -> Any:
    """numpy, imported when a packing policy is first used (the core imports without it)."""
    try:
        import numpy as np
    except ImportError as exc:  # pragma: no cover - numpy is a dependency of the packing policies
        raise ImportError("the packing policies (random, bestfit, fgd) need numpy: pip install numpy") from exc
    return np


def free_milli(usage: DeviceUsage) -> int:
    """Unallocated share of the device, in milli (cores and memory, whichever is scarcer)."""
    device = usage.device
    fractions = []
    if device.cores:
        fractions.append(usage.free_cores / device.cores)
    if device.memory:
        fractions.append(usage.free_memory / device.memory)
    return int(MILLI * min(fractions, default=1.0) + 1e-9)


def need_milli(request: DeviceRequest, device: SchedulableDevice) -> int:
    """Share of ``device`` one of the request's devices takes, in milli (exclusive = whole)."""
    if request.exclusive:
        return MILLI
    parts = [0.0]
    if device.cores:
        parts.append(request.cores / device.cores)
    if device.memory:
        parts.append(request.memory_on(device) / device.memory)
    return max(1, min(MILLI, math.ceil(MILLI * max(parts) - 1e-9)))


class DeviceTable:
    """Rows of per-device ``remaining``/``usable`` milli, device type index and free slots, per node."""

    def __init__(self, vendor: str, width: int = 8) -> None:
        np = numpy()
        self.vendor = vendor
        self.width = width
        self.rows: dict[str, int] = {}
        self.names: list[str] = []
        self._seen: list[NodeUsage | None] = []
        self.models: dict[str, int] = {}
        self.representatives: list[SchedulableDevice] = []
        self.positions: dict[str, tuple[int, int]] = {}
        self.ids: list[list[str]] = []
        capacity = 64
        self.remaining = np.zeros((capacity, width), dtype=np.int64)
        self.usable = np.zeros((capacity, width), dtype=np.int64)
        self.model = np.zeros((capacity, width), dtype=np.int64)
        self.present = np.zeros((capacity, width), dtype=bool)
        self.slots = np.zeros((capacity, width), dtype=np.int64)
        self.host_index = np.full(capacity, -1, dtype=np.int64)
        self.version = np.zeros(capacity, dtype=np.int64)
        """Bumped whenever a row is refilled: lets policies cache per-row values."""
        self._host: HostView | None = None
        self._needs: dict[tuple[Any, ...], Any] = {}
        self._by_id: dict[int, int] = {}

    # ------------------------------------------------------------ rows

    def _grow(self, rows: int, width: int) -> None:
        np = numpy()
        old_rows, old_width = self.remaining.shape
        new_rows, new_width = max(rows, old_rows), max(width, old_width)
        if (new_rows, new_width) == (old_rows, old_width):
            return
        new_rows = max(new_rows, 2 * old_rows) if new_rows > old_rows else new_rows
        for name in ("remaining", "usable", "model", "present", "slots"):
            old = getattr(self, name)
            grown = np.zeros((new_rows, new_width), dtype=old.dtype)
            grown[:old_rows, :old_width] = old
            setattr(self, name, grown)
        for name, fill in (("host_index", -1), ("version", 0)):
            old = getattr(self, name)
            grown = np.full(new_rows, fill, dtype=np.int64)
            grown[:old_rows] = old
            setattr(self, name, grown)
        self.width = new_width

    def model_index(self, device: SchedulableDevice) -> int:
        index = self.models.get(device.type)
        if index is None:
            index = self.models[device.type] = len(self.models)
            self.representatives.append(device)
        return index

    def _fill(self, row: int, node: NodeUsage) -> None:
        devices = [u for u in node.devices if u.device.vendor == self.vendor]
        if len(devices) > self.width:
            self._grow(row + 1, len(devices))
        for device_id in self.ids[row]:
            self.positions.pop(device_id, None)
        self.remaining[row] = 0
        self.usable[row] = 0
        self.model[row] = 0
        self.present[row] = False
        self.slots[row] = 0
        ids = []
        for col, usage in enumerate(devices):
            device = usage.device
            left = free_milli(usage)
            slots = usage.free_slots if device.healthy else 0
            self.remaining[row, col] = left
            self.usable[row, col] = left if slots > 0 and not (device.cores and usage.cores >= device.cores) else 0
            self.model[row, col] = self.model_index(device)
            self.present[row, col] = True
            self.slots[row, col] = slots
            self.positions[device.id] = (row, col)
            ids.append(device.id)
        self.ids[row] = ids
        self._seen[row] = node

    def sync(self, nodes: Sequence[NodeUsage]) -> Any:
        """Row numbers of ``nodes`` (in order), refreshing rows whose usage object changed.

        Rows are found by the identity of the ``NodeUsage`` they were filled from (kept alive in
        ``_seen``, so an id is never reused while mapped): one dict lookup per node.
        """
        np = numpy()
        by_id = self._by_id
        out = [by_id.get(id(node), -1) for node in nodes]
        if -1 in out:
            for i, node in enumerate(nodes):
                if out[i] == -1:
                    out[i] = self._refresh(node, self.rows.get(node.name))
        return np.array(out, dtype=np.int64)

    def _refresh(self, node: NodeUsage, row: int | None) -> int:
        if row is None:
            row = self.rows[node.name] = len(self.names)
            self.names.append(node.name)
            self._seen.append(None)
            self.ids.append([])
            self._grow(row + 1, self.width)
            self.host_index[row] = self._host_position(node.name)
        previous = self._seen[row]
        if previous is not None:
            self._by_id.pop(id(previous), None)
        self._fill(row, node)
        self._by_id[id(node)] = row
        self.version[row] += 1
        return row

    # ------------------------------------------------------------ host resources

    def _host_position(self, name: str) -> int:
        if self._host is None:
            return -1
        index = self._host.index(name)
        return -1 if index is None else index

    def set_host(self, host: HostView | None) -> None:
        self._host = host
        for name, row in self.rows.items():
            self.host_index[row] = self._host_position(name)

    def host_free(self, rows: Any) -> tuple[Any, Any] | None:
        """(CPU milli, MiB) free on those rows' nodes; None without a host view. Unknown nodes are unlimited."""
        if self._host is None:
            return None
        np = numpy()
        index = self.host_index[rows]
        known = index >= 0
        safe = np.where(known, index, 0)
        cpu = np.where(known, np.asarray(self._host.cpu_free)[safe], np.iinfo(np.int64).max // 4)
        mem = np.where(known, np.asarray(self._host.mem_free)[safe], np.iinfo(np.int64).max // 4)
        return cpu, mem

    def representative_needs(self, request: DeviceRequest) -> Any:
        """The request's share (milli) of one device of each known type."""
        key = (request.memory, request.memory_percentage, request.cores, len(self.representatives))
        needs = self._needs.get(key)
        if needs is None:
            np = numpy()
            needs = self._needs[key] = np.array([need_milli(request, d) for d in self.representatives] or [MILLI], dtype=np.int64)
        return needs


def primary_request(requests: Sequence[DeviceRequest]) -> DeviceRequest | None:
    """The request a node-level packing score is about: the one taking the most capacity."""
    if not requests:
        return None
    return max(requests, key=lambda r: r.count * (MAX_REQUEST_CORES if r.exclusive else max(r.cores, r.memory_percentage or 0, 1)))


class Admission:
    """Which device types a pod's request may use, as the owning backend's predicate says
    (``ClusterView.device_fits`` on an idle device of each type); every type without one."""

    def __init__(self, device_fits: DeviceFits | None = None) -> None:
        self.device_fits = device_fits
        self._cache: dict[tuple[Any, ...], bool] = {}

    def allowed(self, table: DeviceTable, request: DeviceRequest, pod: Any, signature: tuple[Any, ...]) -> Any:
        """A bool per known device type of ``table``."""
        np = numpy()
        if self.device_fits is None or not signature:
            return np.ones(max(len(table.representatives), 1), dtype=bool)
        out = []
        for device in table.representatives:
            key = (signature, request.count, request.memory, request.memory_percentage, request.cores, device.type)
            fits = self._cache.get(key)
            if fits is None:
                try:
                    fits = self._cache[key] = self.device_fits(request, DeviceUsage(device), pod) is None
                except Exception:  # a predicate failing on a synthetic device admits it; the real fit decides
                    fits = self._cache[key] = True
            out.append(fits)
        return np.array(out or [True], dtype=bool)
