"""The sandbox cluster: the in-memory API server, one fake kubelet and node agent per node, the
scheduler extender with the admission webhook, over real HTTP and gRPC: all in one process up to
``QUIET_NODES`` nodes, past it the nodes in worker processes (:mod:`hami.sandbox.nodehost`).

It then plays the two Kubernetes components that cannot run here: kube-scheduler (webhook → the
pod's scheduler profile → every node through the filter plugins, cpu, memory and every extended
resource against allocatable minus what the node's pods ask (hami.sandbox.kubescheduler) → the
extender's filter, prioritize and bind for pods that ask for a resource the generated extender
configuration manages) and kubelet (admission → Allocate per container). A pod no node can take
stays Pending with kube-scheduler's own message. Devices come from the node inventory (every
backend's simulated source), so nothing needs hardware; each Node gets the inventory's cpu, memory
and labels, as a kubelet started with them would report.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonpatch
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hami.backendkit.inventory import load_inventory
from hami.errors import HamiError
from hami.fakes.kubeapi import KubeAPIServer
from hami.fakes.kubelet import FakeKubelet
from hami.kube import release
from hami.node.agent import Agent, AgentOptions
from hami.plugin.manager import BackendManager, load_backends
from hami.plugin.model import NodeInventory
from hami.sandbox.defaults import default_nodes_file
from hami.sandbox.kubescheduler import feasible_nodes_to_find, fit_error, merge_extender, node_reasons, pod_requests
from hami.sandbox.nodehost import HostSpec, NodeHosts, describe_node
from hami.sandbox.outcome import (
    ContainerOutcome,
    DeviceGrant,
    PodOutcome,
    expected_phase,
)
from hami.sandbox.schedcache import SchedulerCache
from hami.scheduler.config import SchedulerConfig
from hami.scheduler.kubeconfig import scheduler_configuration
from hami.scheduler.service import SchedulerService
from hami.webhook.admission import review
from hami.webhook.config import WebhookConfig
from hami.webhook.quota import KubeQuotaSource
from hami.wire.allocation import ordered_containers, read_allocated
from hami.wire.isolation import device_isolation
from hami.wire.signing import SigningKeys

log = logging.getLogger(__name__)


def _as_api_json(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The pod as the API server stores it: resource quantities are strings (YAML gives numbers)."""
    stored: dict[str, Any] = json.loads(json.dumps(pod))
    for container in ordered_containers(stored):
        for section in ("limits", "requests"):
            values = (container.get("resources") or {}).get(section)
            if isinstance(values, dict):
                for key, value in values.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        values[key] = str(value)
    return stored


QUIET_NODES = 50
"""Up to this many nodes every agent runs with the DaemonSet's intervals."""


def agent_intervals(nodes: int) -> tuple[float, float]:
    """``(usage_interval, kubelet_poll_interval)`` of the agents in a sandbox of ``nodes`` nodes.

    Every agent lists its node's pods each usage round (HAMi's 5 s feedback period) and checks for a
    kubelet restart twice a second. With hundreds of simulated nodes in one process that is work
    that grows with idle nodes, not with pods: 500 nodes listed 100 times a second, each list
    filtering every pod (issue 29). Past ``QUIET_NODES`` the intervals stretch in proportion, so the
    cluster as a whole does as much background work as a 50-node one; small sandboxes keep the
    DaemonSet's timing."""
    scale = max(1.0, nodes / QUIET_NODES)
    return 5.0 * scale, 0.5 * scale


CROWDED_SWITCH_INTERVAL = 0.05
"""``sys.setswitchinterval`` while a sandbox of more than ``QUIET_NODES`` nodes runs."""


def switch_interval(nodes: int) -> float | None:
    """The interpreter's thread switch interval for a sandbox of ``nodes`` nodes; None: leave it.

    Why: a 500-node sandbox has ~4,000 threads, ~3,000 lock acquisitions a second of them idle
    wake-ups (gRPC server polls, watch checks). Every thread waiting for the interpreter lock wakes
    each switch interval (5 ms by default) to ask for it; with hundreds waiting that storm used both
    cores and starved the pods: measured, 500x2000 stalled for 200 s at load ~460 after 436 pods,
    while 500x3000 at 50 ms finished at 8.4 pods/s, load ~10 (issue 29). A mitigation, not a cure:
    500x5000 at 50 ms still stalled after 541 pods on an idle machine (load 5), 3,150 of 4,080
    threads taking CPU within seconds and none getting anywhere; the cure is fewer threads per
    interpreter (:func:`host_processes`). Kept for the worker processes, which still hold 250
    nodes each. Small sandboxes keep the default."""
    return CROWDED_SWITCH_INTERVAL if nodes > QUIET_NODES else None


