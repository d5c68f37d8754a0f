"""HAMi's usage-based policies: ``binpack`` fills what is busy, ``spread`` balances load.

Node score = 10 × (Σused/Σslots + Σused cores/Σcores + Σused MiB/ΣMiB) over the node's devices,
before the pod lands. Device score = 10 × (ws·(1+used)/slots + wc·(req cores+used)/cores +
wm·(req MiB+used)/MiB), weights from ``hami.io/device-scoring-weights`` (default 1/1/1).
Binpack prefers the highest score, spread the lowest; policies return "higher is better", so spread
returns the negated score.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from hami.errors import RequestError
from hami.plugin.model import DeviceRequest, DeviceUsage, NodeUsage
from hami.plugin.policy import DevicePolicy, DeviceScoreContext, NodePolicy, Policy, ScoreContext
from hami.wire.annotations import SCORING_WEIGHTS as WEIGHTS_ANNOTATION


@attrs.frozen
class Weights:
    slot: float = 1.0
    core: float = 1.0
    memory: float = 1.0


def parse_weights(text: str) -> Weights:
    """``"slot=1,core=1,memory=3"``; unnamed weights stay 1."""
    values: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in ("slot", "core", "memory"):
            raise RequestError(f"{WEIGHTS_ANNOTATION}={text!r}: {part!r} is not slot=N, core=N or memory=N")
        try:
            value = float(raw)
        except ValueError:
            raise RequestError(f"{WEIGHTS_ANNOTATION}={text!r}: weight {raw.strip()!r} is not a number") from None
        if not 0 <= value <= 1000 or value != value:
            raise RequestError(f"{WEIGHTS_ANNOTATION}={text!r}: weight {raw.strip()!r} must be between 0 and 1000")
        values[key] = value
    return Weights(**values)


def _ratio(used: float, total: float) -> float:
    return used / total if total > 0 else 0.0


def node_usage_score(node: NodeUsage) -> float:
    devices = node.devices
    return 10 * (
        _ratio(sum(d.used for d in devices), sum(d.device.count for d in devices))
        + _ratio(sum(d.cores for d in devices), sum(d.device.cores for d in devices))
        + _ratio(sum(d.memory for d in devices), sum(d.device.memory for d in devices))
    )


def device_usage_score(request: DeviceRequest, device: DeviceUsage, weights: Weights) -> float:
    total = device.device
    return 10 * (
        weights.slot * _ratio(1 + device.used, total.count)
        + weights.core * _ratio(request.cores + device.cores, total.cores)
        + weights.memory * _ratio(request.memory_on(total) + device.memory, total.memory)
    )


def _weights(pod: Mapping[str, Any]) -> Weights:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return parse_weights(annotations[WEIGHTS_ANNOTATION]) if WEIGHTS_ANNOTATION in annotations else Weights()


class UsageNodePolicy(NodePolicy):
    """``binpack`` (sign 1) or ``spread`` (sign -1) at node level; depends on the node alone."""

    per_pod = False

    def __init__(self, name: str, sign: float, description: str) -> None:
        self.name, self.sign, self.description = name, sign, description

    def score_node(self, node: NodeUsage, context: ScoreContext) -> float:
        return self.sign * node_usage_score(node)


class UsageDevicePolicy(DevicePolicy):
    """``binpack`` or ``spread`` at device level, weighted by the pod's annotation."""

    def __init__(self, name: str, sign: float, description: str) -> None:
        self.name, self.sign, self.description = name, sign, description

    def score_device(self, device: DeviceUsage, context: DeviceScoreContext) -> float:
        return self.sign * device_usage_score(context.request, device, _weights(context.pod))


def usage_policies() -> list[Policy]:
    return [
        UsageNodePolicy("binpack", 1.0, "fill the busiest node first (HAMi's default)"),
        UsageNodePolicy("spread", -1.0, "put the pod on the least used node"),
        UsageDevicePolicy("binpack", 1.0, "fill the busiest device first"),
        UsageDevicePolicy("spread", -1.0, "put the container on the least used device (HAMi's default)"),
    ]
