"""Connecting to the API server: a kubeconfig file when given, else the pod's service account."""

from __future__ import annotations

from typing import Any

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from hami.errors import HamiError


def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    try:
        if kubeconfig:
            return config.new_client_from_config(kubeconfig)
        config.load_incluster_config()
        return client.ApiClient()
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
