"""ResourceSlices (``resource.k8s.io/v1``) from the backends' discovery and split.

One pool per node (named after the node), one device per discovered, advertised and healthy device:

* attributes (in the driver's domain): ``vendor`` (the HAMi vendor key), ``backend``, ``model``,
  ``uuid``, ``index``, ``numa``, ``resource`` (the device-plugin count resource), ``mode`` when the split
  chose one, and the backend's scalar facts (PCI bus id, interconnect ring …) that fit DRA's rules;
* capacities: ``memory`` (schedulable MiB, as a ``<n>Mi`` quantity), ``cores`` (percent of the device)
  and, for a device the split shares (``count`` > 1), ``shares`` (its share slots).

A shared device sets ``allowMultipleAllocations`` (consumable capacity, KEP-5075) with request policies
that mirror HAMi's request rules: memory not asked = all of it, cores not asked = 0 (no compute limit),
each claim takes one share slot. A device the split gives whole (``count`` 1) is a plain device.
Unhealthy devices are left out until they recover (no alpha device taints needed).

:func:`check_slice` holds every slice to the API server's own rules (names, limits, quantities) beside
the OpenAPI schema, so a bad backend fact is a clear error here, not a 422 at publish time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hami.dra import DRIVER
from hami.errors import ValidationError
from hami.node.devices import Discovery, NodeDevice

API_VERSION = "resource.k8s.io/v1"
MAX_DEVICES_PER_SLICE = 128
"""resource.k8s.io/v1 ResourceSliceMaxDevices."""
MAX_ATTRIBUTES_AND_CAPACITIES = 32
"""ResourceSliceMaxAttributesAndCapacitiesPerDevice."""
MAX_ATTRIBUTE_STRING = 64
"""DeviceAttributeMaxValueLength."""
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(Mi|Gi|Ki|Ti)?$")
CORE_ATTRIBUTES = ("vendor", "backend", "model", "uuid", "index", "numa", "resource", "mode")


def _label(text: str) -> str:
    """``text`` as a DNS label fragment: lower case, runs of other characters as one dash."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-") or "device"


def device_name(device: NodeDevice) -> str:
    """The device's name in its pool: ``<vendor>-<index>-<hash of the id>`` as a DNS label. The hash keeps
    names unique and stable when indexes are re-used or two vendor keys map to one label."""
    base = f"{_label(device.vendor)}-{device.physical.index}"
    digest = hashlib.sha256(device.id.encode()).hexdigest()[:8]
    return f"{base[: 63 - 9]}-{digest}"


def _attribute_name(key: str) -> str | None:
    name = re.sub(r"[^A-Za-z0-9_]", "_", key)
    if name and name[0].isdigit():
        name = "_" + name
    return name if _IDENTIFIER.match(name) else None


def _attribute(value: Any) -> dict[str, Any] | None:
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, str) and 0 < len(value) <= MAX_ATTRIBUTE_STRING:
        return {"string": value}
    return None  # lists, maps, floats and long strings have no DRA attribute form


def device_entry(device: NodeDevice) -> dict[str, Any]:
    """One ``spec.devices[]`` entry for ``device``."""
    physical, split = device.physical, device.schedulable
    attributes: dict[str, dict[str, Any]] = {}
    core = {
        "vendor": physical.vendor,
        "backend": device.backend,
        "model": physical.type,
        "uuid": physical.id,
        "index": physical.index,
        "numa": physical.numa,
        "resource": device.resource,
        "mode": split.mode,
    }
    for key, value in core.items():
        entry = _attribute(value)
        if entry is not None:
            attributes[key] = entry
    capacity: dict[str, dict[str, Any]] = {"memory": {"value": f"{split.memory}Mi"}, "cores": {"value": str(split.cores)}}
    shared = split.count > 1
    if shared:
        memory = f"{split.memory}Mi"
        capacity["memory"]["requestPolicy"] = {"default": memory, "validRange": {"min": "1Mi", "max": memory, "step": "1Mi"}}
        capacity["cores"]["requestPolicy"] = {"default": "0", "validRange": {"min": "0", "max": str(split.cores), "step": "1"}}
        capacity["shares"] = {"value": str(split.count), "requestPolicy": {"default": "1", "validValues": ["1"]}}
    room = MAX_ATTRIBUTES_AND_CAPACITIES - len(attributes) - len(capacity)
    for key, value in sorted(physical.attributes.items()):
        name = _attribute_name(str(key))
        entry = _attribute(value)
        if room <= 0:
            break
        if name is None or entry is None or name in attributes:
            continue
        attributes[name] = entry
        room -= 1
    out: dict[str, Any] = {"name": device_name(device), "attributes": attributes, "capacity": capacity}
    if shared:
        out["allowMultipleAllocations"] = True
    return out


