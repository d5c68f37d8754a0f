"""pytest fixture ``start_agent``: node agents with short intervals on ``kubelet_dir``, stopped after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hami.fakes.agent import FAST_OPTIONS
from hami.plugin.manager import BackendManager
from hami.wire.signing import SigningKeys


@pytest.fixture
def start_agent(kube_apiserver: Any, kubelet_dir: Path) -> Iterator[Callable[..., Any]]:
    """``start_agent(manager, node="node-1", keys=None, insecure=False, **options)`` → a started Agent.

    Each agent gets its own API client; options default to :data:`FAST_OPTIONS`, and the node state
    (the backends' and the agent's pod ledger) to ``<kubelet_dir>/state``: one per test, shared by
    the agents a test restarts, never the host's ``/var/lib/hami``.
    """
    from kubernetes import client

    from hami.node.agent import Agent, AgentOptions

    agents: list[Any] = []
    clients: list[Any] = []

    def start(
        manager: BackendManager, node: str = "node-1", *, keys: SigningKeys | None = None, insecure: bool = False, **options: Any
    ) -> Any:
        api = kube_apiserver.api_client()
        clients.append(api)
        opts = AgentOptions(
            node_name=node, device_plugin_dir=kubelet_dir, **{**FAST_OPTIONS, "state_dir": kubelet_dir / "state", **options}
        )
        agent = Agent(manager, client.CoreV1Api(api), opts, keys.verifier() if keys is not None else None, insecure_skip_signature=insecure)
        agents.append(agent)
        return agent.start()

    yield start
    for agent in agents:
        agent.stop()
    for api in clients:
        api.close()
