"""HAMi's request rules for a device kind with the usual resource shape, for backends to reuse.

count given → that many devices; only memory, percentage or cores given → one device; memory and
percentage together → memory wins; neither (or 0, which means "unset" as in HAMi) →
``default_memory`` MiB when configured, else 100 % of each device; a percentage over 100 is refused;
cores default to ``default_cores`` and are clamped to 100. Limits are read first, then requests
(Kubernetes requires them equal for extended resources). Device memory is a plain number of MiB; a
byte quantity such as ``3Gi`` is refused with the MiB value to write (:func:`parse_memory_mib`).
:func:`request_warnings` words what the rules changed, for the admission response.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hami.errors import QuantityError, RequestError, ValidationError
from hami.plugin.model import MAX_REQUEST_CORES, DeviceKind, DeviceRequest
from hami.wire.quantity import parse_count


def container_resources(container: Mapping[str, Any]) -> dict[str, Any]:
    """The container's resource quantities, limits winning over requests."""
    resources = container.get("resources") or {}
    return {**(resources.get("requests") or {}), **(resources.get("limits") or {})}


_MIB = 1 << 20
_BYTE_SUFFIX = re.compile(r"(?:[KMGTPE]i|[MGTPE])$")
_EXPONENT = re.compile(r"[eE]([+-]?\d+)$")


def _byte_notation(text: str) -> bool:
    """Written as bytes: a binary suffix (Ki…Ei), a decimal suffix of a million or more (M…E), or
    an exponent of 6 or more. ``k`` and small exponents are how the API server writes plain numbers
    (it stores ``3000`` as ``3k``), so they stay plain."""
    exponent = _EXPONENT.search(text)
    if exponent:
        return int(exponent[1]) >= 6
    return bool(_BYTE_SUFFIX.search(text))


def parse_memory_mib(value: str | int, name: str, *, unit_mib: int = 1) -> int:
    """A device-memory quantity as a whole number of MiB, HAMi's unit for memory resources (or of
    ``unit_mib`` MiB for a resource counted in larger slices; the number is returned as written).

    HAMi reads the quantity's ``Value()`` (``resourceValue`` in upstream pkg/device/nvidia/device.go),
    so ``acme.com/gpumem: 3Gi`` asks for 3221225472 MiB and the pod stays Pending on every node. We
    differ on purpose: a quantity written as bytes is refused at admission, naming the MiB value to
    write (3Gi → 3072; a value that is not whole MiB is rounded up). ``Mi`` is refused too, although
    ``3000Mi`` would map exactly: the API server rewrites ``4096Mi`` as ``4Gi`` before the webhook
    sees it, so accepting ``Mi`` would work for some values and not others; "a plain number of MiB"
    is the rule a user can predict. Decimal ``M`` and above are refused as bytes too: a million MiB
    is no device's memory, while ``3G`` is a common way to write three gigabytes.
    """
    amount = parse_count(value, name)
    text = value.strip() if isinstance(value, str) else ""
    if not _byte_notation(text):
        return amount
    mib = -(-amount // _MIB)
    relation = "=" if amount % _MIB == 0 else "≈"
    if unit_mib == 1:
        raise QuantityError(
            f"{name}={value!r} is written as bytes, but HAMi counts device memory in MiB, as a plain number: "
            f"{text} {relation} {mib} MiB, so write {name}: {mib} (read as MiB, {text} would ask for {amount} MiB)"
        )
    units = -(-mib // unit_mib)
    raise QuantityError(
        f"{name}={value!r} is written as bytes, but {name} counts slices of {unit_mib} MiB, as a plain number: "
        f"{text} {relation} {mib} MiB, so write {name}: {units}"
    )


def _read(resources: Mapping[str, Any], name: str | None, where: str, *, memory_unit: int = 0) -> int | None:
    if name is None or name not in resources:
        return None
    try:
        return parse_memory_mib(resources[name], name, unit_mib=memory_unit) if memory_unit else parse_count(resources[name], name)
    except QuantityError as exc:
        raise RequestError(f"{where}: {exc}") from None


def standard_request(
    container: Mapping[str, Any],
    kind: DeviceKind,
    *,
    default_memory: int = 0,
    default_cores: int = 0,
    count_aliases: tuple[str, ...] = (),
    memory_unit_mib: int = 1,
) -> DeviceRequest | None:
    """The container's request for ``kind``, or None when it asks nothing of it. ``memory_unit_mib``
    only words the error for a byte quantity (a backend that counts memory in slices multiplies later)."""
    resources = container_resources(container)
    names = kind.resources
    where = f"container {container.get('name')!r}"
    count = _read(resources, names.count, where)
    for alias in count_aliases:
        if count is None:
            count = _read(resources, alias, where)
    memory = _read(resources, names.memory, where, memory_unit=memory_unit_mib)
    percentage = _read(resources, names.memory_percentage, where)
    cores = _read(resources, names.cores, where)
    if count is None and memory is None and percentage is None and cores is None:
        return None
    if count == 0:
        if memory or percentage or cores:
            raise RequestError(f"{where}: {names.count}=0 together with a memory or core request")
        return None
    if percentage is not None and percentage > 100:
        # upstream pkg/device/nvidia/device.go validateMemoryPercentage refuses it at admission too
        raise RequestError(
            f"{where}: {names.memory_percentage}={percentage} is over 100 (a percentage of each device's memory: give 1-100)"
        )
    # 0 is "unset" (upstream GenerateResourceRequests): a 0 MiB grant would become a 0 memory limit,
    # which HAMi-core reads as no limit at all. Memory wins over a percentage (upstream Fit).
    memory, percentage = memory or None, percentage or None
    if memory is not None:
        percentage = None
    cores = min(default_cores if cores is None else cores, MAX_REQUEST_CORES)  # upstream Fit clamps (Coresreq > 100)
    if memory is None and percentage is None:
        memory, percentage = (default_memory, None) if default_memory else (0, 100)
    try:
        return DeviceRequest(
            vendor=kind.vendor, count=1 if count is None else count, memory=memory or 0, memory_percentage=percentage, cores=cores
        )
    except ValidationError as exc:
        raise RequestError(f"{where}: {exc}") from None


def request_warnings(container: Mapping[str, Any], kind: DeviceKind) -> list[str]:
    """What :func:`standard_request` does to the container's values that the user may not expect
    (a percentage ignored beside memory, cores clamped, 0 read as unset): admission warnings."""
    resources = container_resources(container)
    names = kind.resources
    where = f"container {container.get('name')!r}"
    found: list[str] = []
    try:
        memory = _read(resources, names.memory, where, memory_unit=1)
        percentage = _read(resources, names.memory_percentage, where)
        cores = _read(resources, names.cores, where)
    except (RequestError, QuantityError):
        return []  # the request itself reports the bad value
    if memory and percentage:
        found.append(f"{where}: {names.memory}={memory} and {names.memory_percentage}={percentage} both given; the memory amount is used")
    if cores is not None and cores > MAX_REQUEST_CORES:
        found.append(f"{where}: {names.cores}={cores} is clamped to {MAX_REQUEST_CORES} (percent of one device)")
    if percentage == 0 and not memory:
        found.append(f"{where}: {names.memory_percentage}=0 means unset: the device's whole memory (or the configured default) is granted")
    return found