def slice_name(node_name: str, index: int) -> str:
    """``<node>-hami.io-<n>``, shortened with a hash when the node name is long."""
    base = f"{node_name}-{DRIVER}"
    if len(base) > 240:
        base = f"{base[:200].rstrip('.-')}-{hashlib.sha256(base.encode()).hexdigest()[:10]}"
    return f"{base}-{index}"


def build_slices(
    discovery: Discovery,
    node_name: str,
    *,
    generation: int = 1,
    health: Mapping[str, bool] | None = None,
    node_uid: str | None = None,
) -> list[dict[str, Any]]:
    """The node's ResourceSlices: healthy devices (``health`` overrides discovery), at most
    :data:`MAX_DEVICES_PER_SLICE` per slice, one pool of ``generation``; checked with :func:`check_slice`.
    A node without devices gets one empty slice, so schedulers see the pool exists and is empty."""
    health = health or {}
    devices = [d for d in discovery.devices if health.get(d.id, d.schedulable.healthy)]
    entries = [device_entry(d) for d in sorted(devices, key=lambda d: (d.vendor, d.physical.index, d.id))]
    seen: dict[str, str] = {}
    for entry, device in zip(entries, sorted(devices, key=lambda d: (d.vendor, d.physical.index, d.id)), strict=True):
        if entry["name"] in seen:
            raise ValidationError(f"devices {seen[entry['name']]!r} and {device.id!r} both get the name {entry['name']!r}")
        seen[entry["name"]] = device.id
    chunks = [entries[i : i + MAX_DEVICES_PER_SLICE] for i in range(0, len(entries), MAX_DEVICES_PER_SLICE)] or [[]]
    slices = []
    for i, chunk in enumerate(chunks):
        metadata: dict[str, Any] = {"name": slice_name(node_name, i), "labels": {"app.kubernetes.io/managed-by": "hami"}}
        if node_uid:
            metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid, "controller": True}]
        spec = {
            "driver": DRIVER,
            "nodeName": node_name,
            "pool": {"name": node_name, "generation": generation, "resourceSliceCount": len(chunks)},
            "devices": chunk,
        }
        body = {"apiVersion": API_VERSION, "kind": "ResourceSlice", "metadata": metadata, "spec": spec}
        check_slice(body)
        slices.append(body)
    return slices


def quantity_value(quantity: str) -> int:
    """A whole quantity as we write them (``3000Mi``, ``100``) as a plain number (bytes for binary suffixes)."""
    match = _QUANTITY.match(quantity)
    if match is None:
        raise ValidationError(f"quantity {quantity!r} is not a whole number with an optional Ki/Mi/Gi/Ti suffix")
    suffix = match.group(1) or ""
    return int(quantity[: len(quantity) - len(suffix)]) * {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}[suffix]


