"""HAMi's request rules for a device kind with the usual resource shape, for backends to reuse.

count given → that many devices; only memory, percentage or cores given → one device; memory and
percentage are exclusive; neither → ``default_memory`` MiB when configured, else 100 % of each
device; cores default to ``default_cores`` and may not exceed 100. Limits are read first, then
requests (Kubernetes requires them equal for extended resources).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hami.errors import QuantityError, RequestError, ValidationError
from hami.plugin.model import MAX_REQUEST_CORES, DeviceKind, DeviceRequest
from hami.wire.quantity import parse_count


def container_resources(container: Mapping[str, Any]) -> dict[str, Any]:
    """The container's resource quantities, limits winning over requests."""
    resources = container.get("resources") or {}
    return {**(resources.get("requests") or {}), **(resources.get("limits") or {})}


def _read(resources: Mapping[str, Any], name: str | None, where: str) -> int | None:
    if name is None or name not in resources:
        return None
    try:
        return parse_count(resources[name], name)
    except QuantityError as exc:
        raise RequestError(f"{where}: {exc}") from None


def standard_request(
    container: Mapping[str, Any],
    kind: DeviceKind,
    *,
    default_memory: int = 0,
    default_cores: int = 0,
    count_aliases: tuple[str, ...] = (),
) -> DeviceRequest | None:
    """The container's request for ``kind``, or None when it asks nothing of it."""
    resources = container_resources(container)
    names = kind.resources
    where = f"container {container.get('name')!r}"
    count = _read(resources, names.count, where)
    for alias in count_aliases:
        if count is None:
            count = _read(resources, alias, where)
    memory = _read(resources, names.memory, where)
    percentage = _read(resources, names.memory_percentage, where)
    cores = _read(resources, names.cores, where)
    if count is None and memory is None and percentage is None and cores is None:
        return None
    if count == 0:
        if memory or percentage or cores:
            raise RequestError(f"{where}: {names.count}=0 together with a memory or core request")
        return None
    if memory is not None and percentage is not None:
        raise RequestError(f"{where}: {names.memory}={memory} and {names.memory_percentage}={percentage} are exclusive; give one")
    if percentage is not None and percentage > 100:
        raise RequestError(f"{where}: {names.memory_percentage}={percentage} is over 100")
    cores = default_cores if cores is None else cores
    if cores > MAX_REQUEST_CORES:
        raise RequestError(f"{where}: {names.cores}={cores} is over {MAX_REQUEST_CORES} (percent of one device)")
    if memory is None and percentage is None:
        memory, percentage = (default_memory, None) if default_memory else (0, 100)
    try:
        return DeviceRequest(vendor=kind.vendor, count=1 if count is None else count, memory=memory or 0, memory_percentage=percentage, cores=cores)
    except ValidationError as exc:
        raise RequestError(f"{where}: {exc}") from None
