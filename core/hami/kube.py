"""Connecting to the API server: a kubeconfig file when given, else the pod's service account."""

from __future__ import annotations

from typing import Any

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from hami.errors import HamiError


def api_client(kubeconfig: str | None = None, pool_size: int | None = None) -> client.ApiClient:
    """One client per component, shared by its threads. ``pool_size``: connections kept for reuse,
    sized to the threads that share the client (the default, 5 per CPU, makes busier components
    open a new connection per request and log "Connection pool is full"). It must be set before
    the client exists: the client builds its pool from the configuration once."""
    try:
        configuration = client.Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)
        if pool_size is not None:
            configuration.connection_pool_maxsize = pool_size
        return client.ApiClient(configuration)
    except (ConfigException, OSError) as exc:
        where = f"kubeconfig {kubeconfig!r}" if kubeconfig else "the in-cluster service account (no --kubeconfig given)"
        raise HamiError(f"cannot configure the Kubernetes client from {where}: {exc}") from None


def release(response: Any) -> None:
    """Read a raw (``_preload_content=False``) response to its end and hand its connection back to the
    pool. An unread response keeps its connection: the next request opens a new TCP connection, and
    more than ``connection_pool_maxsize`` of them log "Connection pool is full"."""
    try:
        response.drain_conn()
    finally:
        response.release_conn()
