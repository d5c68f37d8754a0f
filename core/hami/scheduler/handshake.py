"""HAMi's liveness handshake between the scheduler and each node's agent.

Every interval the scheduler turns each vendor's ``Reported_<time>`` into ``Requesting_<now>``; a
live agent answers with ``Reported_<time>`` at its next registration (every 30 s). A node still
``Requesting`` after 60 s has a dead device plugin, and :class:`ClusterState` drops its devices
until the agent reports again.
"""

from __future__ import annotations

import logging
from datetime import datetime

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from hami.periodic import Periodic
from hami.scheduler.state import ClusterState
from hami.wire.annotations import HANDSHAKE_TIME_LAYOUT

log = logging.getLogger(__name__)


class HandshakeRequester:
    def __init__(self, state: ClusterState, core_v1: CoreV1Api, *, interval: float = 15.0) -> None:
        self.state = state
        self.core_v1 = core_v1
        self._loop = Periodic("handshake", interval, self.request_once)

    def request_once(self) -> int:
        """Ask every node that has reported to report again; returns how many nodes were asked."""
        now = datetime.now().strftime(HANDSHAKE_TIME_LAYOUT)
        with self.state.lock:
            reported = {name: values for name, (values, _) in self.state.handshakes.items()}
        asked = 0
        for name, values in reported.items():
            patch = {self.state.kinds[v].annotations.handshake: f"Requesting_{now}" for v, value in values.items() if value.startswith("Reported_")}
            if not patch:
                continue
            try:
                self.core_v1.patch_node(name, {"metadata": {"annotations": patch}}, _preload_content=False)
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
