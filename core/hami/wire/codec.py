"""HAMi-compatible annotation encodings (hami-compat.md, "Encodings").

* node device list, JSON: ``[{"id", "index", "count", "devmem", "devcore", "type", "numa", "mode",
  <partitions>, "health"}, …]``; missing keys mean zero / false / empty; :data:`PARTITIONS_KEY` holds
  :attr:`SchedulableDevice.partitions` under HAMi's name for it, as HAMi's profile objects (:data:`PARTITION_FIELDS`);
* node device list, legacy CSV (one HAMi vendor still uses it, HAMi <= 2.7 used it for every vendor; read for
  any kind): ``<id>,<count>,<devmem>,<devcore>,<type>,<numa>,<health>[,<index>,<mode>]:``;
* pod allocation: ``<uuid>,<vendor>,<usedmem>,<usedcores>:`` per device, ``;`` after each container.

Annotations are untrusted text: decoders raise nothing but :class:`AnnotationError`, whose message
names the offending part. A node's device list is also held to bounds no real device reaches
(:func:`check_node_device`), so a hostile or broken registration cannot make the scheduler hand out
10^400 MiB or 10^18 slots: memory at most :data:`MAX_DEVICE_MEMORY_MIB` (16 PiB), slots at most
:data:`MAX_DEVICE_SLOTS`, cores at most :data:`MAX_DEVICE_CORES` (100 % × a core scaling of
:data:`MAX_CORE_SCALING`), index and NUMA node at most :data:`MAX_DEVICE_INDEX`, and device ids free
of the separators HAMi's encodings use (``,`` ``:`` ``;``), whitespace and control characters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hami.errors import AnnotationError, ValidationError
from hami.plugin.model import Encoding, Grant, SchedulableDevice

PodDevices = tuple[tuple[Grant, ...], ...]
"""Per container (init containers first, then app containers), the devices granted to it."""

PARTITIONS_KEY = "migProfiles"
"""HAMi's JSON key for a device's partition profiles (pkg/device/devices.go ``DeviceInfo``): the wire
keeps HAMi's spelling so the annotation stays byte-compatible; the Python field is the generic ``partitions``."""

PARTITION_FIELDS = (("name", "name"), ("memory", "memoryMB"), ("cores", "core"), ("slices", "sliceCount"), ("placements", "placements"))
"""A partition profile as Python sees it (generic keys) and as the wire spells it: HAMi v2.10's
profile objects ``{name, memoryMB, core, sliceCount, placements: [{start, size}]}`` (pkg/device/devices.go),
a flat list per device. Before, we wrote a list of layouts (``[[{name, memory, count}]]``), which HAMi
cannot unmarshal (it drops the whole node); decoding still reads that form from agents not yet upgraded."""
_MAX_INT32 = 2**31 - 1

MAX_DEVICE_MEMORY_MIB = 16 * 1024**3
"""16 PiB in MiB: three orders of magnitude above any accelerator, memory scaling included."""
MAX_DEVICE_SLOTS = 1024
"""Containers sharing one device at once (HAMi's deviceSplitCount is 10 by default)."""
MAX_CORE_SCALING = 100
MAX_DEVICE_CORES = 100 * MAX_CORE_SCALING
"""Cores are percent of one device (100) times the backend's core scaling, at most :data:`MAX_CORE_SCALING`."""
MAX_DEVICE_INDEX = 65_535
"""Device index and NUMA node (Linux allows 1024 NUMA nodes)."""
MAX_DEVICE_ID = 256
_ID_SEPARATORS = ",:;"

_JSON_INT_FIELDS = {"index": "index", "count": "count", "devmem": "memory", "devcore": "cores", "numa": "numa"}
_MAX_ANNOTATION = 1 << 20  # 1 MiB: far above any real device list, bounds work on hostile input


