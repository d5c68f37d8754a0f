"""Benchmark of the node agent's Allocate path, with a gRPC floor measured in the same run.

The agent runs as its own process (``hami agent`` with every installed backend loaded, signing
keys, a kubeconfig), exactly as the DaemonSet runs it. This process hosts the in-memory API server
and the fake kubelet; for each pod it writes the scheduler's signed allocation, takes the node lock,
binds, and times the fake kubelet's admission (GetPreferredAllocation + Allocate over the unix
socket, the agent reading and writing the pod and node through the API server). A bare gRPC echo on
a unix socket gives the floor. Final line:
``allocate_p50_ms=… allocate_p99_ms=… echo_p50_ms=… rss_mib=…``.

Run: ``.venv/bin/python bench/agent.py [--pods 300] [--echo 2000]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
import yaml
from kubernetes import client

from hami.fakes.agent import pod_manifest, schedule_pod
from hami.fakes.kubeapi import KubeAPIServer
from hami.fakes.kubelet import FakeKubelet
from hami.plugin.manager import load_backends
from hami.plugin.model import Grant
from hami.wire.signing import SigningKeys

NODE = "bench-node"
GPU = "nvidia.com/gpu"
KEY = b"bench-signing-key-0123456789abcd"  # a 32-byte Ed25519 seed (a published one: benches only)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def echo_bench(directory: Path, calls: int) -> list[float]:
    """Round trips of a unary bytes echo over a unix socket: the gRPC floor under Allocate."""
    handler = grpc.method_handlers_generic_handler("bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    path = directory / "echo.sock"
    server.add_insecure_port(f"unix://{path}")
    server.start()
    try:
        with grpc.insecure_channel(f"unix://{path}") as channel:
            echo = channel.unary_unary("/bench.Echo/Echo")
            payload = b"x" * 256
            for _ in range(50):
                echo(payload, wait_for_ready=True)
            times = []
            for _ in range(calls):
                started = time.perf_counter()
                echo(payload)
                times.append((time.perf_counter() - started) * 1000)
            return times
    finally:
        server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=300)
    parser.add_argument("--echo", type=int, default=2000)
    parser.add_argument("--agent-log-level", default="warning", help="the agent's --log-level (its logs go to stderr)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hb", dir="/tmp"))
    plugin_dir = work / "dp"
    inventory = work / "nodes.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "nodes": [
                    {
                        "name": NODE,
                        "devices": [
                            {"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": "80Gi", "count": 8},
                            {"vendor": "DCU", "type": "DCU Z100", "memory": 32768, "count": 2},
                            {"vendor": "Ascend910B3", "type": "Ascend910B3", "memory": 65536, "count": 2},
                            {"vendor": "MLU", "type": "MLU370-X8", "memory": 24576, "count": 2},
                        ],
                    }
                ]
            }
        )
    )
    settings = work / "settings.yaml"  # a simulated node: no vendor tools, no host libraries
    settings.write_text(yaml.safe_dump({"backends": {b: {"simulate": True} for b in ("nvidia", "ascend", "cambricon", "hygon")}}))
    keys_dir = work / "keys"
    keys_dir.mkdir()
    keys = SigningKeys.from_seed(KEY)
    keys.write(keys_dir, private=False)  # the agent gets the public key only
    manager = load_backends()

    server = KubeAPIServer().start()
    kubeconfig = server.write_kubeconfig(work / "kubeconfig")
    api = server.api_client()
    core_v1 = client.CoreV1Api(api)
    kubelet = FakeKubelet(plugin_dir, NODE, core_v1=core_v1).start()
    env = {**os.environ, "HAMI_INVENTORY": str(inventory), "NODE_NAME": NODE}
    env.pop("HAMI_BACKENDS", None)
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from hami.node.cli import agent_command; agent_command()",
            "--kubeconfig",
            str(kubeconfig),
            "--device-plugin-dir",
            str(plugin_dir),
            "--signing-key-dir",
            str(keys_dir),
            "--log-level",
            args.agent_log_level,
            "--config",
            str(settings),
            "--metrics-bind",
            "127.0.0.1:0",
        ],
        env=env,
    )
    try:
        slots = len(kubelet.wait_devices(GPU, 80, timeout=30))
        devices = sorted({s.rsplit("::", 1)[0] for s in kubelet.devices(GPU)})
        times = []
        for i in range(args.pods):
            name = f"bench-{i}"
            core_v1.create_namespaced_pod("default", pod_manifest(name, {"main": {GPU: "1", "nvidia.com/gpumem": "1000"}}))
            schedule_pod(
                core_v1, manager, "default", name, NODE, {"NVIDIA": [[Grant(devices[i % len(devices)], "NVIDIA", 1000, 10)]]}, keys
            )
            pod = core_v1.read_namespaced_pod(name, "default")
            started = time.perf_counter()
            result = kubelet.admit(pod)
            times.append((time.perf_counter() - started) * 1000)
            if not result.admitted:
                raise SystemExit(f"pod {name} not admitted: {result.error}")
            kubelet.release(pod)
            core_v1.delete_namespaced_pod(name, "default")
        rss, peak = rss_mib(agent.pid)
        echo = echo_bench(work, args.echo)
        loaded = ",".join(sorted(manager.backends))
        print(
            f"backends={loaded} slots={slots} pods={args.pods} allocate_mean_ms={statistics.mean(times):.2f} "
            f"echo_p99_ms={percentile(echo, 99):.3f} rss_peak_mib={peak:.1f}"
        )
        a50, a99, e50 = percentile(times, 50), percentile(times, 99), percentile(echo, 50)
        print(
            f"allocate_p50_ms={a50:.2f} allocate_p99_ms={a99:.2f} echo_p50_ms={e50:.3f} rss_mib={rss:.1f} allocate_p50_over_echo_p50={a50 / e50:.1f}"
        )
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
        kubelet.stop()
        api.close()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
