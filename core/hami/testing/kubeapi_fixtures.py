"""pytest fixtures: a started in-memory API server per test, and clients for it.

Function-scoped so every test starts from an empty cluster with no faults; starting a server
costs about a millisecond.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from hami.fakes.kubeapi.server import KubeAPIServer

if TYPE_CHECKING:
    import kubernetes.client


@pytest.fixture
def kube_apiserver() -> Iterator[KubeAPIServer]:
    """A started :class:`KubeAPIServer` on a random local port, stopped after the test."""
    srv = KubeAPIServer(bookmark_interval=0.5).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def kube_client(kube_apiserver: KubeAPIServer) -> Iterator[kubernetes.client.ApiClient]:
    """A ``kubernetes.client.ApiClient`` configured for ``kube_apiserver``."""
    client = kube_apiserver.api_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def core_v1(kube_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    """``kubernetes.client.CoreV1Api`` for ``kube_apiserver``."""
    from kubernetes import client

    return client.CoreV1Api(kube_client)