def _check_size(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise AnnotationError(f"{what}: expected a string, got {type(text).__name__}")
    if len(text) > _MAX_ANNOTATION:
        raise AnnotationError(f"{what}: {len(text)} characters is larger than any valid annotation")
    return text


def _separator_free(value: str, what: str, separators: str) -> str:
    bad = [c for c in separators if c in value]
    if bad:
        raise AnnotationError(f"{what}={value!r} contains {''.join(bad)!r}, which the encoding uses as a separator")
    return value


def check_device_id(value: str, what: str = "device id") -> str:
    """A device id usable in every HAMi encoding: 1..256 printable characters, no ``,:;`` or whitespace."""
    if not value or len(value) > MAX_DEVICE_ID:
        raise AnnotationError(f"{what}={value[:80]!r} must have 1 to {MAX_DEVICE_ID} characters, has {len(value)}")
    bad = sorted({c for c in value if c in _ID_SEPARATORS or c.isspace() or not c.isprintable()})
    if bad:
        raise AnnotationError(
            f"{what}={value[:80]!r} contains {''.join(bad)!r}: HAMi's separators, whitespace and control characters are refused"
        )
    return value


def check_node_device(device: SchedulableDevice, where: str) -> SchedulableDevice:
    """Refuse a registered device outside the bounds above; the message names the field and the limit."""
    check_device_id(device.id, f"{where}: id")
    for field, value, limit in (
        ("devmem", device.memory, MAX_DEVICE_MEMORY_MIB),
        ("count", device.count, MAX_DEVICE_SLOTS),
        ("devcore", device.cores, MAX_DEVICE_CORES),
        ("index", device.index, MAX_DEVICE_INDEX),
        ("numa", device.numa, MAX_DEVICE_INDEX),
    ):
        if value > limit:
            raise AnnotationError(f"{where}: {field}={str(value)[:40]} is larger than {limit}, more than any device has")
    return device


# ---------------------------------------------------------------- node device list, JSON


def encode_node_devices_json(devices: Iterable[SchedulableDevice]) -> str:
    return json.dumps(
        [
            {
                "id": d.id,
                "index": d.index,
                "count": d.count,
                "devmem": d.memory,
                "devcore": d.cores,
                "type": d.type,
                "numa": d.numa,
                "mode": d.mode,
                PARTITIONS_KEY: partitions_to_wire(d.partitions, d.id),
                "health": d.healthy,
            }
            for d in devices
        ],
        separators=(",", ":"),
    )


def decode_node_devices_json(text: str, vendor: str) -> tuple[SchedulableDevice, ...]:
    text = _check_size(text, f"{vendor} node device list")
    try:
        items = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise AnnotationError(f"{vendor} node device list is not JSON ({exc}): {text[:80]!r}") from None
    if not isinstance(items, list):
        raise AnnotationError(f"{vendor} node device list must be a JSON array, got {type(items).__name__}")
    return tuple(_device_from_json(item, vendor, position) for position, item in enumerate(items))


def _device_from_json(item: Any, vendor: str, position: int) -> SchedulableDevice:
    where = f"{vendor} node device #{position}"
    if not isinstance(item, dict):
        raise AnnotationError(f"{where}: expected an object, got {item!r:.80}")
    fields: dict[str, Any] = {}
    for key, field in _JSON_INT_FIELDS.items():
        value = item.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int):
            raise AnnotationError(f"{where}: {key}={value!r:.80} is not an integer")
        fields[field] = value
    for key in ("id", "type", "mode"):
        value = item.get(key, "")
        if not isinstance(value, str):
            raise AnnotationError(f"{where}: {key}={value!r:.80} is not a string")
        fields[key] = value
    health = item.get("health", False)
    if not isinstance(health, bool):
        raise AnnotationError(f"{where}: health={health!r:.80} is not a boolean")
    partitions = partitions_from_wire(item.get(PARTITIONS_KEY) or [], where)
    try:
        device = SchedulableDevice(vendor=vendor, healthy=health, partitions=partitions, **fields)
    except ValidationError as exc:
        raise AnnotationError(f"{where}: {exc}") from None
    return check_node_device(device, where)


# ---------------------------------------------------------------- partition profiles


def _wire_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT32:
        raise AnnotationError(f"{what}={value!r:.80} is not an integer from 0 to {_MAX_INT32}")
    return value


