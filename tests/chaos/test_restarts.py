"""The restart and quota-race phases of the chaos suite (issue 19): the scheduler service, an agent
(with pods deleted while it is down) and a kubelet stopped and started while pods are in flight, and
concurrent admissions against a ResourceQuota on device shares — each asserting 0 over-allocation at
every sampled moment, 0 leaks after quiescence, 0 unclear errors, 0 crashes. Then one deterministic
test per restart for the state the restarted component must rebuild. A failing seed replays with
``run_restarts(seed)`` (bench/chaos.py --seed N)."""

from __future__ import annotations

import json

import pytest

from hami.node.podwatch import LEDGER_FILE
from hami.plugin.model import Grant
from hami.sandbox.chaos import RestartCluster, _quota_race, _restart_leaks, _signed_over, run_restarts
from hami.webhook.quota import Reservation, ScopeFacts
from hami.wire.allocation import Allocation
from hami.wire.annotations import NODE_LOCK


def spec(name: str, names, memory: int = 4096, namespace: str = "chaos") -> dict:
    limits = {names.count: "1", names.memory: str(memory)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"limits": limits}}]},
    }


def read(cluster: RestartCluster, name: str, namespace: str = "chaos") -> dict:
    return json.loads(cluster.core_v1.read_namespaced_pod(name, namespace, _preload_content=False).data)


@pytest.fixture
def cluster():
    with RestartCluster(max_nodes=2) as started:
        started.core_v1.create_namespace({"metadata": {"name": "chaos"}}, _preload_content=False)
        yield started


@pytest.mark.parametrize("seed", [7, 19])
def test_restarts_and_a_quota_race_keep_every_invariant(seed):
    report = run_restarts(seed, pods=18, workers=6, quota_admissions=16, quota_holds=5)
    print("\n".join(report.lines()))
    assert report.over_allocated == ()
    assert report.leaked == ()
    assert report.unclear == ()
    assert report.crashes == 0
    assert dict(report.restarts) == {"agent": 1, "kubelet": 1, "scheduler": 1}
    assert report.deleted_while_down > 0 and report.samples > 0 and report.running > 0 and report.faults > 0
    assert report.running + report.unschedulable == report.pods == len(report.tries), report.reasons  # retried as kube-scheduler would
    assert report.quota_admitted == report.quota_expected == 7


def test_a_restarted_scheduler_respects_the_lock_of_a_bind_in_flight_and_counts_what_runs(cluster):
    """Bind one pod (its Allocate not yet called: the node lock is held), restart the scheduler: the
    new one knows the running pod's grant and refuses another bind onto the locked node naming the
    holder; once kubelet allocates the first pod the lock is gone and the next pod runs."""
    names = cluster.names
    assert cluster.submit(spec("runs", names))[0] == "Running"
    created = json.loads(cluster.core_v1.create_namespaced_pod("chaos", spec("in-flight", names), _preload_content=False).data)
    node = cluster.verb("filter", {"Pod": created, "NodeNames": cluster.nodes})["NodeNames"][0]
    bound = cluster.verb("bind", {"PodName": "in-flight", "PodNamespace": "chaos", "PodUID": created["metadata"]["uid"], "Node": node})
    assert not bound.get("Error")
    before = set(cluster.service.state.pods)
    assert len(before) == 2

    cluster.restart_scheduler()
    assert set(cluster.service.state.pods) == before, "holdings rebuilt from the API server"
    pod = spec("waits", names)
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    created = json.loads(cluster.core_v1.create_namespaced_pod("chaos", pod, _preload_content=False).data)
    refused = cluster.verb("bind", {"PodName": "waits", "PodNamespace": "chaos", "PodUID": created["metadata"]["uid"], "Node": node})
    assert "locked by pod chaos/in-flight" in refused["Error"]

    assert cluster.kubelets[node].admit(read(cluster, "in-flight")).admitted
    cluster.kubelets[node].wait_for(
        lambda: NODE_LOCK not in (read_node(cluster, node)["metadata"].get("annotations") or {}), what="lock released"
    )
    assert cluster.submit(spec("next", names))[0] == "Running"
    assert _signed_over(cluster) == []


def read_node(cluster: RestartCluster, name: str) -> dict:
    return json.loads(cluster.core_v1.read_node(name, _preload_content=False).data)


