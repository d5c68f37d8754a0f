"""Filter latency of the scheduler extender on a synthetic cluster, against an echo of the same body.

A cluster of --nodes N nodes with --gpus G devices each, with random existing usage, is loaded into
the in-memory API server; the extender syncs its cache from it through the real client. Then POST
/filter (nodeCacheCapable: all N node names) for a one-device request with memory and cores, over real
HTTP on 127.0.0.1, alternating with POST /echo, which only parses and re-encodes the same body in the
same server. The ratio of medians is what to compare across machines.

    python bench/extender.py --nodes 5000 --gpus 8 --requests 200
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from kubernetes import client, config

from hami.fakes.extender import TEST_KEYS, ExtenderHarness
from hami.fakes.kubeapi import KubeAPIServer
from hami.fakes.kubeapi.audit import RequestLog
from hami.plugin.manager import BackendManager
from hami.plugin.model import Grant, SchedulableDevice
from hami.scheduler.config import SchedulerConfig
from hami.wire.allocation import Allocation
from hami.wire.codec import encode_node_devices
from hami_nvidia.plugin import KIND, plugin


def load_cluster(server: KubeAPIServer, nodes: int, gpus: int, rng: random.Random) -> None:
    kinds = {"NVIDIA": KIND}
    for n in range(nodes):
        name = f"node-{n:05d}"
        devices = [
            SchedulableDevice(id=f"GPU-{n}-{g}", vendor="NVIDIA", type="NVIDIA A100", count=10, memory=40960, cores=100, index=g)
            for g in range(gpus)
        ]
        server.store.create(
            "nodes", {"metadata": {"name": name, "annotations": {KIND.annotations.node_register: encode_node_devices(devices, "json")}}}
        )
        for p in range(rng.randint(0, 3)):  # random existing usage
            device = rng.choice(devices)
            grant = Grant(device.id, "NVIDIA", rng.randint(1, 20) * 1024, rng.choice([0, 10, 25, 50]))
            created = server.store.create(
                "pods",
                {
                    "metadata": {"name": f"existing-{n}-{p}", "namespace": "default"},
                    "spec": {"nodeName": name, "containers": [{"name": "c", "image": "cuda"}]},
                },
                namespace="default",
            )
            # signed for the uid the API server gave the pod (a uid of our own is replaced on create, and
            # a record signed for it would not count: the cluster would look empty)
            uid = created["metadata"]["uid"]
            annotations = Allocation(name, {"NVIDIA": ((grant,),)}).annotations(kinds, uid, time.time(), TEST_KEYS)
            server.store.patch(
                "pods", f"existing-{n}-{p}", {"metadata": {"annotations": annotations}}, "application/merge-patch+json", "default"
            )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def serve_cluster(nodes: int, gpus: int, seed: int, kubeconfig: str) -> None:
    """The API server's process: load the synthetic cluster, write a kubeconfig, serve until killed."""
    server = KubeAPIServer().start()
    load_cluster(server, nodes, gpus, random.Random(seed))
    server.store.create(
        "pods",
        {
            "metadata": {"name": "bench", "namespace": "default"},
            "spec": {
                "containers": [
                    {"name": "c", "image": "cuda", "resources": {"limits": {"nvidia.com/gpumem": "4096", "nvidia.com/gpucores": "20"}}}
                ]
            },
        },
        namespace="default",
    )
    server.write_kubeconfig(kubeconfig)
    log = server.request_log = RequestLog()
    print("ready", flush=True)
    accepted = 0
    for line in sys.stdin:  # the driver asks: "reset" before the timed requests, "stats" after
        if line.strip() == "reset":
            log.clear()
            accepted = server.connections_accepted
        elif line.strip() == "stats":
            print(json.dumps({"requests": log.counts(), "connections": server.connections_accepted - accepted}), flush=True)
    threading.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--serve-cluster", metavar="KUBECONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_cluster:
        serve_cluster(args.nodes, args.gpus, args.seed, args.serve_cluster)
        return

    manager = BackendManager(strict=True, allow=(), deny=())
    manager.register(plugin)
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = os.path.join(tmp, "kubeconfig")
        # The API server runs in its own process, as it does in a cluster, so its work does not share
        # the extender's interpreter lock.
        api = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--nodes",
                str(args.nodes),
                "--gpus",
                str(args.gpus),
                "--seed",
                str(args.seed),
                "--serve-cluster",
                kubeconfig,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

        def ask(what: str) -> str:
            assert api.stdin is not None and api.stdout is not None
            api.stdin.write(what + "\n")
            api.stdin.flush()
            return api.stdout.readline() if what == "stats" else ""

        try:
            assert api.stdout is not None
            if api.stdout.readline().strip() != "ready":
                raise SystemExit("the API server process did not start")
            core_v1 = client.CoreV1Api(config.new_client_from_config(kubeconfig))
            run(manager, core_v1, args, ask)
        finally:
            api.kill()
            api.wait()


def run(manager: BackendManager, core_v1: client.CoreV1Api, args: argparse.Namespace, ask: Callable[[str], str]) -> None:
    harness = ExtenderHarness(manager, core_v1, config=SchedulerConfig(events=False)).start()
    try:
        pod = harness.pod_json("default", "bench")
        body = json.dumps({"Pod": pod, "NodeNames": [f"node-{n:05d}" for n in range(args.nodes)]}).encode()
        connection = http.client.HTTPConnection("127.0.0.1", harness.server.port, timeout=60)

        def post(path: str) -> float:
            started = time.perf_counter()
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            payload = connection.getresponse().read()
            elapsed = (time.perf_counter() - started) * 1000
            if path == "/filter":
                result = json.loads(payload)
                if not result.get("NodeNames"):
                    raise SystemExit(f"filter found no node: {result.get('Error') or list(result.get('FailedNodes', {}).items())[:3]}")
            return elapsed

        for _ in range(5):  # warm up both paths
            post("/filter")
            post("/echo")
        filters, echoes = [], []
        harness.scheduler.wait_written(pod["metadata"]["uid"])
        ask("reset")
        for _ in range(args.requests):
            filters.append(post("/filter"))
            echoes.append(post("/echo"))
        harness.scheduler.wait_written(pod["metadata"]["uid"])
        harness.scheduler.close()  # every allocation write done before counting
        stats = json.loads(ask("stats"))
    finally:
        harness.stop()
    f50, f99, e50 = statistics.median(filters), percentile(filters, 0.99), statistics.median(echoes)
    writes = {k: v for k, v in stats["requests"].items() if not k.startswith(("list ", "watch "))}
    total = sum(writes.values())
    print(
        f"API requests per filter: {total / args.requests:.2f} ({', '.join(f'{k} {v / args.requests:.2f}' for k, v in sorted(writes.items()))})"
    )
    print(
        f"nodes={args.nodes} filter_p50_ms={f50:.2f} filter_p99_ms={f99:.2f} echo_p50_ms={e50:.2f} ratio_p50={f50 / e50:.2f} "
        f"connections_per_100_requests={100 * stats['connections'] / max(1, total):.1f}"
    )


if __name__ == "__main__":
    main()