def _flat(partitions: Any, what: str) -> list[Any]:
    """Profiles, with layouts (lists of profiles, our older form) flattened."""
    if not isinstance(partitions, (list, tuple)):
        raise AnnotationError(f"{what}: {PARTITIONS_KEY}={partitions!r:.80} is not a list")
    out: list[Any] = []
    for item in partitions:
        out.extend(item if isinstance(item, (list, tuple)) else [item])
    return out


def partitions_to_wire(partitions: Sequence[Any], device: str) -> list[dict[str, Any]]:
    """``partitions`` as HAMi's list of profile objects; each a mapping with the generic keys of
    :data:`PARTITION_FIELDS` (missing numbers are 0, a missing ``memory`` may be given as ``memoryMB``)."""
    out = []
    for position, item in enumerate(_flat(partitions, f"device {device!r}")):
        what = f"device {device!r} partition #{position}"
        if not isinstance(item, Mapping):
            raise AnnotationError(f"{what}: {item!r:.80} is not a mapping")
        name = item.get("name", "")
        if not isinstance(name, str):
            raise AnnotationError(f"{what}: name={name!r:.80} is not a string")
        placements = item.get("placements") or ()
        if not isinstance(placements, (list, tuple)):
            raise AnnotationError(f"{what}: placements={placements!r:.80} is not a list")
        out.append(
            {
                "name": name,
                "memoryMB": _wire_int(item.get("memory", item.get("memoryMB", 0)), f"{what}: memory"),
                "core": _wire_int(item.get("cores", 0), f"{what}: cores"),
                "sliceCount": _wire_int(item.get("slices", 0), f"{what}: slices"),
                "placements": [_placement(p, f"{what} placement") for p in placements],
            }
        )
    return out


def _placement(item: Any, what: str) -> dict[str, int]:
    if not isinstance(item, Mapping):
        raise AnnotationError(f"{what}: {item!r:.80} is not an object with start and size")
    return {"start": _wire_int(item.get("start", 0), f"{what}: start"), "size": _wire_int(item.get("size", 0), f"{what}: size")}


