"""Benchmark of quota-checked admissions: reservations in the process vs in the API server (issue 19 item 8).

Each admission is the webhook's ``review()`` of a device pod in a namespace with a ResourceQuota on
``limits.nvidia.com/gpumem`` (room for every pod: the cost measured is the check and the reservation,
not a refusal), against the in-memory API server over real HTTP; the API server then creates the
admitted pod (with its reservation token), as it would. Configurations, each in a fresh namespace:

* ``local``: reservations in the webhook process (before: what one replica did);
* ``lease``: reservations in a Lease per namespace, conditional writes (after), one replica;
* ``lease-2``: two replicas (own API client and store each) splitting the admissions: the 409s
  they cost each other are counted.

Per configuration: ``admissions/s`` with ``--threads`` concurrent admissions and the 409s lost.
Final line: ``local_per_s=… lease_per_s=… lease_vs_local=…x lease2_per_s=… lease2_conflicts=…
lease2_worst_streak=…`` (the most conditional writes one admission lost in a row; it is denied at 16).
Run: ``.venv/bin/python bench/quota.py [--admissions 300] [--threads 8]``.

Figures (issue 19 item 8; 200 admissions, in-memory API server, a 2-core machine shared with other
work, so ±25 % run to run): 8 threads — local 16.4 / 21.5, lease 20.1 / 20.5 admissions/s (0.96–1.23x:
the Lease write is lost in the noise beside the pod list), two replicas 20.2 / 14.9 with 162 / 184
409s and at most 5 lost in a row by one admission (16 allowed); 1 thread — local 23.7, lease 19.8
(0.84x: one Lease write per admission), two replicas alternating 12.1 with 198 409s (each replica's
remembered record is stale after the other's write: a lost write, a read, a write).
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonpatch
from kubernetes.client import CoordinationV1Api, CoreV1Api

from hami.fakes.admission import pod_create_review
from hami.fakes.kubeapi import KubeAPIServer
from hami.plugin.manager import load_backends
from hami.webhook.admission import review
from hami.webhook.config import WebhookConfig
from hami.webhook.quota import KubeQuotaSource, QuotaReservations
from hami.webhook.reservations import LeaseReservations


def _document(name: str, namespace: str) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [{"name": "c", "image": "cuda", "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"}}}]
        },
    }
    return pod_create_review(pod, namespace, "bench")


def run(api: KubeAPIServer, label: str, stores: int, lease: bool, admissions: int, threads: int) -> tuple[float, int, int]:
    manager, config = load_backends(), WebhookConfig()
    namespace = f"bench-{label}"
    admin = api.api_client(pool_size=threads * 2)
    core: Any = CoreV1Api(admin)  # raw JSON bodies
    core.create_namespaced_resource_quota(
        namespace,
        {"metadata": {"name": "q"}, "spec": {"hard": {"limits.nvidia.com/gpumem": str(admissions * 1000)}}},
        _preload_content=False,
    )
    clients, sources = [], []
    for _ in range(stores):
        client = api.api_client(pool_size=threads * 2)
        clients.append(client)
        store = LeaseReservations(CoordinationV1Api(client), "hami-system") if lease else QuotaReservations()
        sources.append(KubeQuotaSource(CoreV1Api(client), reservations=store))

    def admit(i: int) -> None:
        document = _document(f"p{i}", namespace)
        status, body = review(manager, json.dumps(document).encode(), config, sources[i % stores])
        response = json.loads(body)["response"]
        if status != 200 or not response["allowed"]:
            raise SystemExit(f"{label}: admission {i} refused: {response}")
        pod = jsonpatch.apply_patch(document["request"]["object"], json.loads(base64.b64decode(response["patch"])))
        core.create_namespaced_pod(namespace, pod, _preload_content=False)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(admit, range(admissions)))
    elapsed = time.perf_counter() - start
    conflicts = sum(getattr(s.reservations, "conflicts", 0) for s in sources)
    streak = max(getattr(s.reservations, "worst_streak", 0) for s in sources)
    for client in [admin, *clients]:
        client.close()
    return admissions / elapsed, conflicts, streak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--admissions", type=int, default=300)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    api = KubeAPIServer().start()
    try:
        figures = {}
        for label, stores, lease in (("local", 1, False), ("lease", 1, True), ("lease-2", 2, True)):
            rate, conflicts, streak = run(api, label, stores, lease, args.admissions, args.threads)
            figures[label] = (rate, conflicts, streak)
            print(
                f"{label:8} {args.admissions} admissions, {args.threads} threads: {rate:7.1f} admissions/s, "
                f"{conflicts} conflicts (409), at most {streak} lost in a row by one admission"
            )
        local, lease1, lease2 = figures["local"][0], figures["lease"][0], figures["lease-2"]
        print(
            f"local_per_s={local:.1f} lease_per_s={lease1:.1f} lease_vs_local={lease1 / local:.2f}x "
            f"lease2_per_s={lease2[0]:.1f} lease2_conflicts={lease2[1]} lease2_worst_streak={lease2[2]}"
        )
    finally:
        api.stop()


if __name__ == "__main__":
    main()