def test_pods_deleted_while_the_agent_is_down_are_released_by_the_restarted_agent(cluster):
    names = cluster.names
    outcome = cluster.submit(spec("gone", names))
    assert outcome[0] == "Running"
    node = outcome[2]
    cluster.stop_agent(node)
    cluster.delete(read(cluster, "gone"))
    ledger = json.loads((cluster.dirs[node] / "state" / LEDGER_FILE).read_text())
    assert [p["metadata"]["name"] for p in ledger["held"].values()] == ["gone"], "nobody released it while the agent was down"

    agent = cluster.start_agent(node)
    assert agent.releaser.ledger.snapshot() == {}, "released by the reconcile at start"
    assert cluster.submit(spec("after", names))[0] == "Running"
    for pod in cluster.pods():
        cluster.delete(pod)
    assert _restart_leaks(cluster, timeout=10) == []


def test_a_restarted_kubelet_gets_the_plugin_back_and_keeps_the_running_pods(cluster):
    names = cluster.names
    node = cluster.submit(spec("before", names))[2]
    kubelet = cluster.kubelets[node]
    advertised, registered = len(kubelet.devices(names.count)), cluster.agents[node].kubelet_registrations
    kubelet.restart()
    kubelet.wait_for(lambda: cluster.agents[node].kubelet_registrations > registered, timeout=10, what="the agent registers again")
    kubelet.wait_devices(names.count, advertised, timeout=10)
    assert ("chaos", "before") in kubelet.pod_resources(), "assignments survive a restart (checkpoint)"
    pod = spec("after", names)
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    assert cluster.submit(pod)[0] == "Running"


def test_the_quota_race_admits_exactly_the_quota_and_frees_what_was_never_created(cluster):
    tried, admitted, expected, problems = _quota_race(cluster, admissions=12, holds=4, dropped=2)
    assert problems == []
    assert (tried, admitted, expected) == (25, 6, 6)
    with cluster.quota.reservations.lock("quota"):
        assert cluster.quota.reservations.in_flight("quota", cluster.pods("quota")) == []


def test_the_restart_checks_see_an_over_grant_and_each_kind_of_leak(cluster):
    """Not vacuous: a signed grant beyond a device, a kubelet assignment, a quota reservation and a node
    lock left behind are each reported, naming what."""
    device_id, (memory, _, _) = sorted(cluster.capacity.items())[0]
    node = next(n for n in cluster.nodes if device_id in cluster.service.state.nodes[n].devices)
    pod = spec("big", cluster.names)
    pod["spec"]["nodeName"] = node
    created = json.loads(cluster.core_v1.create_namespaced_pod("chaos", pod, _preload_content=False).data)
    vendor = cluster.service.state.nodes[node].devices[device_id].vendor
    grant = Grant(device_id, vendor, memory * 2, 0)
    annotations = Allocation(node, {vendor: ((grant,),)}).annotations(cluster.manager.kinds, created["metadata"]["uid"], 0, cluster.keys)
    cluster.core_v1.patch_namespaced_pod("big", "chaos", {"metadata": {"annotations": annotations}}, _preload_content=False)
    assert any(device_id in line and f"{memory * 2} MiB" in line for line in _signed_over(cluster))

    cluster.core_v1.delete_namespaced_pod("big", "chaos", _preload_content=False)
    cluster.kubelets[node].admit(read_after_create(cluster, node))
    store = cluster.quota.reservations  # an admitted pod that was never created, its TTL not yet run out
    held = store.load("quota", True)
    store.commit("quota", held, {**held.entries, "t": Reservation("reserved", {}, ScopeFacts(), store.clock() + 60)})
    cluster.core_v1.patch_node(node, {"metadata": {"annotations": {NODE_LOCK: "2026-01-01T00:00:00Z,chaos,gone"}}}, _preload_content=False)
    leaks = _restart_leaks(cluster, timeout=0)
    assert any(f"node {node}: lock" in line for line in leaks), leaks
    assert any("quota reservation of reserved" in line for line in leaks), leaks
    assert any(f"kubelet on {node}: devices still assigned to chaos/left" in line for line in leaks), leaks


