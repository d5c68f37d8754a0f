"""kube-scheduler's filter stage as the sandbox plays it, so the sandbox never places a pod a real
cluster would keep Pending.

What is modelled, with the upstream source it follows (kubernetes v1.35):

- the pod's requests (``k8s.io/component-helpers/resource`` ``PodRequests``): every container's
  requests (a limit without a request is the request, as the API server defaults it), app containers
  and restartable (sidecar) init containers summed, each plain init container (plus the sidecars
  started before it) as a maximum, ``spec.overhead`` added;
- the filter plugins per node, in the default profile's order, the first failing one deciding the
  node's reasons: NodeUnschedulable, TaintToleration (NoSchedule/NoExecute), NodeAffinity
  (nodeSelector and required node affinity, ``hami.scheduler.affinity``), NodeResourcesFit
  (``pkg/scheduler/framework/plugins/noderesources/fit.go`` ``fitsRequest``: pods, cpu, memory,
  ephemeral-storage, then every scalar resource; extended resources an extender marks
  ``ignoredByScheduler`` skipped);
- the extender's filter answer merged into the node statuses (``schedule_one.go``
  ``findNodesThatPassExtenders``), and the message (``FitError.Error``: ``0/N nodes are available:``
  then ``"<count> <reason>"`` strings sorted as strings, joined with ``", "``, and a full stop).

- how many nodes are filtered: ``numFeasibleNodesToFind`` from a start index that moves on by the
  nodes processed (``findNodesThatPassFilters``); where the extender refuses every node of that
  window the sandbox goes on with the next one, as kube-scheduler's retries of the pod would (a
  pod stays Pending only when no node fits).

Not modelled: preemption (a real event goes on with ``preemption: 0/N nodes are available: …``),
inter-pod affinity, topology spread, ports, volumes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_CEILING, Decimal
from typing import Any

from hami.k8snames import is_extended_resource_name
from hami.scheduler.affinity import node_refusal
from hami.wire.quantity import parse_quantity

NO_NODE_AVAILABLE = "0/{} nodes are available"
AFFINITY_MISMATCH = "node(s) didn't match Pod's node affinity/selector"
UNSCHEDULABLE = "node(s) were unschedulable"
TOO_MANY_PODS = "Too many pods"
_FIRST = ("cpu", "memory", "ephemeral-storage")
_TAINT_EFFECTS = ("NoSchedule", "NoExecute")


def _container_requests(container: Mapping[str, Any]) -> dict[str, Decimal]:
    """A container's requests after API defaulting: a limit without a request is the request."""
    resources = container.get("resources") or {}
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {name: parse_quantity(value) for name, value in merged.items()}


def _add(total: dict[str, Decimal], more: Mapping[str, Decimal]) -> None:
    for name, value in more.items():
        total[name] = total.get(name, Decimal(0)) + value


