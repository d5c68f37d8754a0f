"""What a packing policy may know beyond the hook arguments, handed over with ``attach``.

The scoring hooks carry a node's devices, not its CPU and memory, and a policy cannot ask the
backend whether a pod's type selector admits a device type. Packing policies (best-fit, FGD) do
better with both, so a host (the simulator today; the extender once its cache tracks host
resources) attaches a :class:`PolicyContext` to every plugin that offers ``attach``. Without one,
the policies still work, on device capacity alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from hami.errors import QuantityError
from hami.wire.quantity import parse_quantity


class HostView(Protocol):
    """Free and total CPU (milli) and memory (MiB) per node, as live arrays indexed by :meth:`index`."""

    cpu_free: Any
    mem_free: Any
    cpu_total: Any
    mem_total: Any

    def index(self, node: str) -> int | None:
        """The node's position in ``cpu_free``/``mem_free``; None when unknown (treated as unlimited)."""


@attrs.frozen
class PolicyContext:
    manager: Any = None
    """The :class:`hami.plugin.manager.BackendManager`: lets a policy ask ``device_fits`` which device
    types a pod's selectors admit."""
    host: HostView | None = None
    seed: int | None = None
    """For policies that draw random numbers: a seed makes a run reproducible."""


@runtime_checkable
class Attachable(Protocol):
    def attach(self, context: PolicyContext) -> None: ...


def attach_policies(manager: Any, context: PolicyContext) -> int:
    """Give ``context`` to every registered plugin that takes one; returns how many did."""
    count = 0
    for plugin in manager.pm.get_plugins():
        if isinstance(plugin, Attachable) and not isinstance(plugin, type):
            plugin.attach(context)
            count += 1
    return count


def _milli_cpu(value: Any) -> int:
    try:
        return int(parse_quantity(str(value)) * 1000)
    except QuantityError:
        return 0


def _mib(value: Any) -> int:
    try:
        return int(parse_quantity(str(value)) / (1 << 20))
    except QuantityError:
        return 0


def _host_resources(container: Mapping[str, Any]) -> Mapping[str, Any]:
    """Requests, falling back to limits (the scheduler's rule for cpu and memory)."""
    resources = container.get("resources") or {}
    return {**(resources.get("limits") or {}), **(resources.get("requests") or {})}


def pod_host_request(pod: Mapping[str, Any]) -> tuple[int, int]:
    """(CPU milli, memory MiB) the pod asks of its node: the sum of its containers, or its largest
    init container when that is more (the kubelet's rule)."""
    spec = pod.get("spec") or {}
    cpu = mem = 0
    for container in spec.get("containers") or ():
        resources = _host_resources(container)
        cpu += _milli_cpu(resources.get("cpu", 0))
        mem += _mib(resources.get("memory", 0))
    for container in spec.get("initContainers") or ():
        resources = _host_resources(container)
        cpu = max(cpu, _milli_cpu(resources.get("cpu", 0)))
        mem = max(mem, _mib(resources.get("memory", 0)))
    return cpu, mem


def pod_uid(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}")


def selector_signature(pod: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The pod's annotations a backend predicate might read (everything but hami's own)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return tuple(sorted((k, str(v)) for k, v in annotations.items() if not k.startswith("hami.io/")))


__all__: Sequence[str] = ["Attachable", "HostView", "PolicyContext", "attach_policies", "pod_host_request", "pod_uid", "selector_signature"]
