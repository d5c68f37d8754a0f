"""``hami scheduler``: the cache, the decisions, the HTTP server and the background loops, wired."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

from kubernetes.client import ApiClient, CoordinationV1Api, CoreV1Api

from hami.plugin.manager import BackendManager
from hami.scheduler.cache import ClusterCache
from hami.scheduler.config import SchedulerConfig
from hami.scheduler.core import Scheduler
from hami.scheduler.handshake import HandshakeRequester
from hami.scheduler.leader import LeaderElector
from hami.scheduler.metrics import SchedulerMetrics, api_placed_pods, api_resource_quotas
from hami.scheduler.server import Extender, ExtenderHTTPServer, WebhookHandler
from hami.scheduler.state import ClusterState
from hami.wire.signing import SigningKeys

log = logging.getLogger(__name__)


class SchedulerService:
    def __init__(
        self,
        manager: BackendManager,
        api: ApiClient,
        config: SchedulerConfig,
        keys: SigningKeys | None,
        *,
        host: str = "0.0.0.0",
        port: int = 8443,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        leader_elect: bool = False,
        lease_namespace: str = "kube-system",
        webhook: WebhookHandler | None = None,
        handshake_interval: float = 15.0,
        legacy_metrics: bool = False,
        extender_host: str = "127.0.0.1",
        extender_port: int | None = 0,
        client_ca: str | None = None,
    ) -> None:
        """``host:port``: the webhook listener (the API server's, HTTPS with ``tls_cert``);
        ``extender_host:extender_port``: kube-scheduler's (None: the verbs on the webhook listener,
        for in-process use only), HTTPS with a required client certificate when ``client_ca`` is given."""
        core_v1 = CoreV1Api(api)
        self.state = ClusterState(manager.kinds, capacity_devices=manager.node_capacity_devices)
        self.cache = ClusterCache(self.state, core_v1)
        self.scheduler = Scheduler(manager, self.state, core_v1, config, keys)
        self.handshake = HandshakeRequester(self.state, core_v1, interval=handshake_interval)
        self.elector = (
            LeaderElector(
                CoordinationV1Api(api), lease_namespace, config.scheduler_name, os.environ.get("POD_NAME") or socket.gethostname()
            )
            if leader_elect
            else None
        )
        elector = self.elector
        leading: Callable[[], bool] = (lambda: elector.leading) if elector else (lambda: True)
        self.metrics = SchedulerMetrics(
            self.state, legacy=legacy_metrics, quotas=api_resource_quotas(core_v1), pods=api_placed_pods(core_v1)
        )
        self.extender = Extender(
            self.scheduler, self.metrics, webhook=webhook, ready=lambda: self.cache.synced, leading=leading, pods=self.cache.informed
        )
        self.server = ExtenderHTTPServer(self.extender, host, port, tls_cert=tls_cert, tls_key=tls_key, serve_verbs=extender_port is None)
        self.extender_server = (
            self.server
            if extender_port is None
            else ExtenderHTTPServer(
                self.extender,
                extender_host,
                extender_port,
                tls_cert=tls_cert if client_ca else None,
                tls_key=tls_key if client_ca else None,
                client_ca=client_ca,
                serve_webhook=False,
            )
        )

    def start(self) -> SchedulerService:
        self.cache.start()
        if self.elector:
            self.elector.start()
        self.handshake.start()
        self.server.start()
        if self.extender_server is not self.server:
            self.extender_server.start()
        log.info("event=scheduler_started webhook_url=%s extender_url=%s", self.server.url, self.extender_server.url)
        return self

    def stop(self) -> None:
        self.server.stop()
        if self.extender_server is not self.server:
            self.extender_server.stop()
        self.handshake.stop()
        if self.elector:
            self.elector.stop()
        self.scheduler.close()
        self.cache.stop()