NODES_PER_HOST = 250
"""Simulated nodes per worker process past ``QUIET_NODES`` (a node is ~8 threads and ~0.9 MiB, a
worker ~90 MiB before its first node). Measured at 500x1500 (issue 29): 100 a worker, 5 workers,
11.5 pods/s and 1,103 MiB in all; 250 a worker, 2 workers, 16.5 pods/s and 776 MiB."""


def host_processes(nodes: int) -> int:
    """Worker processes hosting the simulated nodes of a sandbox of ``nodes`` nodes; 0: in this process.

    Up to ``QUIET_NODES`` the nodes' idle work is small and a pipe hop per pod would only add
    latency. Past it one interpreter holding every node stalls: 500 nodes are ~4,000 threads whose
    timed waits (agent loops, gRPC server polls, watch checks) each need the interpreter lock to
    return; once they expire faster than the lock goes round, every thread queues for it and the
    pods stop (measured, issue 29: 3,150 of 4,080 threads took CPU within seconds while no pod
    moved). So the nodes go to worker processes of at most ``NODES_PER_HOST`` nodes, each with its
    own lock, at least two."""
    return 0 if nodes <= QUIET_NODES else max(2, -(-nodes // NODES_PER_HOST))


class Sandbox:
    def __init__(
        self,
        nodes_file: str | Path | None = None,
        *,
        manager: BackendManager | None = None,
        settings: Mapping[str, Any] | None = None,
        hosts: int | None = None,
    ) -> None:
        """``hosts``: worker processes for the nodes (0: every node in this process; default
        :func:`host_processes`)."""
        self.nodes_file = Path(nodes_file) if nodes_file else default_nodes_file()
        self.inventory: tuple[NodeInventory, ...] = load_inventory(self.nodes_file)
        self.manager = manager or load_backends()
        self.settings = dict(settings or {})
        self.keys = SigningKeys.generate()
        self.api = KubeAPIServer()
        self.core_v1: client.CoreV1Api | None = None
        self.kubelets: dict[str, FakeKubelet] = {}
        """The in-process nodes' kubelets (empty when :attr:`hosts` holds the nodes)."""
        self.agents: dict[str, Agent] = {}
        self.host_workers = host_processes(len(self.inventory)) if hosts is None else hosts
        self.hosts: NodeHosts | None = None
        self.service: SchedulerService | None = None
        self.scheduler_cache: SchedulerCache | None = None
        self._next_start = 0
        """kube-scheduler's ``nextStartNodeIndex``: where the next pod's node search begins."""
        self._dirs: list[str] = []
        self._switch_interval: float | None = None
        """The interval before start changed it, restored by stop."""
        self.webhook_config = WebhookConfig()
        self.managed = frozenset(
            r["name"] for r in scheduler_configuration(self.manager, "http://sandbox")["extenders"][0]["managedResources"]
        )

    # ------------------------------------------------------------ life cycle

    def start(self, timeout: float | None = None) -> Sandbox:
        """Start every component; ``timeout`` bounds each wait for them to come up (default: 30 s,
        plus 0.2 s a node past ``QUIET_NODES``: 500 nodes register and hand shake for minutes on a
        loaded machine)."""
        if timeout is None:
            timeout = 30.0 + 0.2 * max(0, len(self.inventory) - QUIET_NODES)
        interval = switch_interval(len(self.inventory))
        if interval is not None and self._switch_interval is None:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(max(interval, self._switch_interval))
        self.api.start()
        # every agent and kubelet shares this client: a connection each (and the sandbox's own) avoids "pool is full" reconnects
        self.core_v1 = client.CoreV1Api(self.api.api_client(pool_size=2 * len(self.inventory) + 16))
        for backend in self.manager.backends:
            overrides = (self.settings.get("backends") or {}).get(backend, {})
            # The inventory makes every node simulated (NodeContext.simulated): no vendor tools or host libraries.
            self.manager.configure(backend, {**overrides, "inventory": str(self.nodes_file)})
        usage_interval, kubelet_poll_interval = agent_intervals(len(self.inventory))
        if self.host_workers > 0:
            backend_settings = {b: dict((self.settings.get("backends") or {}).get(b, {})) for b in self.manager.backends}
            specs = [
                HostSpec(
                    api_url=self.api.url,
                    nodes_file=str(self.nodes_file.resolve()),
                    names=names,
                    public_pem=self.keys.public_pem(),
                    backend_settings=backend_settings,
                    usage_interval=usage_interval,
                    kubelet_poll_interval=kubelet_poll_interval,
                    timeout=timeout,
                    switch_interval=sys.getswitchinterval() if interval is not None else None,
                )
                for names in NodeHosts.shards([n.name for n in self.inventory], self.host_workers)
            ]
            self.hosts = NodeHosts(self.host_workers)
            self.hosts.start(specs, timeout)
        for node in self.inventory if self.hosts is None else ():
            plugin_dir = tempfile.mkdtemp(prefix="hs", dir="/tmp")  # unix socket paths must stay short
            self._dirs.append(plugin_dir)
            self.kubelets[node.name] = FakeKubelet(Path(plugin_dir), node.name, core_v1=self.core_v1).start()
            self._describe_node(node)
            # the backends' node state in the temp dir, never /var/lib/hami: users run the sandbox unprivileged
            options = AgentOptions(
                node_name=node.name,
                device_plugin_dir=Path(plugin_dir),
                health_interval=5.0,
                state_dir=Path(plugin_dir) / "state",
                usage_interval=usage_interval,
                kubelet_poll_interval=kubelet_poll_interval,
            )
            agent = Agent(self.manager, self.core_v1, options, self.keys.verifier())
            self.agents[node.name] = agent.start()
        deadline = time.monotonic() + timeout
        for name, agent in self.agents.items():
            if not agent.node_registered.wait(max(deadline - time.monotonic(), 0.1)):
                raise HamiError(f"sandbox: the agent on node {name!r} did not register within {timeout:.0f} s")
        config = self.webhook_config
        quota = KubeQuotaSource(self.core_v1)
        self.service = SchedulerService(
            self.manager,
            self.api.api_client(pool_size=32),
            SchedulerConfig(),
            self.keys,
            host="127.0.0.1",
            port=0,
            webhook=lambda body: review(self.manager, body, config, quota),
        )
        self.service.start()
        if not self.service.cache.wait_synced(timeout):
            raise HamiError("sandbox: the scheduler cache did not sync")
        expected = {n.name for n in self.inventory if n.devices}
        while {n for n, s in self.service.state.nodes.items() if s.devices} < expected:
            if time.monotonic() > deadline:
                raise HamiError("sandbox: the scheduler did not see every node's devices")
            time.sleep(0.02)
        self.scheduler_cache = SchedulerCache(self.core_v1).start(timeout)
        return self

    def stop(self) -> None:
        if self.scheduler_cache is not None:
            self.scheduler_cache.stop()
        if self.service is not None:
            self.service.stop()
        if self.hosts is not None:
            self.hosts.stop()
            self.hosts = None
        for agent in self.agents.values():
            agent.stop()
        for kubelet in self.kubelets.values():
            kubelet.stop()
        self.api.stop()
        for directory in self._dirs:
            shutil.rmtree(directory, ignore_errors=True)
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None

    def __enter__(self) -> Sandbox:
        try:
            return self.start()
        except BaseException:  # __exit__ will not run: stop what did start, or its threads keep the process alive
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ playing kube-scheduler and kubelet

    @property
    def _raw(self) -> Any:
        """The API client for raw calls (``_preload_content=False``: JSON in, urllib3 responses out; read
        each to its end, ``.data`` or :func:`hami.kube.release`, or its connection leaves the pool)."""
        if self.core_v1 is None:
            raise HamiError("the sandbox is not started")
        return self.core_v1

    def _post(self, verb: str, body: Any) -> Any:
        assert self.service is not None
        server = self.service.server if verb == "webhook" else self.service.extender_server  # kube-scheduler's listener
        request = urllib.request.Request(
            f"{server.url}/{verb}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def _pod(self, namespace: str, name: str) -> dict[str, Any]:
        return json.loads(self._raw.read_namespaced_pod(name, namespace, _preload_content=False).data)

    def submit(self, pod: Mapping[str, Any]) -> PodOutcome:
        """One pod from creation to running (or the reason it does not run)."""
        pod = _as_api_json(pod)
        meta = pod.setdefault("metadata", {})
        namespace = meta.setdefault("namespace", "default")
        name = meta.get("name") or f"{meta.get('generateName', 'pod-')}{uuid.uuid4().hex[:5]}"
        meta["name"] = name
        expected = expected_phase(pod)

        def outcome(phase: str, reason: str = "", node: str = "", containers: Iterable[ContainerOutcome] = ()) -> PodOutcome:
            return PodOutcome(namespace, name, phase, node, reason, tuple(containers), expected, warnings)  # type: ignore[arg-type]

        answer = self._post(
            "webhook",
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": str(uuid.uuid4()),
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": namespace,
                    "name": name,
                    "operation": "CREATE",
                    "object": pod,
                    "userInfo": {"username": "sandbox"},
                },
            },
        )["response"]
        warnings = tuple(answer.get("warnings") or ())
        if not answer.get("allowed"):
            return outcome("Rejected", f"admission webhook: {(answer.get('status') or {}).get('message', 'denied')}")
        if answer.get("patch"):
            pod = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(answer["patch"])))
        try:
            created = json.loads(self._raw.create_namespaced_pod(namespace, pod, _preload_content=False).data)  # the stored pod: no GET
        except ApiException as exc:
            return outcome("Rejected", f"API server: {json.loads(exc.body or '{}').get('message', exc.reason)}")
        node, reason = self._schedule(created)
        if not node:
            return outcome("Pending", reason)
        admitted = self._admit(node, self._pod(namespace, name))
        if not admitted.admitted:  # kubelet fails the pod: it no longer counts on the node
            release(
                self._raw.patch_namespaced_pod_status(
                    name, namespace, {"status": {"phase": "Failed", "reason": admitted.reason}}, _preload_content=False
                )
            )
            if self.scheduler_cache is not None:
                self.scheduler_cache.forget(created)
            return outcome("Rejected", f"kubelet: {admitted.reason}: {admitted.message}", node)
        running = json.loads(
            self._raw.patch_namespaced_pod_status(name, namespace, {"status": {"phase": "Running"}}, _preload_content=False).data
        )
        return outcome("Running", "", node, self._containers(running, admitted))

    def _asks_hami(self, pod: Mapping[str, Any]) -> bool:
        """kube-scheduler sends a pod to the extender only if a container asks for a managed resource."""
        for container in ordered_containers(pod):
            resources_ = container.get("resources") or {}
            if self.managed & {*(resources_.get("limits") or {}), *(resources_.get("requests") or {})}:
                return True
        return False

    def _describe_node(self, node: NodeInventory) -> None:
        """The inventory's labels, cpu and memory on the Node (what a kubelet started with them reports)."""
        for patch in describe_node(node):
            release(patch(self._raw))

    def _schedule(self, pod: Mapping[str, Any]) -> tuple[str, str]:
        """kube-scheduler for one pod: ``(node, "")`` once bound, else ``("", the FailedScheduling message)``.

        The pod's profile decides: hami's (the webhook routed it) ignores the managed resources
        (``ignoredByScheduler``) and calls the extender when the pod asks for one; default-scheduler
        checks every resource against the nodes and knows no extender; any other name has no
        scheduler here, so the pod waits, as it would in a cluster without that scheduler."""
        meta = pod["metadata"]
        profile = (pod.get("spec") or {}).get("schedulerName") or "default-scheduler"
        ours = profile == self.webhook_config.scheduler_name
        if not ours and profile != "default-scheduler":
            return (
                "",
                f"no scheduler named {profile!r} runs in the sandbox (only default-scheduler and {self.webhook_config.scheduler_name})",
            )
        assert self.scheduler_cache is not None
        nodes, placed, counts = self.scheduler_cache.snapshot()  # kube-scheduler's watched cache, not a list per pod
        asked = pod_requests(pod)
        ignored = self.managed if ours else frozenset()
        statuses: dict[str, list[str]] = {}
        names = [n.name for n in self.inventory if n.name in nodes]
        to_find = feasible_nodes_to_find(len(names))
        start = self._next_start % len(names) if names else 0
        order = names[start:] + names[:start]
        position = 0
        while position < len(order):  # one window of feasible nodes at a time (kube-scheduler's retries)
            feasible = []
            for name in order[position:]:
                position += 1
                reasons = node_reasons(pod, nodes[name], asked, placed.get(name, {}), counts.get(name, 0), ignored)
                if reasons:
                    statuses[name] = reasons
                else:
                    feasible.append(name)
                    if len(feasible) >= to_find:
                        break
            if position == len(order) or feasible:
                self._next_start = (start + position) % len(names)
            if not feasible:
                break
            if not (ours and self._asks_hami(pod)):
                self._bind(meta["namespace"], meta["name"], feasible[0])
                self.scheduler_cache.assume(pod, feasible[0])
                return feasible[0], ""
            result = self._post("filter", {"Pod": pod, "NodeNames": feasible})
            if result.get("Error"):
                return "", str(result["Error"])
            merge_extender(statuses, result)
            chosen = [n for n in result.get("NodeNames") or [] if n in feasible]
            if not chosen:
                continue
            self._post("prioritize", {"Pod": pod, "NodeNames": chosen})
            bound = self._post(
                "bind", {"PodName": meta["name"], "PodNamespace": meta["namespace"], "PodUID": meta["uid"], "Node": chosen[0]}
            )
            if bound.get("Error"):
                return "", f"bind: {bound['Error']}"
            self.scheduler_cache.assume(pod, chosen[0])
            return chosen[0], ""
        return "", fit_error(len(nodes), statuses)

    def _bind(self, namespace: str, name: str, node: str) -> None:
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node}}
        release(self._raw.create_namespaced_pod_binding(name, namespace, body, _preload_content=False))

    def _containers(self, pod: Mapping[str, Any], admitted: Any) -> list[ContainerOutcome]:
        assert self.service is not None
        annotations = pod["metadata"].get("annotations") or {}
        allocated = read_allocated(annotations, self.manager.kinds)
        placed_on = self.service.state.nodes.get((pod.get("spec") or {}).get("nodeName") or "")  # its node's devices, not every node's
        types = {
            device_id: device.type for node in ([placed_on] if placed_on is not None else []) for device_id, device in node.devices.items()
        }
        out = []
        for position, container in enumerate(ordered_containers(pod)):
            allocation = admitted.containers.get(container["name"])
            # a grant counts only where kubelet called the device plugin: a resource no plugin
            # advertises is skipped by kubelet, and the container starts without the device
            handed = set(allocation.devices) if allocation else set()
            grants = [
                g
                for vendor, containers in allocated.items()
                for g in containers[position]
                if vendor in self.manager.kinds and self.manager.kinds[vendor].resources.count in handed
            ]
            out.append(
                ContainerOutcome(
                    name=container["name"],
                    devices=tuple(DeviceGrant(g.id, types.get(g.id, g.vendor), g.memory, g.cores) for g in grants),
                    envs=dict(allocation.envs) if allocation else {},
                    mounts=tuple(
                        {"container_path": m.container_path, "host_path": m.host_path, "read_only": m.read_only}
                        for m in (allocation.mounts if allocation else [])
                    ),
                    device_nodes=tuple(
                        {"container_path": d.container_path, "host_path": d.host_path, "permissions": d.permissions}
                        for d in (allocation.device_specs if allocation else [])
                    ),
                )
            )
        return out

    def delete(self, namespace: str, name: str) -> None:
        """Delete a pod as a user would; the kubelet frees its devices and the agent its host resources."""
        pod = self._pod(namespace, name)
        node = pod.get("spec", {}).get("nodeName")
        release(self._raw.delete_namespaced_pod(name, namespace, _preload_content=False))
        if self.scheduler_cache is not None:
            self.scheduler_cache.forget(pod)
        self.release_on_node(node, pod)

    def _admit(self, node: str, pod: Mapping[str, Any]) -> Any:
        """kubelet's admission of ``pod`` on ``node``, in this process or in the node's host."""
        if self.hosts is not None:
            return self.hosts.admit(node, pod)
        return self.kubelets[node].admit(pod)

    def release_on_node(self, node: str | None, pod: Mapping[str, Any]) -> None:
        """The kubelet of ``node`` frees the deleted pod's devices (nothing when no node runs it)."""
        if self.hosts is not None and node is not None and node in self.hosts:
            self.hosts.release(node, pod)
        elif node in self.kubelets:
            self.kubelets[node].release(pod)

    # ------------------------------------------------------------ reporting

    def nodes(self) -> list[dict[str, Any]]:
        """Each node's devices with what is in use, from the scheduler's view."""
        assert self.service is not None
        state = self.service.state
        out = []
        with state.lock:
            for inventory_node in self.inventory:
                node = state.node(inventory_node.name)
                devices = []
                for usage in [node.usage(device_id) for device_id in node.devices] if node is not None else []:
                    d = usage.device
                    isolation, why = device_isolation(node.annotations, d)  # type: ignore[union-attr]  # node is set when it has devices
                    devices.append(
                        {
                            "id": d.id,
                            "vendor": d.vendor,
                            "type": d.type,
                            "memory_mib": d.memory,
                            "used_memory_mib": usage.memory,
                            "cores": d.cores,
                            "used_cores": usage.cores,
                            "slots": d.count,
                            "used_slots": usage.used,
                            "isolation": isolation,
                            "isolation_reason": why,
                        }
                    )
                out.append({"name": inventory_node.name, "devices": devices})
        return out

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until the scheduler's view shows no device in use (after deleting every pod)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(d["used_slots"] == 0 for n in self.nodes() for d in n["devices"]):
                return True
            time.sleep(0.05)
        return False
