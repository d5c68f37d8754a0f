"""Benchmark of usage monitoring on a busy node: 8 GPUs x 10 containers (issue 20).

A real (not simulated) NVIDIA node context over a temporary host root holds one HAMi-core v1 shared
region per container (written with the reader's own ctypes layout, 4 live process slots each; the
C-compiler check of that layout is backends/nvidia/tests/test_nvidia_usage.py). NVML is absent, so the
figures are the regions' (NVML adds one call per GPU per sample on a real node). Timed:

* ``sample``: one sampler round (``hami_sample_usage``: every region read, one priority-feedback
  round), what the agent does every ``usage_interval`` (5 s);
* ``scrape``: one ``/metrics`` body (allocation and usage families) from the cached sample, what each
  Prometheus scrape costs; the pod list the collector makes per scrape is an in-memory list here.

Final line: ``containers=80 sample_p50_ms=… scrape_p50_ms=… scrape_without_usage_p50_ms=… series=…``.
Run: ``.venv/bin/python bench/usage.py [--gpus 8] [--per-gpu 10] [--rounds 50]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import types
from pathlib import Path

from prometheus_client import generate_latest

from hami.node.devices import Discovery, NodeDevice
from hami.node.metrics import AgentMetrics
from hami.node.usage import UsageSampler
from hami.plugin.manager import BackendManager
from hami.plugin.model import Grant, NodeContext, PhysicalDevice, SchedulableDevice
from hami.wire.allocation import Allocation
from hami_nvidia import region as rg
from hami_nvidia.plugin import INFO, NvidiaBackend
from hami_nvidia.usage import UsageMonitor, region_dir

NODE = "bench-node"


def write_region(path: Path, uuid: str, seed: int) -> None:
    r = rg.RegionV1()
    r.initialized_flag, r.major_version, r.minor_version = rg.MAGIC, 1, 2
    r.num, r.proc_num, r.priority, r.last_kernel_time = 1, 4, seed % 2, int(time.time()) - 3
    r.uuids[0].value = uuid.encode()
    r.limit[0] = 4096 << 20
    for p in range(4):
        r.procs[p].status = 1
        r.procs[p].used[0].total = (100 + seed + p) << 20
        r.procs[p].device_util[0].sm_util = 3 + p
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(r))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--per-gpu", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        backend = NvidiaBackend(INFO)
        manager = BackendManager(strict=True, allow=(), deny=(), builtins=False)
        manager.register(backend, distribution="hami-nvidia")
        manager.configure("nvidia", {"host_root": tmp})
        backend._usage = UsageMonitor()
        backend._usage._nvml_state = "absent"
        config = manager.config("nvidia")
        context = NodeContext(name=NODE, simulated=False, config=config, state_dir=Path(tmp) / "state")
        devices = []
        for i in range(args.gpus):
            physical = PhysicalDevice(id=f"GPU-bench-{i:04d}", vendor="NVIDIA", type="NVIDIA H100", memory=81920, index=i)
            split = SchedulableDevice(id=physical.id, vendor="NVIDIA", type=physical.type, count=args.per_gpu, memory=81920, index=i)
            devices.append(NodeDevice("nvidia", "nvidia.com/gpu", physical, split))
        pods = []
        for i in range(args.gpus):
            for c in range(args.per_gpu):
                name, uid = f"p-{i}-{c}", f"uid-{i}-{c}"
                grant = Grant(devices[i].id, "NVIDIA", 4096, 10)
                annotations = Allocation(NODE, {"NVIDIA": ((grant,),)}).annotations(manager.kinds, uid, time.time(), None)
                pods.append(
                    {
                        "metadata": {"name": name, "namespace": "bench", "uid": uid, "annotations": annotations},
                        "spec": {"nodeName": NODE, "containers": [{"name": "main"}]},
                        "status": {"phase": "Running"},
                    }
                )
                write_region(region_dir(config, uid, "main") / "r.cache", devices[i].id, i * 100 + c)
        agent = types.SimpleNamespace(
            node=NODE,
            manager=manager,
            discovery=Discovery(devices=devices, contexts={"nvidia": context}),
            core_v1=None,
            healthy=lambda d: True,
        )
        agent.usage = UsageSampler(agent, lambda: pods, interval=3600.0)  # the bench times scrapes of one cached sample
        metrics = AgentMetrics(agent, pods=lambda: pods)
        bare = types.SimpleNamespace(**{k: v for k, v in vars(agent).items() if k != "usage"})
        without = AgentMetrics(bare, pods=lambda: pods)

        def timed(action) -> list[float]:
            out = []
            for _ in range(args.rounds):
                started = time.perf_counter()
                action()
                out.append((time.perf_counter() - started) * 1000)
            return out

        first = agent.usage.sample()
        assert len(first.shares()) == args.gpus * args.per_gpu, (len(first.shares()), first.reports["nvidia"].skipped[:3])
        samples = timed(agent.usage.sample)
        body = generate_latest(metrics.registry)
        scrapes = timed(lambda: generate_latest(metrics.registry))
        bare_scrapes = timed(lambda: generate_latest(without.registry))
        assert agent.usage.rounds == args.rounds + 1, "a scrape sampled: the cache did not hold"
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        backend.close()
    p50 = statistics.median
    print(
        f"containers={args.gpus * args.per_gpu} gpus={args.gpus} sample_p50_ms={p50(samples):.2f} sample_max_ms={max(samples):.2f} "
        f"scrape_p50_ms={p50(scrapes):.2f} scrape_without_usage_p50_ms={p50(bare_scrapes):.2f} series={series} "
        f"usage_share_of_scrape={1 - p50(bare_scrapes) / p50(scrapes):.0%}"
    )


if __name__ == "__main__":
    main()