def read_after_create(cluster: RestartCluster, node: str) -> dict:
    """A pod bound to ``node`` asking for nothing kubelet must allocate: kubelet still records it."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "left", "namespace": "chaos"}}
    pod["spec"] = {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    return json.loads(cluster.core_v1.create_namespaced_pod("chaos", pod, _preload_content=False).data)


def test_a_pod_filtered_by_the_old_scheduler_is_counted_and_bound_by_the_new_one(cluster):
    """The filter's reservation lives in the pod's signed annotations, not in the process: a restarted
    scheduler counts it before the bind comes, then binds it, and kubelet's Allocate succeeds."""
    created = json.loads(cluster.core_v1.create_namespaced_pod("chaos", spec("filtered", cluster.names), _preload_content=False).data)
    node = cluster.verb("filter", {"Pod": created, "NodeNames": cluster.nodes})["NodeNames"][0]
    cluster.restart_scheduler()
    held = [(r.namespace, r.name, r.node) for r in cluster.service.state.pods.values()]
    assert held == [("chaos", "filtered", node)]
    bound = cluster.verb("bind", {"PodName": "filtered", "PodNamespace": "chaos", "PodUID": created["metadata"]["uid"], "Node": node})
    assert bound == {"Error": ""}
    assert cluster.kubelets[node].admit(read(cluster, "filtered")).admitted


def test_a_thread_that_dies_and_a_logged_traceback_are_counted():
    """A crash in a background thread never reaches logging: the run counts it through threading.excepthook."""
    import logging
    import threading

    from hami.sandbox.chaos import _watch_logs

    def die():
        raise KeyError("boom")

    with _watch_logs() as logs:
        thread = threading.Thread(target=die, name="doomed")
        thread.start()
        thread.join()
        try:
            raise ValueError("logged")
        except ValueError:
            logging.getLogger("hami.chaos-test").exception("failed")
    assert logs.thread_crashes == ["thread doomed died: KeyError: 'boom'"]
    assert logs.bad == ["log hami.chaos-test: failed"]
    assert threading.excepthook is not logs.thread_died


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_pod_that_finished_before_the_next_admission_frees_its_quota_at_once(phase):
    """Found by the quota phase: the reservation of an admitted pod ended only when a *counting* pod
    carried its token, so a pod that had finished (kubelet refused it, a short job) before the next
    admission in its namespace charged the quota again through its reservation until the TTL (60 s)."""
    from hami.plugin.manager import load_backends
    from hami.webhook.quota import RESERVATION_ANNOTATION, QuotaReservations, reserve_quota

    class Source:
        def __init__(self):
            self.reservations = QuotaReservations()
            self.listed = []

        def resource_quotas(self, namespace):
            return [{"metadata": {"name": "q"}, "spec": {"hard": {"limits.nvidia.com/gpumem": "1000"}}}]

        def pods(self, namespace):
            return self.listed

    manager, source = load_backends(), Source()
    first = {
        "metadata": {"name": "first", "namespace": "ns"},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"}}}]},
    }
    exceeded, token = reserve_quota(manager, first, "ns", source)
    assert exceeded is None and token
    source.listed = [
        {**first, "metadata": {**first["metadata"], "annotations": {RESERVATION_ANNOTATION: token}}, "status": {"phase": phase}}
    ]
    second = {**first, "metadata": {"name": "second", "namespace": "ns"}}
    assert reserve_quota(manager, second, "ns", source)[0] is None
    assert source.reservations.count("ns") == 1, "only the second pod's reservation is left"


def test_an_admission_racing_a_kubelet_restart_fails_the_pod_instead_of_raising(cluster):
    """Found by the kubelet-restart phase: an admission that picked the plugin's endpoint just before a
    restart closed it got grpc's ValueError ("Cannot invoke RPC on closed channel!") out of
    FakeKubelet.admit. kubelet answers the pod with the error Go's gRPC gives a closed connection."""
    names = cluster.names
    node = cluster.nodes[0]
    kubelet = cluster.kubelets[node]
    kubelet._endpoints[names.count]._channel.close()  # the restart's close, caught between lookup and call
    pod = spec("raced", names)
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    created = json.loads(cluster.core_v1.create_namespaced_pod("chaos", pod, _preload_content=False).data)
    assert cluster.verb("bind", {"PodName": "raced", "PodNamespace": "chaos", "PodUID": created["metadata"]["uid"], "Node": node}) == {
        "Error": ""
    }
    result = kubelet.admit(read(cluster, "raced"))
    assert not result.admitted
    assert result.reason == "UnexpectedAdmissionError"
    assert "grpc: the client connection is closing" in result.message