def check_slice(body: Mapping[str, Any]) -> None:
    """The API server's validation of a ResourceSlice that the OpenAPI schema cannot express
    (resource.k8s.io validation.go): names, pool, per-slice and per-device limits, attribute forms,
    quantities and request policies. Raises :class:`ValidationError` naming the field and value."""

    def fail(field: str, value: object, why: str) -> ValidationError:
        return ValidationError(f"ResourceSlice {body.get('metadata', {}).get('name')!r}: {field}={value!r}: {why}")

    name = body["metadata"]["name"]
    if not _DNS_SUBDOMAIN.match(name):
        raise fail("metadata.name", name, "must be a DNS subdomain")
    spec = body["spec"]
    if not _DNS_SUBDOMAIN.match(spec["driver"]) or len(spec["driver"]) > 63:
        raise fail("spec.driver", spec["driver"], "must be a DNS subdomain of at most 63 characters")
    pool = spec["pool"]
    if not all(_DNS_SUBDOMAIN.match(part) for part in pool["name"].split("/")):
        raise fail("spec.pool.name", pool["name"], "must be DNS subdomains separated by '/'")
    if pool["generation"] < 0 or pool["resourceSliceCount"] < 1:
        raise fail("spec.pool", pool, "generation must be >= 0 and resourceSliceCount >= 1")
    devices = spec["devices"]
    if len(devices) > MAX_DEVICES_PER_SLICE:
        raise fail("spec.devices", len(devices), f"at most {MAX_DEVICES_PER_SLICE} devices per slice")
    for i, device in enumerate(devices):
        where = f"spec.devices[{i}]"
        if not _DNS_LABEL.match(device["name"]):
            raise fail(f"{where}.name", device["name"], "must be a DNS label")
        attributes, capacity = device.get("attributes", {}), device.get("capacity", {})
        if len(attributes) + len(capacity) > MAX_ATTRIBUTES_AND_CAPACITIES:
            raise fail(where, len(attributes) + len(capacity), f"at most {MAX_ATTRIBUTES_AND_CAPACITIES} attributes and capacities")
        for key, value in attributes.items():
            if not _IDENTIFIER.match(key):
                raise fail(f"{where}.attributes", key, "must be a C identifier of at most 32 characters")
            if len(value) != 1 or next(iter(value)) not in ("string", "int", "bool", "version"):
                raise fail(f"{where}.attributes[{key}]", value, "must have exactly one of string, int, bool, version")
            if "string" in value and len(value["string"]) > MAX_ATTRIBUTE_STRING:
                raise fail(f"{where}.attributes[{key}]", value["string"], f"at most {MAX_ATTRIBUTE_STRING} characters")
        for key, cap in capacity.items():
            if not _IDENTIFIER.match(key):
                raise fail(f"{where}.capacity", key, "must be a C identifier of at most 32 characters")
            values = [cap["value"]]
            policy = cap.get("requestPolicy")
            if policy is not None:
                if not device.get("allowMultipleAllocations"):
                    raise fail(f"{where}.capacity[{key}].requestPolicy", policy, "only for devices with allowMultipleAllocations")
                if ("validRange" in policy) == ("validValues" in policy):
                    raise fail(f"{where}.capacity[{key}].requestPolicy", policy, "needs exactly one of validRange and validValues")
                rng = policy.get("validRange") or {}
                values += [v for v in (policy.get("default"), rng.get("min"), rng.get("max"), rng.get("step")) if v is not None]
                values += list(policy.get("validValues") or ())
            for quantity in values:
                if not isinstance(quantity, str) or not _QUANTITY.match(quantity):
                    raise fail(f"{where}.capacity[{key}]", quantity, "must be a whole quantity such as 3000Mi or 100")
            if policy is not None:
                total, default = quantity_value(cap["value"]), quantity_value(policy.get("default", cap["value"]))
                rng = policy.get("validRange")
                low, high = (quantity_value(rng["min"]), quantity_value(rng.get("max", cap["value"]))) if rng else (0, total)
                if not low <= default <= high <= total:
                    raise fail(f"{where}.capacity[{key}].requestPolicy", policy, f"needs min <= default <= max <= value ({cap['value']})")
                if "validValues" in policy and policy.get("default") not in policy["validValues"]:
                    raise fail(f"{where}.capacity[{key}].requestPolicy.default", policy.get("default"), "must be one of validValues")


def devices_by_name(devices: Sequence[NodeDevice]) -> dict[str, NodeDevice]:
    """Pool device name -> the node device: how a claim's allocation result finds its device."""
    return {device_name(d): d for d in devices}
