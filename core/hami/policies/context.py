"""What the packing policies read from a pod beyond its device requests.

The cluster view they need (node CPU and memory, the backends' predicate, a seed) comes with every
scoring call (:class:`hami.plugin.policy.ClusterView`); these helpers read the pod itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hami.errors import QuantityError
from hami.plugin.policy import HostView
from hami.wire.quantity import parse_quantity


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


__all__: Sequence[str] = ["HostView", "pod_host_request", "pod_uid", "selector_signature"]
