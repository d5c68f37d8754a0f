"""Issue 19 item 9 from the other side: the writes a real agent makes (registration, Allocate, a
refused forged pod, a release) all pass the chart's node-scope ValidatingAdmissionPolicy, evaluated
with cel-python on the object each write found, while another node and the pods bound to it are
never written. A policy that refused the agent's own work would stop every node in a cluster;
tests/deploy/test_agent_node_policy.py shows it refuses the writes it must."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import CoreV1Api

from hami.fakes.agent import FAST_OPTIONS, RecordingBackend, pod_manifest, schedule_pod
from hami.fakes.kubeapi.audit import RequestLog, RequestRecord, kubeconfig_for
from hami.fakes.kubelet import FakeKubelet
from hami.kube import api_client
from hami.node.agent import Agent, AgentOptions
from hami.plugin.model import Grant
from hami.wire.signing import SigningKeys
from hami_nvidia.plugin import INFO as NVIDIA_INFO

NODE, OTHER = "node-a", "node-b"
KEYS = SigningKeys.from_seed(b"node-policy-test-signing-key-012")
WRITES = {"create": "CREATE", "update": "UPDATE", "patch": "UPDATE", "delete": "DELETE"}


class WritesWithTheirTarget(RequestLog):
    """Also keeps, for each of the agent's writes to a pod or node, the object as it was before."""

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.store = store
        self.writes: list[tuple[RequestRecord, dict[str, Any] | None]] = []
        self._guard = threading.Lock()

    def record(self, record: RequestRecord) -> None:
        if record.component == "agent" and record.verb in WRITES and record.resource in ("pods", "nodes"):
            try:
                before = self.store.get(record.resource, record.name, record.namespace or None)
            except Exception:  # gone (or never there): the API server answers 404 itself
                before = None
            with self._guard:
                self.writes.append((record, before))
        super().record(record)


def wait(predicate: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_every_write_of_a_real_agent_passes_its_node_policy(
    agent_node_policy: dict[str, Any],
    node_policy_admit: Any,
    kube_apiserver: Any,
    core_v1: Any,
    hami_manager: Any,
    register_backend: Any,
    kubelet_dir: Path,
    tmp_path: Path,
) -> None:
    log = kube_apiserver.request_log = WritesWithTheirTarget(kube_apiserver.store)
    inventory = tmp_path / "nodes.yaml"
    devices = [{"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 16384, "id": f"NVIDIA-{NODE}-{i}", "index": i} for i in range(2)]
    inventory.write_text(yaml.safe_dump({"nodes": [{"name": NODE, "devices": devices}]}))
    backend = RecordingBackend(NVIDIA_INFO)
    register_backend(backend, config={"inventory": str(inventory), "split_count": 4})
    core_v1.create_node({"metadata": {"name": OTHER}})
    config = tmp_path / "agent.kubeconfig"
    config.write_text(yaml.safe_dump(kubeconfig_for(kube_apiserver, "agent")))
    agent_api = api_client(str(config))
    options = AgentOptions(node_name=NODE, device_plugin_dir=kubelet_dir, **{**FAST_OPTIONS, "state_dir": kubelet_dir / "state"})
    agent = Agent(hami_manager, CoreV1Api(agent_api), options, KEYS.verifier())
    kubelet = FakeKubelet(kubelet_dir, NODE, core_v1=core_v1).start()
    try:
        agent.start()
        assert agent.node_registered.wait(15)
        kubelet.wait_devices("nvidia.com/gpu", 8)
        grant = Grant(f"NVIDIA-{NODE}-0", "NVIDIA", 3000, 0)
        for name in ("mine", "elsewhere", "forged"):
            core_v1.create_namespaced_pod("default", pod_manifest(name, {"main": {"nvidia.com/gpu": "1"}}))
        schedule_pod(core_v1, hami_manager, "default", "mine", NODE, {"NVIDIA": [[grant]]}, KEYS)
        assert kubelet.admit(core_v1.read_namespaced_pod("mine", "default")).admitted
        schedule_pod(core_v1, hami_manager, "default", "elsewhere", OTHER, {"NVIDIA": [[grant]]}, KEYS, lock=False)
        schedule_pod(core_v1, hami_manager, "default", "forged", NODE, {"NVIDIA": [[grant]]}, SigningKeys.from_seed(b"f" * 32))
        assert not kubelet.admit(core_v1.read_namespaced_pod("forged", "default")).admitted
        uid = core_v1.read_namespaced_pod("mine", "default").metadata.uid
        core_v1.delete_namespaced_pod("mine", "default")
        kubelet.release(uid)
        wait(lambda: backend.released, "the release of the deleted pod")
    finally:
        agent.stop()
        kubelet.stop()
        agent_api.close()

    written = {(r.resource, r.namespace, r.name) for r, _ in log.writes}
    assert ("nodes", "", NODE) in written and ("pods", "default", "mine") in written, written  # not vacuous
    assert ("pods", "default", "forged") in written  # its bind phase ended as failed
    denied = []
    for record, before in log.writes:
        if before is None:
            continue  # a 404 changes nothing
        operation = WRITES[record.verb]
        message = node_policy_admit(
            agent_node_policy,
            node=NODE,
            resource=record.resource,
            operation=operation,
            old=None if operation == "CREATE" else before,
            new=before,
        )
        if message is not None:
            denied.append((record.verb, record.resource, record.subresource, record.namespace, record.name, message))
    assert not denied, denied
    assert not {w for w in written if OTHER in w or w[2] == "elsewhere"}
