"""Does a pod's nodeSelector and required node affinity allow a node? (kube-scheduler's NodeAffinity
filter, k8s.io/component-helpers/scheduling/corev1/nodeaffinity.) kube-scheduler checks this before it
calls bind; the extender checks again so that a bind request alone cannot place a pod elsewhere."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _expression_allows(expression: Mapping[str, Any], values_of: Mapping[str, str]) -> bool:
    key = expression.get("key")
    operator = expression.get("operator")
    values = expression.get("values") or []
    present = key in values_of
    value = values_of.get(key) if isinstance(key, str) else None
    if operator == "In":
        return present and value in values
    if operator == "NotIn":
        return not present or value not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        try:
            have, bound = int(str(value)), int(str(values[0]))
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False  # an operator the API server would not have admitted


def _term_allows(term: Mapping[str, Any], node: str, labels: Mapping[str, str]) -> bool:
    """A term's expressions are ANDed; an empty term matches nothing (as upstream)."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    return all(_expression_allows(e, labels) for e in expressions) and all(_expression_allows(f, {"metadata.name": node}) for f in fields)


def node_refusal(pod: Mapping[str, Any], node: str, labels: Mapping[str, str]) -> str:
    """'' when ``pod`` may run on ``node`` (with ``labels``) by its nodeSelector and
    requiredDuringSchedulingIgnoredDuringExecution node affinity; else why not."""
    spec = pod.get("spec") or {}
    for key, wanted in sorted((spec.get("nodeSelector") or {}).items()):
        if labels.get(key) != wanted:
            return f"node {node!r} does not match the pod's nodeSelector {key}={wanted}"
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = required.get("nodeSelectorTerms")
    if terms is not None and not any(_term_allows(t, node, labels) for t in terms):  # terms are ORed
        return f"node {node!r} does not match the pod's required node affinity"
    return ""
