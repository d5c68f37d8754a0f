"""Resource names an operator renames through a backend's config (``resource_names``).

Operators run HAMi beside another device plugin that already serves a vendor's usual resource names
(HAMi's ``resourceName``/``resourceMem``/… chart values; upstream issues #1708, #2076, #829), so
every backend's names can be renamed without code::

    backends:
      acme:
        resource_names: {count: acme.com/vxpu, memory: acme.com/vxpu-memory, priority: acme.com/vxpu-priority}

Keys are the :class:`ResourceNames` roles (``count``, ``memory``, ``memory_percentage``, ``cores``)
or the part after ``/`` of one of the kind's ``extra`` names (``priority`` for ``acme.com/priority``).
A backend with several kinds takes one such mapping per vendor key (``{ACME-X2: {count: …}}``).
The manager applies it when the backend is configured (webhook routing, quota, the agent's device
plugin, kube-scheduler's managed resources); :class:`hami.backendkit.standard.StandardBackend` reads
the same names from ``config`` with :func:`renamed_info`, so every component agrees.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from hami.errors import ValidationError
from hami.plugin.model import BackendInfo, DeviceKind

CONFIG_KEY = "resource_names"
_ROLES = ("count", "memory", "memory_percentage", "cores")


def _short(name: str) -> str:
    return name.split("/", 1)[-1]


def _renamed_kind(kind: DeviceKind, names: Mapping[str, Any], where: str) -> DeviceKind:
    if not isinstance(names, Mapping):
        raise ValidationError(f"{where}={names!r:.80}: must map a role (count, memory, …) to a resource name")
    current = kind.resources
    extras = {_short(e): e for e in current.extra}
    allowed = [r for r in _ROLES if r == "count" or getattr(current, r) is not None] + sorted(extras)
    fields: dict[str, Any] = {}
    extra = list(current.extra)
    for role, value in names.items():
        if value in (None, ""):
            continue  # unset: the backend's own name stays
        if role not in allowed:
            raise ValidationError(f"{where}.{role}: {kind.vendor} has no such resource (renamable: {', '.join(allowed)})")
        if not isinstance(value, str):
            raise ValidationError(f"{where}.{role}={value!r:.80}: must be a resource name such as example.com/{role}")
        if role in _ROLES:
            fields[role] = value.strip()
        else:
            extra[extra.index(extras[role])] = value.strip()
    if not fields and extra == list(current.extra):
        return kind
    try:
        resources = attrs.evolve(current, **fields, extra=tuple(extra))
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from None
    taken = [n for n in resources.all() if resources.all().count(n) > 1]
    if taken:
        raise ValidationError(f"{where}: resource name {taken[0]!r} is given to two roles of {kind.vendor}")
    return attrs.evolve(kind, resources=resources)


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


_CACHE: dict[tuple[BackendInfo, Any], BackendInfo] = {}
_CACHE_SIZE = 64


def _rename(info: BackendInfo, names: Any) -> BackendInfo:
    where = f"backends.{info.name}.{CONFIG_KEY}"
    if not isinstance(names, Mapping):
        raise ValidationError(f"{where}={names!r:.80}: must be a mapping")
    vendors = set(info.vendors)
    per_kind = bool(names) and set(names) <= vendors and all(isinstance(v, Mapping) for v in names.values())
    if not per_kind and len(info.kinds) > 1:
        raise ValidationError(
            f"{where}: {info.name} serves several device kinds ({', '.join(info.vendors)}); give the names per vendor key"
        )
    kinds = [
        _renamed_kind(k, names.get(k.vendor) or {}, f"{where}.{k.vendor}") if per_kind else _renamed_kind(k, names, where)
        for k in info.kinds
    ]
    every = [n for k in kinds for n in k.resources.all()]
    clash = sorted({n for n in every if every.count(n) > 1})
    if clash:
        raise ValidationError(f"{where}: resource name {clash[0]!r} is used by two device kinds")
    return attrs.evolve(info, kinds=kinds)


def renamed_info(info: BackendInfo, config: Mapping[str, Any]) -> BackendInfo:
    """``info`` with the resource names of ``config[resource_names]`` (``info`` itself when none).
    Cached per value, since request hooks call it for every container."""
    names = config.get(CONFIG_KEY) if isinstance(config, Mapping) else None
    if not names:
        return info
    try:
        key = (info, _frozen(names))
        found = _CACHE.get(key)
    except TypeError:  # an unhashable value somewhere: still answer, uncached
        return _rename(info, names)
    if found is None:
        found = _rename(info, names)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = found
    return found
