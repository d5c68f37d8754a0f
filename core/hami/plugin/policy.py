"""Scoring policies: objects a plugin registers through ``hami_policies``.

A policy has a name, a level (``node``: which node a pod goes to; ``device``: which of a node's
devices a container gets) and a description, and scores candidates, higher is better. The scheduler
calls it with the candidate and a context: the pod, its requests, and a :class:`ClusterView` of what
the host knows beyond the candidates (free CPU and memory, a random seed, the backends' device
predicate). The core's binpack, spread, random, best-fit and FGD are registered exactly like a
third party's.

A policy that keeps state (a learnt task distribution, a random generator) keys it by the
``ClusterView`` it is called with: a new view (a simulator run, an extender start) is a fresh start.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol

import attrs

from hami.plugin.model import DeviceRequest, DeviceUsage, NodeUsage, PolicyInfo

Pod = Mapping[str, Any]
DeviceFits = Callable[[DeviceRequest, DeviceUsage, Pod], str | None]
"""The backends' predicate (``BackendManager.device_fits``): None when the device fits, else a reason."""


class HostView(Protocol):
    """Free and total CPU (milli) and memory (MiB) per node, as live arrays indexed by :meth:`index`."""

    cpu_free: Any
    mem_free: Any
    cpu_total: Any
    mem_total: Any

    def index(self, node: str) -> int | None:
        """The node's position in ``cpu_free``/``mem_free``; None when unknown (treated as unlimited)."""


@attrs.frozen(eq=False)
class ClusterView:
    """What a policy may know beyond the candidates; compared by identity (one per run or server)."""

    host: HostView | None = None
    """Node CPU and memory (the simulator has them; the extender's cache does not track them yet)."""
    seed: int | None = None
    """For policies that draw random numbers: a seed makes a run reproducible."""
    device_fits: DeviceFits | None = None
    """Asks the owning backend whether a request may use a device (type selectors a policy cannot read)."""


@attrs.frozen
class ScoreContext:
    """A node-level scoring call: the pod and what it asks of every backend (all containers)."""

    pod: Pod
    requests: Sequence[DeviceRequest]
    cluster: ClusterView


@attrs.frozen
class DeviceScoreContext:
    """A device-level scoring call: the pod and the (normalised) request one device is scored for."""

    pod: Pod
    request: DeviceRequest
    cluster: ClusterView


class Policy(abc.ABC):
    """Base of every scoring policy; subclass :class:`NodePolicy` or :class:`DevicePolicy`.

    ``name``, ``description`` and ``per_pod`` may be class attributes or set per instance.
    """

    level: ClassVar[Literal["node", "device"]]
    name: str = ""
    description: str = ""
    per_pod: bool = True
    """Node policies: False when the score depends only on the node's usage, not on the pod (binpack,
    spread); the scheduler then keeps nodes ranked and rescores only those that changed."""

    @property
    def info(self) -> PolicyInfo:
        """The policy as a value (validated: a non-empty name, a known level)."""
        return PolicyInfo(self.name, self.level, self.description, per_pod=self.per_pod)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.level} policy {self.name!r}>"


class NodePolicy(Policy):
    """Scores candidate nodes for a pod, before it is placed."""

    level: ClassVar[Literal["node", "device"]] = "node"

    @abc.abstractmethod
    def score_node(self, node: NodeUsage, context: ScoreContext) -> float:
        """One node's score (higher is better)."""

    def score_nodes(self, nodes: Sequence[NodeUsage], context: ScoreContext) -> Sequence[float]:
        """One score per node, in order. Override when bulk is cheaper (vectorised, shared tables)."""
        return [self.score_node(node, context) for node in nodes]


class DevicePolicy(Policy):
    """Scores one candidate device of a node for one request of a container.

    A pod may name several device policies as a comma list (HAMi's ``binpack,numa``,
    ``mutex,topology-aware``): every policy of the list may :meth:`refuse` devices, the scores of
    those with ``sort_key`` set are compared in the order written, and the owning backend chooses
    the devices when one of them ``selects``.
    """

    level: ClassVar[Literal["node", "device"]] = "device"
    sort_key: bool = True
    """False for a policy that only filters or selects: in a comma list its score is not compared
    (HAMi's gpuSortKeyChain keeps only binpack, spread and numa as sort keys)."""
    selects: bool = False
    """True: the owning backend chooses the devices (``hami_select_devices``) for every request,
    single devices included, not only for multi-device requests (HAMi's ``topology-aware``)."""

    @abc.abstractmethod
    def score_device(self, device: DeviceUsage, context: DeviceScoreContext) -> float:
        """One device's score (higher is better); ``device`` already fits the request."""

    def refuse(self, device: DeviceUsage, context: DeviceScoreContext) -> str | None:
        """Why this policy keeps ``device`` from the request (a reason counted in the pod's failure,
        like ``ExclusiveDeviceAllocateConflict``); None, the default, lets every fitting device be scored."""
        return None


__all__ = [
    "ClusterView",
    "DeviceFits",
    "DevicePolicy",
    "DeviceScoreContext",
    "HostView",
    "NodePolicy",
    "Policy",
    "ScoreContext",
]
