"""A running scheduler extender against an API server, and a stand-in for kube-scheduler's calls.

``ExtenderHarness.schedule(namespace, name)`` does what kube-scheduler does with our extender
configured (nodeCacheCapable): POST /filter with every node's name, POST /prioritize, then POST
/bind to the chosen node, all over real HTTP.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any, cast

import attrs
from kubernetes.client import CoreV1Api

from hami.plugin.manager import BackendManager
from hami.scheduler.cache import ClusterCache
from hami.scheduler.config import SchedulerConfig
from hami.scheduler.core import Scheduler
from hami.scheduler.server import Extender, ExtenderHTTPServer
from hami.scheduler.state import ClusterState
from hami.wire.signing import SigningKeys

TEST_KEYS = SigningKeys.from_seed(b"hami-test-signing-key-0123456789")
"""The test harness's scheduler key pair (a published seed: never for a real cluster); agents get ``TEST_KEYS.verifier()``."""


@attrs.frozen
class Scheduled:
    node: str | None
    filter_result: dict[str, Any] = attrs.field(hash=False)
    bind_error: str = ""


class ExtenderHarness:
    def __init__(
        self,
        manager: BackendManager,
        core_v1: CoreV1Api,
        *,
        config: SchedulerConfig = SchedulerConfig(),
        keys: SigningKeys | None = TEST_KEYS,
        pod_wait: float = 1.0,
    ) -> None:
        self.core_v1 = core_v1
        self.state = ClusterState(manager.kinds, capacity_devices=manager.node_capacity_devices)
        self.cache = ClusterCache(self.state, core_v1, watch_timeout=30)
        self.scheduler = Scheduler(manager, self.state, core_v1, config, keys)
        self.extender = Extender(self.scheduler, ready=lambda: self.cache.synced, pods=self.cache.informed, pod_wait=pod_wait)
        self.server = ExtenderHTTPServer(self.extender)

    def start(self) -> ExtenderHarness:
        self.cache.start()
        if not self.cache.wait_synced(10):
            raise RuntimeError("the scheduler cache did not sync with the API server in 10 s")
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        self.scheduler.close()
        self.cache.stop()

    def post(self, verb: str, body: Any) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.server.url}/{verb}", data=data, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def pod_json(self, namespace: str, name: str) -> dict[str, Any]:
        raw = self.core_v1.read_namespaced_pod(name, namespace, _preload_content=False)
        return cast("dict[str, Any]", json.loads(cast(Any, raw).data))

    def node_names(self) -> list[str]:
        return [n["metadata"]["name"] for n in json.loads(cast(Any, self.core_v1.list_node(_preload_content=False)).data)["items"]]

    def schedule(self, namespace: str, name: str) -> Scheduled:
        pod = self.pod_json(namespace, name)
        result = self.post("filter", {"Pod": pod, "NodeNames": self.node_names()})
        chosen = (result.get("NodeNames") or [None])[0]
        if not chosen or result.get("Error"):
            return Scheduled(None, result)
        self.post("prioritize", {"Pod": pod, "NodeNames": [chosen]})
        bound = self.post("bind", {"PodName": name, "PodNamespace": namespace, "PodUID": pod["metadata"]["uid"], "Node": chosen})
        return Scheduled(chosen, result, bound.get("Error", ""))
