"""Random-fit: a uniformly random node among those where the task fits, and a random device.

The scheduler walks nodes best score first and takes the first that fits, so random scores give a
uniform choice among fitting nodes. The node and device policies draw from one generator, seeded
from the :class:`ClusterView` (``seed``) so a simulation is reproducible; a new view starts a new
generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hami.plugin.model import DeviceUsage, NodeUsage
from hami.plugin.policy import ClusterView, DevicePolicy, DeviceScoreContext, NodePolicy, ScoreContext
from hami.policies.devicetable import numpy

NAME = "random"


class Draws:
    """One random generator per cluster view, shared by the node and device policies."""

    def __init__(self) -> None:
        self._cluster: ClusterView | None = None
        self._rng: Any = None

    def rng(self, cluster: ClusterView) -> Any:
        """The generator for ``cluster``, created on first use (the core imports without numpy)."""
        if cluster is not self._cluster or self._rng is None:
            self._cluster = cluster
            self._rng = numpy().random.default_rng(cluster.seed)
        return self._rng


class RandomNodePolicy(NodePolicy):
    name = NAME
    description = "random-fit: a random node where the pod fits (seeded in simulations)"

    def __init__(self, draws: Draws | None = None) -> None:
        self.draws = draws or Draws()

    def score_nodes(self, nodes: Sequence[NodeUsage], context: ScoreContext) -> list[float]:
        # Draw in name order: the scheduler hands nodes over in no particular order, and the
        # same seed must give the same choice in every process.
        draws = self.draws.rng(context.cluster).random(len(nodes)).tolist()
        order = sorted(range(len(nodes)), key=lambda i: nodes[i].name)
        scores = [0.0] * len(nodes)
        for i, draw in zip(order, draws, strict=True):
            scores[i] = draw
        return scores

    def score_node(self, node: NodeUsage, context: ScoreContext) -> float:
        return float(self.draws.rng(context.cluster).random())


class RandomDevicePolicy(DevicePolicy):
    name = NAME
    description = "a random fitting device"

    def __init__(self, draws: Draws | None = None) -> None:
        self.draws = draws or Draws()

    def score_device(self, device: DeviceUsage, context: DeviceScoreContext) -> float:
        return float(self.draws.rng(context.cluster).random())


def random_policies() -> list[NodePolicy | DevicePolicy]:
    draws = Draws()
    return [RandomNodePolicy(draws), RandomDevicePolicy(draws)]
