"""The chart's RBAC grants exactly what the code uses.

The scheduler (extender, webhook, leader election, handshake), the node agent (registration,
Allocate, a refused pod, a release) and ``hami certs`` run against the in-memory API server, each
with its own bearer token, while the server records every request in RBAC's terms. Then:

1. every recorded request is allowed by the Roles/ClusterRoles the chart binds to that component's
   ServiceAccount (a missing rule would be a 403 in a real cluster);
2. every (group, resource, verb) the chart grants was used (an unused grant is not least privilege).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hami_deploy_tools import NAMESPACE  # type: ignore[import-not-found]  # registered by conftest
from kubernetes.client import AdmissionregistrationV1Api, CoreV1Api

from hami.certs import certs_command
from hami.fakes.agent import FAST_OPTIONS, RecordingBackend
from hami.fakes.kubeapi.audit import RequestLog, RequestRecord, kubeconfig_for
from hami.fakes.kubelet import FakeKubelet
from hami.kube import api_client
from hami.node.agent import Agent, AgentOptions
from hami.plugin.manager import BackendManager
from hami.scheduler.cli import _webhook_handler
from hami.scheduler.config import SchedulerConfig
from hami.scheduler.service import SchedulerService
from hami.wire.annotations import NODE_LOCK
from hami.wire.nodelock import LockHolder
from hami.wire.signing import SigningKeys
from hami_nvidia.plugin import INFO as NVIDIA_INFO

NODE = "gpu-1"
KEYS = SigningKeys.from_seed(b"rbac-test-signing-key-0123456789")
SERVICE_ACCOUNTS = {"scheduler": "hami-scheduler", "agent": "hami-agent", "certs": "hami-certs"}
Grant = tuple[str, str, str, str, frozenset[str]]  # namespace ('' = cluster-wide), group, resource, verb, resourceNames


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _pod(name: str, namespace: str, limits: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {"schedulerName": "hami-scheduler", "containers": [{"name": "main", "image": "busybox", "resources": {"limits": limits}}]},
    }


@pytest.fixture
def recorded(kube_apiserver, core_v1: CoreV1Api, kubelet_dir: Path, tmp_path: Path) -> RequestLog:
    """Run every component through its API-facing paths; returns the request log."""
    log = kube_apiserver.request_log = RequestLog()
    configs = {}
    for component in SERVICE_ACCOUNTS:
        path = tmp_path / f"{component}.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig_for(kube_apiserver, component)))
        configs[component] = str(path)
    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(
        yaml.safe_dump({"nodes": [{"name": NODE, "devices": [{"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 40960, "count": 2}]}]})
    )

    def manager() -> BackendManager:
        # NVIDIA's identity with container edits that need no HAMi-core on this machine
        loaded = BackendManager(strict=True, allow=(), deny=())
        loaded.register(RecordingBackend(NVIDIA_INFO), distribution="in-process")
        loaded.configure("nvidia", {"inventory": str(inventory)})
        return loaded

    kubelet = FakeKubelet(kubelet_dir, NODE, core_v1=core_v1).start()
    agent_api = api_client(configs["agent"])
    agent = Agent(
        manager(), CoreV1Api(agent_api), AgentOptions(node_name=NODE, device_plugin_dir=kubelet_dir, **FAST_OPTIONS), KEYS
    ).start()
    scheduler_manager = manager()
    service = SchedulerService(
        scheduler_manager,
        api_client(configs["scheduler"]),
        SchedulerConfig(),
        KEYS,
        host="127.0.0.1",
        port=0,
        leader_elect=True,
        lease_namespace=NAMESPACE,
        handshake_interval=0.1,
        webhook=_webhook_handler(scheduler_manager, "hami-scheduler", configs["scheduler"], NAMESPACE),
    )
    try:
        assert agent.node_registered.wait(15)
        kubelet.wait_devices("nvidia.com/gpu", 20)
        service.start()
        _wait(lambda: service.cache.synced and service.elector.leading and NODE in service.state.nodes, "the scheduler to sync and lead")
        url = service.server.url

        # the webhook with a quota to check: lists quotas and pods of the namespace
        core_v1.create_namespaced_resource_quota(
            "team", {"metadata": {"name": "gpus"}, "spec": {"hard": {"limits.nvidia.com/gpumem": "100000"}}}
        )
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "team",
                "operation": "CREATE",
                "object": _pod("p1", "team", {"nvidia.com/gpumem": "3000"}),
            },
        }
        assert _post(f"{url}/webhook", review)["response"]["allowed"]

        # a stale lock held by a pod that is gone: bind reads the owner, then takes the lock over
        core_v1.patch_node(
            NODE, {"metadata": {"annotations": {NODE_LOCK: LockHolder(datetime.now(timezone.utc), "team", "ghost").encode()}}}
        )
        core_v1.create_namespaced_pod("team", _pod("p1", "team", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"}))
        pod = json.loads(core_v1.read_namespaced_pod("p1", "team", _preload_content=False).data)
        extender_url = service.extender_server.url  # kube-scheduler's loopback listener
        filtered = _post(f"{extender_url}/filter", {"Pod": pod, "NodeNames": [NODE]})
        assert filtered["NodeNames"] == [NODE], filtered
        assert (
            _post(f"{extender_url}/bind", {"PodName": "p1", "PodNamespace": "team", "PodUID": pod["metadata"]["uid"], "Node": NODE})[
                "Error"
            ]
            == ""
        )
        admitted = kubelet.admit(core_v1.read_namespaced_pod("p1", "team"))
        assert admitted.admitted, admitted.error

        # a pod with forged allocation annotations: the agent refuses it and records an event
        forged = {
            "hami.io/vgpu-node": NODE,
            "hami.io/bind-phase": "allocating",
            "hami.io/bind-time": str(int(time.time())),
            "hami.io/vgpu-devices-to-allocate": f"NVIDIA-{NODE}-0,NVIDIA,1000,0:;",
            "hami.io/vgpu-devices-allocated": f"NVIDIA-{NODE}-0,NVIDIA,1000,0:;",
        }
        core_v1.create_namespaced_pod("default", _pod("p2", "default", {"nvidia.com/gpu": "1"}, forged))
        core_v1.create_namespaced_pod_binding(
            "p2", "default", {"metadata": {"name": "p2"}, "target": {"kind": "Node", "name": NODE}}, _preload_content=False
        )
        assert not kubelet.admit(core_v1.read_namespaced_pod("p2", "default")).admitted

        core_v1.delete_namespaced_pod("p1", "team")  # the agent's pod watch releases it
        service.elector.try_acquire()  # a renewal: get + update of the lease

        # hami certs: create the Secret and patch the caBundle, then keep it, then renew it
        AdmissionregistrationV1Api(core_v1.api_client).create_mutating_webhook_configuration(
            {
                "metadata": {"name": "hami-webhook"},
                "webhooks": [
                    {
                        "name": "vgpu.hami.io",
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "None",
                        "clientConfig": {"service": {"name": "hami-scheduler", "namespace": NAMESPACE}},
                    }
                ],
            }
        )
        base = ["--namespace", NAMESPACE, "--secret", "hami-tls", "--service", "hami-scheduler", "--kubeconfig", configs["certs"]]
        for extra in (["--webhook-config", "hami-webhook"], [], ["--renew-before-days", "100000", "--webhook-config", "hami-webhook"]):
            result = CliRunner().invoke(certs_command, base + extra)
            assert result.exit_code == 0, result.output

        def seen(component: str, verb: str, resource: str, subresource: str = "") -> bool:
            return any((r.verb, r.resource, r.subresource) == (verb, resource, subresource) for r in log.by_component(component))

        _wait(
            lambda: (
                seen("scheduler", "create", "events")
                and seen("agent", "create", "events")
                and seen("scheduler", "watch", "pods")
                and seen("agent", "watch", "pods")
                and seen("scheduler", "patch", "nodes")
            ),
            "the background calls",
        )
    finally:
        service.stop() if service.server else None
        agent.stop()
        kubelet.stop()
        agent_api.close()
    return log


def _rules(docs, service_account: str) -> set[Grant]:
    """What the chart grants one ServiceAccount, through the roles it defines itself (system roles
    bound for kube-scheduler are not ours to check)."""
    grants: set[Grant] = set()
    bindings = [*docs.find("ClusterRoleBinding"), *docs.find("RoleBinding")]
    for binding in bindings:
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == service_account and s["namespace"] == NAMESPACE for s in binding["subjects"]
        ):
            continue
        ref = binding["roleRef"]
        roles = docs.find(ref["kind"], ref["name"])
        if not roles:
            assert ref["name"].startswith(("system:", "extension-apiserver-")), (
                f"{binding['metadata']['name']} refers to a missing {ref['kind']}"
            )
            continue
        namespace = binding["metadata"].get("namespace", "") if binding["kind"] == "RoleBinding" else ""
        for rule in roles[0]["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        grants.add((namespace, group, resource, verb, frozenset(rule.get("resourceNames") or ())))
    return grants


def _allowed(record: RequestRecord, grants: set[Grant]) -> bool:
    resource = f"{record.resource}/{record.subresource}" if record.subresource else record.resource
    return any(
        (ns in ("", record.namespace))
        and group == record.group
        and res == resource
        and verb == record.verb
        and (not names or record.name in names)
        for ns, group, res, verb, names in grants
    )


def test_rbac_covers_exactly_what_each_component_does(recorded: RequestLog, render) -> None:
    docs = render("default")
    problems = []
    for component, account in SERVICE_ACCOUNTS.items():
        grants = _rules(docs, account)
        records = recorded.by_component(component)
        assert records, f"{component} made no request"
        denied = sorted({(r.verb, r.group, r.resource, r.subresource, r.namespace, r.name) for r in records if not _allowed(r, grants)})
        if denied:
            problems.append(f"the chart does not allow {component} to: {denied}")
        used = {(r.group, f"{r.resource}/{r.subresource}" if r.subresource else r.resource, r.verb) for r in records}
        unused = sorted({(group, resource, verb) for _, group, resource, verb, _ in grants} - used)
        if unused:
            problems.append(f"the chart grants {component} permissions its code never used: {unused}")
    assert not problems, "\n".join(problems)


def test_the_request_log_speaks_rbac(kube_apiserver, core_v1: CoreV1Api) -> None:
    log = kube_apiserver.request_log = RequestLog()
    core_v1.create_namespaced_pod("default", _pod("x", "default", {}))
    core_v1.list_pod_for_all_namespaces()
    core_v1.patch_namespaced_pod("x", "default", {"metadata": {"labels": {"a": "b"}}})
    core_v1.create_namespaced_pod_binding(
        "x", "default", {"metadata": {"name": "x"}, "target": {"kind": "Node", "name": "n"}}, _preload_content=False
    )
    core_v1.read_namespaced_pod_status("x", "default")
    assert [(r.component, r.verb, r.resource, r.subresource, r.namespace, r.name) for r in log.records] == [
        ("hami-kubeapi", "create", "pods", "", "default", ""),
        ("hami-kubeapi", "list", "pods", "", "", ""),
        ("hami-kubeapi", "patch", "pods", "", "default", "x"),
        ("hami-kubeapi", "create", "pods", "binding", "default", "x"),
        ("hami-kubeapi", "get", "pods", "status", "default", "x"),
    ]
    secret = {"metadata": {"name": "s"}, "data": {"key": base64.b64encode(b"v").decode()}}
    assert core_v1.create_namespaced_secret("default", secret).data == secret["data"]
