"""Random-fit: a uniformly random node among those where the task fits, and a random device.

The scheduler walks nodes best score first and takes the first that fits, so random scores give a
uniform choice among fitting nodes. Seeded through ``attach`` so a simulation is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hami.plugin import hookimpl
from hami.plugin.model import DeviceRequest, DeviceUsage, NodeUsage, PolicyInfo
from hami.policies.context import PolicyContext
from hami.policies.devicetable import numpy

NAME = "random"


class RandomPolicy:
    """The ``random`` node and device policies."""

    def __init__(self) -> None:
        self.attach(PolicyContext())

    def attach(self, context: PolicyContext) -> None:
        self._seed = context.seed
        self._rng: Any = None

    @property
    def rng(self) -> Any:
        """The generator, created on first use (the core imports without numpy)."""
        if self._rng is None:
            self._rng = numpy().random.default_rng(self._seed)
        return self._rng

    @hookimpl
    def hami_scoring_policies(self) -> list[PolicyInfo]:
        return [
            PolicyInfo(NAME, "node", "random-fit: a random node where the pod fits (seeded in simulations)"),
            PolicyInfo(NAME, "device", "a random fitting device"),
        ]

    @hookimpl
    def hami_score_nodes(self, policy: str, nodes: Sequence[NodeUsage], requests: Sequence[DeviceRequest], pod: Mapping[str, Any]) -> list[float] | None:
        if policy != NAME:
            return None
        # Draw in name order: the scheduler hands nodes over in no particular order, and the
        # same seed must give the same choice in every process.
        draws = self.rng.random(len(nodes)).tolist()
        order = sorted(range(len(nodes)), key=lambda i: nodes[i].name)
        scores = [0.0] * len(nodes)
        for i, draw in zip(order, draws):
            scores[i] = draw
        return scores

    @hookimpl
    def hami_score_node(self, policy: str, node: NodeUsage, requests: Sequence[DeviceRequest], pod: Mapping[str, Any]) -> float | None:
        if policy != NAME:
            return None
        return float(self.rng.random())

    @hookimpl
    def hami_score_device(self, policy: str, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any]) -> float | None:
        if policy != NAME:
            return None
        return float(self.rng.random())
