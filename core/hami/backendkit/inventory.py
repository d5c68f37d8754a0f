"""The node inventory format: a YAML (or JSON) description of nodes and their devices.

It is the simulated device source of every backend (config key ``inventory``, or the
``HAMI_INVENTORY`` environment variable), and the node shape of the sandbox and the simulator::

    nodes:
      - name: gpu-a100
        cpu: 64              # cores, or a quantity such as 64000m
        memory: 512Gi        # a quantity; a bare number is MiB
        labels: {zone: a}
        devices:
          - vendor: ACME       # a vendor key of an installed backend
            type: ACME X1-80GB
            memory: 80Gi       # per device; a bare number is MiB
            count: 8           # that many identical devices, ids <vendor>-<node>-<index>
            index: 0           # the first device's index (a second entry of the same vendor starts after the first)
            numa: 0
            attributes: {compute_capability: "8.0"}
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from hami.errors import InventoryError, QuantityError, ValidationError
from hami.plugin.model import NodeInventory, PhysicalDevice
from hami.wire.quantity import parse_quantity

INVENTORY_ENV = "HAMI_INVENTORY"
_MIB = Decimal(2**20)
_DEVICE_KEYS = {"vendor", "type", "memory", "count", "id", "index", "cores", "numa", "healthy", "attributes"}
_NODE_KEYS = {"name", "cpu", "memory", "labels", "devices"}


def _mib(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(parse_quantity(value) / _MIB)
    except QuantityError as exc:
        raise InventoryError(f"{where}: {exc}") from None


def _milli_cpu(value: Any, where: str) -> int:
    try:
        return int(parse_quantity(value if not isinstance(value, float) else str(value)) * 1000)
    except QuantityError as exc:
        raise InventoryError(f"{where}: {exc}") from None


def _mapping(value: Any, where: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InventoryError(f"{where}: expected a mapping, got {value!r:.80}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InventoryError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return value


def _devices(spec: Any, node: str, where: str) -> list[PhysicalDevice]:
    spec = _mapping(spec, where, _DEVICE_KEYS)
    for key in ("vendor", "type", "memory"):
        if key not in spec:
            raise InventoryError(f"{where}: missing {key!r}")
    count = spec.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1024:
        raise InventoryError(f"{where}: count={count!r} must be an integer from 1 to 1024")
    if "id" in spec and count > 1:
        raise InventoryError(f"{where}: id={spec['id']!r} names one device but count={count}")
    base_index = spec.get("index", 0)
    if isinstance(base_index, bool) or not isinstance(base_index, int) or base_index < 0:
        raise InventoryError(f"{where}: index={base_index!r} must be an integer >= 0")
    memory = _mib(spec["memory"], f"{where} memory")
    try:
        return [
            PhysicalDevice(
                id=spec["id"] if "id" in spec else f"{spec['vendor']}-{node}-{base_index + i}",
                vendor=spec["vendor"],
                type=spec["type"],
                memory=memory,
                index=base_index + i,
                cores=spec.get("cores", 100),
                numa=spec.get("numa", 0),
                healthy=spec.get("healthy", True),
                attributes=spec.get("attributes") or {},
            )
            for i in range(count)
        ]
    except (ValidationError, TypeError) as exc:
        raise InventoryError(f"{where}: {exc}") from None


def parse_inventory(data: Any, source: str = "inventory") -> tuple[NodeInventory, ...]:
    """Nodes from already-loaded YAML/JSON data; errors name the node, device and value."""
    data = _mapping(data, source, {"nodes"})
    nodes_spec = data.get("nodes")
    if not isinstance(nodes_spec, list):
        raise InventoryError(f"{source}: 'nodes' must be a list, got {nodes_spec!r:.80}")
    nodes = []
    for n, raw in enumerate(nodes_spec):
        where = f"{source} node #{n}"
        spec = _mapping(raw, where, _NODE_KEYS)
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise InventoryError(f"{where}: name={name!r} must be a non-empty string")
        where = f"{source} node {name!r}"
        devices_spec = spec.get("devices") or []
        if not isinstance(devices_spec, list):
            raise InventoryError(f"{where}: devices must be a list")
        devices = [d for i, dev in enumerate(devices_spec) for d in _devices(dev, name, f"{where} device #{i}")]
        try:
            nodes.append(
                NodeInventory(
                    name=name,
                    devices=devices,
                    cpu_milli=_milli_cpu(spec.get("cpu", 0), f"{where} cpu"),
                    memory=_mib(spec.get("memory", 0), f"{where} memory"),
                    labels=spec.get("labels") or {},
                )
            )
        except ValidationError as exc:
            raise InventoryError(f"{where}: {exc}") from None
    names = [node.name for node in nodes]
    repeated = sorted({x for x in names if names.count(x) > 1})
    if repeated:
        raise InventoryError(f"{source}: node names repeat: {repeated}")
    return tuple(nodes)


_parsed: dict[tuple[str, int, int, int], tuple[NodeInventory, ...]] = {}
"""Parsed inventories by (path, inode, size, mtime): every backend of every simulated node asks on each
discovery, and parsing a 500-node file each time made a sandbox's start grow with nodes squared."""
_parsed_lock = threading.Lock()


def load_inventory(path: str | os.PathLike[str]) -> tuple[NodeInventory, ...]:
    try:
        st = os.stat(path)
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        with _parsed_lock:
            if key in _parsed:
                return _parsed[key]
        text = Path(path).read_text()
    except OSError as exc:
        raise InventoryError(f"inventory {str(path)!r}: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise InventoryError(f"inventory {str(path)!r} is not valid YAML: {exc}") from None
    nodes = parse_inventory(data, f"inventory {str(path)!r}")
    with _parsed_lock:
        if len(_parsed) > 64:
            _parsed.clear()
        _parsed[key] = nodes
    return nodes


def inventory_path(config: Mapping[str, Any]) -> str | None:
    """The configured inventory (config key ``inventory``, else ``HAMI_INVENTORY``), or None.

    This is the one test for "is this node simulated?": the node agent asks it once per backend
    and hands the answer to every hook as :attr:`hami.plugin.model.NodeContext.simulated`."""
    return str(config.get("inventory") or os.environ.get(INVENTORY_ENV) or "") or None


def inventory_devices(config: Mapping[str, Any], node_name: str, vendors: Iterable[str]) -> list[PhysicalDevice]:
    """This node's devices of ``vendors`` from the configured inventory, or [] when none is configured.

    Backends call this first in ``hami_discover_devices`` so that any backend can run on a
    machine without its hardware (sandbox, tests, demos).
    """
    path = inventory_path(config)
    if not path:
        return []
    wanted = set(vendors)
    for node in load_inventory(path):
        if node.name == node_name:
            return [d for d in node.devices if d.vendor in wanted]
    return []
