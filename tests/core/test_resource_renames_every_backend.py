"""Every installed backend reads and writes only the resource names its ``resource_names`` config gives.

HAMi's chart renames the resources (charts/hami/values.yaml ``resourceName``, ``resourceMem``,
``resourceCores``, …; pkg/device/nvidia/device.go reads ``ResourceCountName`` & co. from the
device config) so it can run beside a vendor's own device plugin (HAMi issues #1708, #2076, #829).
A backend that reads a name from a module constant instead of the renamed kind would ignore a
renamed request, or answer the vendor plugin's resource as if it were ours. For every backend and
every kind: a container written with the renamed names must be read exactly as the same container
written with the declared names is read without renames (requests, webhook patch, warnings and
errors, with the names swapped back), and the declared names alone must mean nothing to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import Any

import pytest

from hami.errors import HamiError
from hami.plugin import ENTRY_POINT_GROUP
from hami.plugin.manager import BackendManager
from hami.plugin.model import BackendInfo, DeviceKind

ROLES = ("count", "memory", "memory_percentage", "cores")  # hami.plugin.naming: the renamable ResourceNames roles

VALUES = ("0", "1", "2", "3", "25", "100", "150", "1024")


def _backends() -> list[tuple[str, object]]:
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return [(name, found[name].load()) for name in sorted(found)]


BACKENDS = _backends()


def _renamed(name: str) -> str:
    domain, short = name.split("/", 1)
    return f"{domain}/x-{short}"


def _roles(kind: DeviceKind) -> dict[str, str]:
    names = kind.resources
    roles = {role: getattr(names, role) for role in ROLES if getattr(names, role) is not None}
    roles.update({extra.split("/", 1)[1]: extra for extra in names.extra})
    return roles


def _manager(name: str, plugin: object, config: Mapping[str, Any]) -> BackendManager:
    manager = BackendManager(strict=True, allow=(), deny=())
    manager.register(plugin, name=name, distribution="in-process")
    manager.configure(name, config)
    return manager


def _containers(kind: DeviceKind) -> list[dict[str, str]]:
    """Requests for one kind: each name alone, the count with each other name, at a few values."""
    roles = _roles(kind)
    count = roles.pop("count")
    out: list[dict[str, str]] = []
    for value in VALUES:
        out.append({count: value})
        for other in roles.values():
            out.append({other: value})
            out.append({count: "1", other: value})
            out.append({count: "2", other: value})
    return out


def _outcome(manager: BackendManager, resources: Mapping[str, str]) -> tuple[Any, ...]:
    container = {"name": "c", "resources": {"limits": dict(resources)}}
    pod = {"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [container]}}
    requests: Any
    try:
        requests = manager.container_requests(container, pod)
    except HamiError as exc:
        requests = f"{type(exc).__name__}: {exc}"
    try:
        patch = manager.mutate_container(container, pod)
        mutation: Any = (dict(patch.limits), list(patch.warnings), list(patch.remove))
    except HamiError as exc:
        mutation = f"{type(exc).__name__}: {exc}"
    return requests, mutation


def _swap(value: Any, back: Mapping[str, str]) -> Any:
    """``value`` with every renamed name written back as the declared one (longest first)."""
    if isinstance(value, str):
        for new in sorted(back, key=len, reverse=True):
            value = value.replace(new, back[new])
        return value
    if isinstance(value, dict):
        return {_swap(k, back): _swap(v, back) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_swap(v, back) for v in value)
    return value


@pytest.mark.parametrize(("name", "plugin"), BACKENDS, ids=[n for n, _ in BACKENDS])
def test_renamed_resources_are_read_like_the_declared_ones(name: str, plugin: object):
    info = plugin.hami_backend()  # type: ignore[attr-defined]
    assert isinstance(info, BackendInfo)
    several = len(info.kinds) > 1
    names = {k.vendor: {role: _renamed(n) for role, n in _roles(k).items()} for k in info.kinds}
    renames = names if several else names[info.kinds[0].vendor]
    declared = _manager(name, plugin, {})
    renamed = _manager(name, plugin, {"resource_names": renames})
    every = [n for k in info.kinds for n in _roles(k).values()]
    for kind in info.kinds:
        back = {_renamed(n): n for n in _roles(kind).values()}
        assert set(renamed.kinds[kind.vendor].resources.all()) == set(back)
        for resources in _containers(kind):
            expected = _outcome(declared, resources)
            got = _outcome(renamed, {_renamed(k): v for k, v in resources.items()})
            assert _swap(got, back) == expected, f"{kind.vendor} {resources}"
            # and what it tells the pod owner names the renamed resources only
            stale = [n for n in every if n in repr(got)]
            assert not stale, f"{kind.vendor} {resources}: {got} names {stale}"
            # the declared names now belong to someone else (e.g. the vendor's own device plugin)
            requests, mutation = _outcome(renamed, resources)
            assert requests == [], f"{kind.vendor} {resources}: {requests}"
            assert mutation == ({}, [], []), f"{kind.vendor} {resources}: {mutation}"
