"""Scheduling throughput and memory at OpenAI's 7,500-node scale: filter → bind (node lock) → allocation write.

Three processes, as in a cluster: the in-memory API server (``--nodes`` nodes of ``--gpus`` devices,
``--pods`` pending one-device pods), the scheduler (informers, cache, extender on real HTTP, signed
allocations) and this driver, which plays kube-scheduler (POST /filter with every node's name —
nodeCacheCapable —, then POST /bind to the node chosen, ``--in-flight`` pods at once) and the node
agent (after a bind: ``bind-phase=success`` and the node lock released, as Allocate does).

Printed: ``pods_per_s`` (bound pods over the wall time of the run), ``bind_p99_ms`` (POST /bind),
``filter_p50_ms``, ``scheduler_rss_mib`` (the scheduler process's peak RSS, VmHWM), load average; the
API requests per pod by verb/resource and the connections the API server accepted per 100 requests
(its request log); filter, bind and a pod's wall time as ratios to POST /echo of the same body.

Issue 29, alternating runs of the code before and after on the shared 2-core machine (load 9-12):
7500 x 2000 went from 59.5/43.2 to 92.0/73.1 pods/s (bind p99 85-104 -> 48-62 ms); 2000 x 1000 from
56-64 to 114-136 pods/s. Scheduler requests per pod 5 -> 3 (the node read gone, bind-phase on the
Binding), connections per 100 requests 42.9 -> 0.1 (raw answers read to their end).

    python bench/throughput.py                      # 7500 nodes x 8 GPUs, 2000 pods, 4 in flight
    python bench/throughput.py --nodes 1000 --pods 500
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

HERE = Path(__file__).resolve()


def _node(n: int, gpus: int) -> dict[str, Any]:
    from hami.plugin.model import SchedulableDevice
    from hami.wire.codec import encode_node_devices
    from hami_nvidia.plugin import KIND

    devices = [
        SchedulableDevice(id=f"GPU-{n}-{g}", vendor="NVIDIA", type="NVIDIA A100", count=10, memory=40960, cores=100, index=g)
        for g in range(gpus)
    ]
    sizes = {"cpu": "128", "memory": "1Ti", "pods": "250"}
    return {
        "metadata": {
            "name": f"node-{n:05d}",
            "annotations": {KIND.annotations.node_register: encode_node_devices(devices, KIND.node_encoding)},
        },
        "status": {"capacity": sizes, "allocatable": sizes},
    }


def serve_cluster(nodes: int, gpus: int, pods: int, kubeconfig: str) -> None:
    """The API server's process: the cluster and the pending pods, a kubeconfig, then serve until killed."""
    from hami.fakes.kubeapi import KubeAPIServer

    server = KubeAPIServer(history_size=50000).start()
    for n in range(nodes):
        server.store.create("nodes", _node(n, gpus))
    for p in range(pods):
        server.store.create(
            "pods",
            {
                "metadata": {"name": f"bench-{p:06d}", "namespace": "default"},
                "spec": {
                    "schedulerName": "hami-scheduler",
                    "containers": [
                        {
                            "name": "c",
                            "image": "cuda",
                            "resources": {
                                "requests": {"cpu": "1", "memory": "2Gi"},
                                "limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "4096", "nvidia.com/gpucores": "20"},
                            },
                        }
                    ],
                },
            },
            namespace="default",
        )
    server.write_kubeconfig(kubeconfig)
    from hami.fakes.kubeapi.audit import RequestLog

    log = server.request_log = RequestLog()
    print("ready", flush=True)
    # the driver asks on stdin: "reset" before the run, "stats" after (requests by verb/resource, connections)
    accepted = 0
    for line in sys.stdin:
        if line.strip() == "reset":
            log.clear()
            accepted = server.connections_accepted
        elif line.strip() == "stats":
            print(json.dumps({"requests": log.counts(), "connections": server.connections_accepted - accepted}), flush=True)
    threading.Event().wait()


