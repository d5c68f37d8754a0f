"""The sandbox's nodes in worker processes (issue 29, hami.sandbox.nodehost).

One interpreter hosting 500 simulated nodes (~4,000 threads) stalled: their timed waits queued for
the interpreter lock faster than it went round. Past ``QUIET_NODES`` the nodes' fake kubelets and
agents now run in worker processes; these tests check that the pods still go through the real
protocol paths there (registration, ListAndWatch, Allocate over gRPC), that the main process no
longer holds the nodes' threads (counted, not timed), and that a host dying is a clear error.
"""

from __future__ import annotations

import os
import socket
import threading

import pytest

from hami.errors import HamiError
from hami.fakes.kubeapi import KubeAPIServer
from hami.sandbox.cluster import NODES_PER_HOST, QUIET_NODES, Sandbox, host_processes
from hami.sandbox.kubescheduler import feasible_nodes_to_find
from hami.sandbox.nodehost import NodeHosts
from hami.sandbox.runner import run_pods


def _pods(count: int, gpus: int = 1, memory: int = 3000) -> list[dict]:
    limits = {"nvidia.com/gpu": str(gpus), "nvidia.com/gpumem": str(memory)}
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"p-{i:03d}"},
            "spec": {"containers": [{"name": "c", "image": "cuda", "resources": {"limits": limits}}]},
        }
        for i in range(count)
    ]


def test_small_sandboxes_keep_their_nodes_in_process_and_large_ones_split_by_size():
    assert host_processes(1) == host_processes(QUIET_NODES) == 0
    assert host_processes(QUIET_NODES + 1) == 2  # at least two
    assert host_processes(500) == 500 // NODES_PER_HOST
    assert host_processes(501) == 500 // NODES_PER_HOST + 1


def test_shards_deal_every_node_once_and_leave_no_worker_empty():
    names = [f"n{i}" for i in range(7)]
    shards = NodeHosts.shards(names, 3)
    assert sorted(n for s in shards for n in s) == sorted(names) and [len(s) for s in shards] == [3, 2, 2]
    assert NodeHosts.shards(names[:1], 3) == [("n0",)]
    with pytest.raises(HamiError, match="at least one worker process; got 0"):
        NodeHosts(0)


def test_pods_run_on_nodes_hosted_in_worker_processes(write_cluster, tmp_path):
    nodes_file, _ = write_cluster(tmp_path, 4, 0)
    before = {t.ident for t in threading.enumerate()}
    with Sandbox(nodes_file, hosts=2) as sandbox:
        assert sandbox.hosts is not None and len(sandbox.hosts.pids) == 2 and os.getpid() not in sandbox.hosts.pids
        assert sandbox.kubelets == {} and sandbox.agents == {}
        started = [t for t in threading.enumerate() if t.ident not in before]
        # in process a node is ~8 threads (agent loops, plugin gRPC server, watch); here only the
        # API server's side of each agent's pod watch and the shared components remain
        assert not [t.name for t in started if t.name.startswith(("hami-health", "hami-node-register", "hami-usage", "dp-"))]
        assert len(started) < 8 * 4, sorted(t.name for t in started)
        result = run_pods(sandbox.submit, _pods(5, gpus=8, memory=80000))  # a node each
        assert [o.phase for o in result.outcomes] == ["Running"] * 4 + ["Pending"], result
        assert {o.node for o in result.outcomes[:4]} == {f"gpu-{i:04d}" for i in range(4)}  # both hosts admitted pods
        grant = result.outcomes[0].containers[0]
        # the plugin's Allocate answer came back from the worker: envs and mounts of the granted devices
        assert len(grant.devices) == 8 and grant.envs["NVIDIA_VISIBLE_DEVICES"] == ",".join(d.uuid for d in grant.devices)
        assert grant.envs["CUDA_DEVICE_MEMORY_LIMIT_0"] == "80000m" and grant.mounts
        for outcome in result.outcomes[:4]:
            sandbox.delete(outcome.namespace, outcome.name)  # the worker's kubelet frees the devices
        assert sandbox.wait_idle(30.0)
        assert sandbox.submit(_pods(1, gpus=8, memory=80000)[0]).phase == "Running"  # the freed room is used again
        processes = [h.process for h in sandbox.hosts._hosts]
    assert all(p.poll() is not None for p in processes)  # stop() ended the workers


def test_a_node_host_that_dies_is_a_clear_error_and_a_partial_report(write_cluster, tmp_path):
    nodes_file, _ = write_cluster(tmp_path, 2, 0)
    with Sandbox(nodes_file, hosts=2) as sandbox:
        assert sandbox.hosts is not None
        first = sandbox.submit(_pods(1, gpus=8, memory=80000)[0])
        assert first.phase == "Running"
        victim = next(h for h in sandbox.hosts._hosts if first.node not in h.names)  # the other node's host
        victim.process.kill()
        victim.process.wait(10)
        result = run_pods(sandbox.submit, _pods(4, gpus=8, memory=80000)[1:])  # the next lands on the dead host's node
        assert not result.ok
        assert "node host" in result.error and "gpu-" in result.error, result.error
        assert all("submission failed" in p["reason"] for p in result.not_run)


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [(1, 1), (99, 99), (100, 100), (200, 100), (500, 230), (1000, 420), (5000, 500), (6000, 300)],
)
def test_feasible_nodes_to_find_follows_kube_scheduler(nodes, expected):
    # pkg/scheduler/schedule_one.go numFeasibleNodesToFind: every node below 100, else the adaptive
    # percentage (50 % minus a point per 125 nodes, at least 5 %), never fewer than 100
    assert feasible_nodes_to_find(nodes) == expected
    assert feasible_nodes_to_find(nodes, percentage=100) == nodes


def test_a_pod_the_first_window_cannot_take_goes_on_to_the_next_and_pending_means_no_node_fits(write_cluster, tmp_path):
    nodes_file, _ = write_cluster(tmp_path, 120, 0)  # 100 nodes a window
    with Sandbox(nodes_file, hosts=2) as sandbox:
        seen: list[int] = []
        real_post = sandbox._post

        def post(verb, body):
            if verb == "filter":
                seen.append(len(body["NodeNames"]))
            return real_post(verb, body)

        sandbox._post = post  # type: ignore[method-assign]
        result = run_pods(sandbox.submit, _pods(121, gpus=8, memory=80000))  # a whole node each
        phases = [o.phase for o in result.outcomes]
        assert phases == ["Running"] * 120 + ["Pending"], result.error
        assert len({o.node for o in result.outcomes[:120]}) == 120
        assert result.outcomes[-1].reason.startswith("0/120 nodes are available: 120 ")
        assert max(seen) == 100 and min(seen) < 100  # windows of 100, then what is left of the nodes


def test_the_api_server_queues_a_burst_of_connections_while_its_accept_loop_is_busy():
    """The node hosts' clients connect in bursts while the main process is busy: the listen backlog
    must hold them (socketserver's 5 made connects time out in a 500-node run)."""
    api = KubeAPIServer().start()
    httpd = api._httpd
    assert httpd is not None
    gate = threading.Event()
    accept = httpd._handle_request_noblock

    def busy() -> None:  # the accept loop waiting, as it does for the interpreter lock under load
        gate.wait(30)
        accept()

    httpd._handle_request_noblock = busy  # type: ignore[method-assign]
    connected: list[socket.socket] = []
    try:
        for _ in range(64):
            connected.append(socket.create_connection(("127.0.0.1", api.port), timeout=3))
    finally:
        gate.set()
        for sock in connected:
            sock.close()
        api.stop()
    assert len(connected) == 64
