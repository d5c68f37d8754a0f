"""HAMi's liveness handshake between the scheduler and each node's device plugin (agent).

Every interval the scheduler writes ``Requesting_<now>`` over each registered vendor's handshake
value that is not already a request (``Reported_<time>``, ``Deleted_<time>``, or none); an agent of
ours answers with ``Reported_<time>`` at its next registration (every 30 s). HAMi >= 2.8 device
plugins no longer answer at all, so a stale request alone proves nothing: HAMi v2.10's rule
(``pkg/device/devices.go`` ``CheckHealth``), mirrored by :func:`handshake_problem`, drops a vendor's
devices only when its ``Requesting_`` is older than 60 s *and* the node's Allocatable for the
vendor's count resource is not above zero (the kubelet zeroes it when the plugin goes away).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hami.errors import QuantityError
from hami.kube import release
from hami.periodic import Periodic
from hami.wire.annotations import HANDSHAKE_TIME_LAYOUT
from hami.wire.quantity import parse_quantity

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api

    from hami.scheduler.state import ClusterState

log = logging.getLogger(__name__)


def _allocatable(node: Mapping[str, Any], resource: str) -> bool:
    """Whether the node's ``status.allocatable[resource]`` is above zero (Go's ``Value() > 0``)."""
    value = ((node.get("status") or {}).get("allocatable") or {}).get(resource)
    if value is None:
        return False
    try:
        return parse_quantity(str(value)) > 0
    except QuantityError:
        return False


def handshake_problem(value: str, node: Mapping[str, Any], resource: str, now: float, timeout: float) -> str | None:
    """Why a vendor's device plugin counts as gone from ``node`` (None while it counts as alive).

    As HAMi v2.10 ``pkg/device/devices.go`` ``CheckHealth``: only a ``Requesting_<time>`` (a value
    containing ``Requesting``) can be stale; one without a readable time is alive; one younger than
    ``timeout`` is alive; an older one is alive while Allocatable of ``resource`` is above zero.
    ``Reported_``/``Deleted_``/anything else is alive (the scheduler turns it into a request).
    """
    if "Requesting" not in value:
        return None
    _, found, stamp = value.partition("_")
    if not found:
        return None
    try:
        asked = datetime.strptime(stamp, HANDSHAKE_TIME_LAYOUT).timestamp()
    except ValueError:
        return None
    if now < asked + timeout or _allocatable(node, resource):
        return None
    return f"has not reported since {stamp} and the node has no {resource} allocatable"


class HandshakeRequester:
    def __init__(self, state: ClusterState, core_v1: CoreV1Api, *, interval: float = 15.0) -> None:
        self.state = state
        self.core_v1 = core_v1
        self._loop = Periodic("handshake", interval, self.request_once)

    def request_once(self) -> int:
        """Ask every registered vendor that is not being asked already to report again (HAMi's
        ``CheckHealth`` writes ``Requesting_`` over any other value); returns how many nodes were asked."""
        from kubernetes.client.exceptions import ApiException

        now = datetime.now().strftime(HANDSHAKE_TIME_LAYOUT)
        with self.state.lock:
            values_by_node = {name: values for name, (values, _) in self.state.handshakes.items()}
        asked = 0
        for name, values in values_by_node.items():
            kinds = self.state.kinds
            patch = {kinds[v].annotations.handshake: f"Requesting_{now}" for v, value in values.items() if "Requesting" not in value}
            if not patch:
                continue
            try:
                release(self.core_v1.patch_node(name, {"metadata": {"annotations": patch}}, _preload_content=False))
                asked += 1
            except ApiException as exc:
                log.warning("event=handshake_request_failed node=%s status=%s", name, exc.status)
        self.state.recheck_handshakes()
        return asked

    def start(self) -> HandshakeRequester:
        self._loop.start()
        return self

    def stop(self) -> None:
        self._loop.stop()