def serve_scheduler(kubeconfig: str, policy: str) -> None:
    """The scheduler's process: what ``hami scheduler`` assembles (cache, informers, extender, signing)."""
    from kubernetes import client

    from hami.fakes.extender import TEST_KEYS
    from hami.kube import api_client
    from hami.plugin.manager import load_backends
    from hami.scheduler.cache import ClusterCache
    from hami.scheduler.cli import API_POOL
    from hami.scheduler.config import SchedulerConfig
    from hami.scheduler.core import Scheduler
    from hami.scheduler.server import Extender, ExtenderHTTPServer
    from hami.scheduler.state import ClusterState

    api = api_client(kubeconfig, pool_size=API_POOL)  # as `hami scheduler` builds it
    manager = load_backends(allow=["nvidia"])
    state = ClusterState(manager.kinds, capacity_devices=manager.node_capacity_devices)
    cache = ClusterCache(state, client.CoreV1Api(api))
    scheduler = Scheduler(manager, state, client.CoreV1Api(api), SchedulerConfig(node_policy=policy, events=False), TEST_KEYS)
    extender = Extender(scheduler, ready=lambda: cache.synced, pods=cache.informed)
    server = ExtenderHTTPServer(extender)
    cache.start()
    if not cache.wait_synced(600):
        raise SystemExit("the scheduler's cache did not sync in 600 s")
    server.start()
    print(server.url, flush=True)
    threading.Event().wait()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MiB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=7500)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--policy", default="spread", help="node policy (binpack makes in-flight pods race for one node's lock)")
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="py-spy record the scheduler and API server processes during the run into PATH.scheduler, PATH.apiserver (raw stacks of the threads holding the GIL: where the CPU goes)",
    )
    parser.add_argument("--serve-cluster", metavar="KUBECONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--serve-scheduler", metavar="KUBECONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_cluster:
        serve_cluster(args.nodes, args.gpus, args.pods, args.serve_cluster)
        return
    if args.serve_scheduler:
        serve_scheduler(args.serve_scheduler, args.policy)
        return
    from kubernetes import client

    from hami.kube import api_client, release
    from hami.wire.annotations import BIND_PHASE, NODE_LOCK, BindPhase

    kubeconfig = os.path.join(tempfile.mkdtemp(prefix="hami-throughput-"), "kubeconfig")
    started = time.perf_counter()
    apiserver = subprocess.Popen(
        [
            sys.executable,
            str(HERE),
            "--nodes",
            str(args.nodes),
            "--gpus",
            str(args.gpus),
            "--pods",
            str(args.pods),
            "--serve-cluster",
            kubeconfig,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    scheduler = None

    def ask(what: str) -> str:
        assert apiserver.stdin is not None and apiserver.stdout is not None
        apiserver.stdin.write(what + "\n")
        apiserver.stdin.flush()
        return apiserver.stdout.readline() if what == "stats" else ""

    try:
        assert apiserver.stdout is not None
        if apiserver.stdout.readline().strip() != "ready":
            raise SystemExit("the API server process did not start")
        loaded = time.perf_counter()
        scheduler = subprocess.Popen(
            [sys.executable, str(HERE), "--policy", args.policy, "--serve-scheduler", kubeconfig], stdout=subprocess.PIPE, text=True
        )
        assert scheduler.stdout is not None
        url = scheduler.stdout.readline().strip()
        if not url.startswith("http"):
            raise SystemExit("the scheduler process did not start")
        synced = time.perf_counter()
        idle_rss = rss_mib(scheduler.pid)[0]
        core_v1 = client.CoreV1Api(api_client(kubeconfig, pool_size=args.in_flight * 2))
        names = [f"node-{n:05d}" for n in range(args.nodes)]
        pods = json.loads(cast(Any, core_v1.list_namespaced_pod("default", _preload_content=False)).data)["items"]
        host, port = url.removeprefix("http://").split(":")
        local = threading.local()
        filter_ms: list[float] = []
        bind_ms: list[float] = []
        failures: list[str] = []

        def post(verb: str, body: dict[str, Any]) -> dict[str, Any]:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=120)
            data = json.dumps(body).encode()
            conn.request("POST", f"/{verb}", body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return dict(json.loads(response.read()))

        def schedule(pod: dict[str, Any]) -> bool:
            meta = pod["metadata"]
            t0 = time.perf_counter()
            result = post("filter", {"Pod": pod, "NodeNames": names})
            t1 = time.perf_counter()
            filter_ms.append(1000 * (t1 - t0))
            chosen = result.get("NodeNames") or []
            if not chosen:
                failures.append(f"filter: {result.get('Error') or 'no node'}")
                return False
            outcome = post("bind", {"PodName": meta["name"], "PodNamespace": "default", "PodUID": meta["uid"], "Node": chosen[0]})
            bind_ms.append(1000 * (time.perf_counter() - t1))
            if outcome.get("Error"):
                failures.append(f"bind: {outcome['Error']}")
                return False
            # the node agent's Allocate: the bind succeeded, the node lock is free
            # (each raw response read to its end: an unread one keeps its connection out of the pool)
            release(
                core_v1.patch_namespaced_pod(
                    meta["name"], "default", {"metadata": {"annotations": {BIND_PHASE: BindPhase.SUCCESS}}}, _preload_content=False
                )
            )
            release(core_v1.patch_node(chosen[0], {"metadata": {"annotations": {NODE_LOCK: None}}}, _preload_content=False))
            return True

        spies = []
        if args.profile:  # where each process's time goes (pip install py-spy): PATH.scheduler, PATH.apiserver
            for role, pid in (("scheduler", scheduler.pid), ("apiserver", apiserver.pid)):
                spies.append(
                    subprocess.Popen(
                        ["py-spy", "record", "-p", str(pid), "-r", "50", "--gil", "-f", "raw", "-o", f"{args.profile}.{role}"],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            time.sleep(2)
        # the HTTP and JSON floor on this machine now: POST /echo of a filter's body, one at a time
        echo_ms: list[float] = []
        for _ in range(30):
            t0 = time.perf_counter()
            post("echo", {"Pod": pods[0], "NodeNames": names})
            echo_ms.append(1000 * (time.perf_counter() - t0))
        ask("reset")
        run_started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.in_flight) as pool:
            bound = sum(pool.map(schedule, pods))
        wall = time.perf_counter() - run_started
        for spy in spies:
            spy.send_signal(2)
            spy.wait(60)
        _, peak = rss_mib(scheduler.pid)
        stats = json.loads(ask("stats"))
        total = sum(stats["requests"].values())
        print(
            f"{args.nodes} nodes x {args.gpus} devices, {len(pods)} pods, {args.in_flight} in flight, node policy {args.policy}; "
            f"API server loaded in {loaded - started:.0f} s, scheduler synced in {synced - loaded:.0f} s (RSS {idle_rss:.0f} MiB after sync)"
        )
        if failures:
            print(f"{len(failures)} pods not bound, first: {failures[0][:300]}")
        print(
            f"filter p50 {statistics.median(filter_ms):.1f} ms p99 {percentile(filter_ms, 0.99):.1f} ms; "
            f"bind p50 {statistics.median(bind_ms):.1f} ms p99 {percentile(bind_ms, 0.99):.1f} ms; load average {os.getloadavg()[0]:.1f}"
        )
        per_pod = ", ".join(f"{k} {v / max(1, len(pods)):.2f}" for k, v in sorted(stats["requests"].items()))
        print(f"API requests per pod {total / max(1, len(pods)):.2f} ({per_pod}); the driver's own: patch pods 1.00, patch nodes 1.00")
        print(f"API server connections opened per 100 requests: {100 * stats['connections'] / max(1, total):.1f}")
        echo = statistics.median(echo_ms)
        print(
            f"ratios to POST /echo of the same body (p50 {echo:.1f} ms, the HTTP+JSON floor): filter p50 {statistics.median(filter_ms) / echo:.1f}x, "
            f"bind p50 {statistics.median(bind_ms) / echo:.1f}x, one pod's wall time {1000 * wall / max(1, bound) * args.in_flight / echo:.1f}x"
        )
        print(
            f"pods_per_s={bound / wall:.1f} bind_p99_ms={percentile(bind_ms, 0.99):.1f} filter_p50_ms={statistics.median(filter_ms):.1f} "
            f"scheduler_rss_mib={peak:.0f} bound={bound} seconds={wall:.1f} "
            f"requests_per_pod={total / max(1, len(pods)):.2f} connections_per_100_requests={100 * stats['connections'] / max(1, total):.1f}"
        )
    finally:
        for process in (scheduler, apiserver):
            if process is not None:
                process.terminate()
                process.wait(10)


if __name__ == "__main__":
    main()