def pod_requests(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """What the pod asks of a node (``PodRequests``): apps and sidecars summed, init containers as a maximum, overhead added."""
    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        _add(total, _container_requests(container))
    sidecars: dict[str, Decimal] = {}
    init_peak: dict[str, Decimal] = {}
    for container in spec.get("initContainers") or []:
        asked = _container_requests(container)
        if container.get("restartPolicy") == "Always":  # a sidecar runs beside everything after it
            _add(total, asked)
            _add(sidecars, asked)
            continue
        during = dict(sidecars)
        _add(during, asked)
        for name, value in during.items():
            init_peak[name] = max(init_peak.get(name, Decimal(0)), value)
    for name, value in init_peak.items():
        total[name] = max(total.get(name, Decimal(0)), value)
    _add(total, {name: parse_quantity(value) for name, value in (spec.get("overhead") or {}).items()})
    return total


def _units(name: str, value: Decimal) -> int:
    """The integer kube-scheduler compares: millicores for cpu, else the value rounded up."""
    scaled = value * 1000 if name == "cpu" else value
    return int(scaled.to_integral_value(rounding=ROUND_CEILING))


def fit_reasons(
    asked: Mapping[str, Decimal],
    allocatable: Mapping[str, Any],
    requested: Mapping[str, Decimal],
    pods_on_node: int,
    ignored: frozenset[str],
) -> list[str]:
    """NodeResourcesFit's reasons for one node (empty: the pod fits); ``requested`` is what the node's pods already ask."""
    reasons = []
    if pods_on_node + 1 > _units("pods", parse_quantity(allocatable.get("pods", 0))):
        reasons.append(TOO_MANY_PODS)
    if not any(value for value in asked.values()):
        return reasons
    names = [n for n in _FIRST if n in asked] + sorted(n for n in asked if n not in _FIRST and n != "pods")
    for name in names:
        want = _units(name, asked[name])
        if want == 0 or (is_extended_resource_name(name) and name in ignored):
            continue
        free = _units(name, parse_quantity(allocatable.get(name, 0))) - _units(name, requested.get(name, Decimal(0)))
        if want > free:
            reasons.append(f"Insufficient {name}")
    return reasons


def _tolerated(taint: Mapping[str, Any], tolerations: Iterable[Mapping[str, Any]]) -> bool:
    for toleration in tolerations:
        if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
            continue
        if toleration.get("operator") == "Exists":
            if not toleration.get("key") or toleration.get("key") == taint.get("key"):
                return True
        elif toleration.get("key") == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def node_reasons(
    pod: Mapping[str, Any],
    node: Mapping[str, Any],
    asked: Mapping[str, Decimal],
    requested: Mapping[str, Decimal],
    pods_on_node: int,
    ignored: frozenset[str],
) -> list[str]:
    """The first failing filter plugin's reasons for ``node`` (a Node object as the API server serves it); empty when it passes."""
    spec, status = node.get("spec") or {}, node.get("status") or {}
    meta = node.get("metadata") or {}
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    if spec.get("unschedulable") and not any(
        t.get("key") == "node.kubernetes.io/unschedulable" or (t.get("operator") == "Exists" and not t.get("key")) for t in tolerations
    ):
        return [UNSCHEDULABLE]
    for taint in spec.get("taints") or []:
        if taint.get("effect") in _TAINT_EFFECTS and not _tolerated(taint, tolerations):
            return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"]
    if node_refusal(pod, str(meta.get("name")), meta.get("labels") or {}):
        return [AFFINITY_MISMATCH]
    return fit_reasons(asked, status.get("allocatable") or {}, requested, pods_on_node, ignored)


def merge_extender(statuses: dict[str, list[str]], answer: Mapping[str, Any]) -> None:
    """An extender's failed nodes join the plugins' reasons, as ``findNodesThatPassExtenders`` merges them."""
    unresolvable = answer.get("FailedAndUnresolvableNodes") or {}
    for node, message in unresolvable.items():
        statuses.setdefault(node, []).append(message)
    for node, message in (answer.get("FailedNodes") or {}).items():
        if node not in unresolvable:
            statuses.setdefault(node, []).append(message)


MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5


def feasible_nodes_to_find(total_nodes: int, percentage: int = 0) -> int:
    """How many feasible nodes kube-scheduler looks for before it stops filtering
    (``pkg/scheduler/schedule_one.go`` ``numFeasibleNodesToFind``; ``percentage`` 0 is the default
    ``percentageOfNodesToScore``: adaptive, 50 % minus one point per 125 nodes, at least 5 %).
    Every node up to 100; why it matters here: at 500 nodes a pod is filtered (and sent to the
    extender) against 230 nodes, not 500."""
    if total_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return total_nodes
    if percentage <= 0:
        percentage = max(50 - total_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return max(total_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


def fit_error(total_nodes: int, statuses: Mapping[str, Sequence[str]]) -> str:
    """``FitError.Error()``: ``0/5 nodes are available: 5 Insufficient acme.com/xpu.``"""
    histogram = Counter(reason for reasons in statuses.values() for reason in reasons)
    message = NO_NODE_AVAILABLE.format(total_nodes) + ":"
    if histogram:
        message += " " + ", ".join(sorted(f"{count} {reason}" for reason, count in histogram.items())) + "."
    return message