def partitions_from_wire(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    """HAMi's profile list (:data:`PARTITIONS_KEY`, or our older list of layouts) as generic partitions; every number bounded
    to what Go's int32/uint32 fields hold, so what we re-encode HAMi can read."""
    out = []
    for position, item in enumerate(_flat(value, where)):
        what = f"{where}: {PARTITIONS_KEY} #{position}"
        if not isinstance(item, dict):
            raise AnnotationError(f"{what}: {item!r:.80} is not an object")
        name = item.get("name", "")
        if not isinstance(name, str):
            raise AnnotationError(f"{what}: name={name!r:.80} is not a string")
        placements = item.get("placements") or []
        if not isinstance(placements, list):
            raise AnnotationError(f"{what}: placements={placements!r:.80} is not a list")
        memory = item["memoryMB"] if "memoryMB" in item else item.get("memory", 0)  # "memory": our older form
        out.append(
            {
                "name": name,
                "memory": _wire_int(memory, f"{what}: memoryMB"),
                "cores": _wire_int(item.get("core", 0), f"{what}: core"),
                "slices": _wire_int(item.get("sliceCount", 0), f"{what}: sliceCount"),
                "placements": tuple(_placement(p, f"{what} placement") for p in placements),
            }
        )
    return tuple(out)


# ---------------------------------------------------------------- node device list, CSV (legacy)


_PARSE_BOOL = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
"""Go's strconv.ParseBool, which HAMi's DecodeNodeDevices reads the health field with."""


def encode_node_devices_csv(devices: Iterable[SchedulableDevice]) -> str:
    parts = []
    for d in devices:
        _separator_free(d.id, "device id", ",:")
        _separator_free(d.type, "device type", ",:")
        _separator_free(d.mode, "device mode", ",:")
        fields = [d.id, d.count, d.memory, d.cores, d.type, d.numa, str(d.healthy).lower(), d.index, d.mode]
        parts.append(",".join(map(str, fields)) + ":")
    return "".join(parts)


def decode_node_devices_csv(text: str, vendor: str) -> tuple[SchedulableDevice, ...]:
    text = _check_size(text, f"{vendor} node device list")
    devices = []
    for position, entry in enumerate(e for e in text.split(":") if e.strip()):
        where = f"{vendor} node device #{position} {entry[:80]!r}"
        fields = entry.split(",")
        if len(fields) not in (7, 9):
            raise AnnotationError(f"{where}: expected 7 or 9 comma-separated fields, got {len(fields)}")
        if fields[6] not in _PARSE_BOOL:
            raise AnnotationError(f"{where}: health={fields[6]!r} is not a boolean ({', '.join(sorted(_PARSE_BOOL))})")
        try:
            devices.append(
                SchedulableDevice(
                    id=fields[0],
                    vendor=vendor,
                    count=_int(fields[1], "count", where),
                    memory=_int(fields[2], "devmem", where),
                    cores=_int(fields[3], "devcore", where),
                    type=fields[4],
                    numa=_int(fields[5], "numa", where),
                    healthy=_PARSE_BOOL[fields[6]],
                    index=_int(fields[7], "index", where) if len(fields) == 9 else 0,
                    mode=fields[8] if len(fields) == 9 else "",
                )
            )
            check_node_device(devices[-1], where)
        except ValidationError as exc:
            raise AnnotationError(f"{where}: {exc}") from None
    return tuple(devices)


def _int(text: str, field: str, where: str) -> int:
    if not text.isascii() or not text.lstrip("-").isdigit() or len(text) > 20:
        raise AnnotationError(f"{where}: {field}={text!r} is not an integer")
    return int(text)


# ---------------------------------------------------------------- dispatch by encoding


def encode_node_devices(devices: Iterable[SchedulableDevice], encoding: Encoding) -> str:
    return encode_node_devices_csv(devices) if encoding == "csv" else encode_node_devices_json(devices)


def decode_node_devices(text: str, vendor: str, encoding: Encoding) -> tuple[SchedulableDevice, ...]:
    """Either form, whatever the kind writes: HAMi <= 2.7 device plugins registered their devices in
    the CSV form (pkg/util/util.go ``EncodeNodeDevices``, 7 fields in v2.4, 9 from v2.5), later ones
    in JSON, so a node of a cluster being migrated may carry either. A JSON list starts with ``[``."""
    text = _check_size(text, f"{vendor} node device list")
    is_json = text.lstrip().startswith("[")
    if encoding == "csv" and not is_json:
        return decode_node_devices_csv(text, vendor)
    return decode_node_devices_json(text, vendor) if is_json else decode_node_devices_csv(text, vendor)


# ---------------------------------------------------------------- pod allocation


def encode_pod_devices(containers: Sequence[Sequence[Grant]]) -> str:
    out = []
    for grants in containers:
        for g in grants:
            _separator_free(g.id, "device id", ",:;")
            _separator_free(g.vendor, "vendor", ",:;")
            out.append(f"{g.id},{g.vendor},{g.memory},{g.cores}:")
        out.append(";")
    return "".join(out)


def decode_pod_devices(text: str) -> PodDevices:
    text = _check_size(text, "pod device allocation")
    entries = text.split(";")
    if entries[-1] == "":
        entries.pop()  # every container entry is terminated by ';'
    containers = []
    for position, entry in enumerate(entries):
        grants = []
        for device in (d for d in entry.split(":") if d != ""):
            where = f"pod device allocation, container #{position}, device {device[:80]!r}"
            fields = device.split(",")
            if len(fields) != 4:
                raise AnnotationError(f"{where}: expected <uuid>,<vendor>,<usedmem>,<usedcores>")
            try:
                grants.append(Grant(fields[0], fields[1], _int(fields[2], "usedmem", where), _int(fields[3], "usedcores", where)))
            except ValidationError as exc:
                raise AnnotationError(f"{where}: {exc}") from None
        containers.append(tuple(grants))
    return tuple(containers)
