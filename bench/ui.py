"""Benchmark of the dashboard on a 500-node cluster: building the view, and loading each page in Chromium.

A synthetic cluster goes into the in-memory API server: ``--nodes`` nodes of 8 devices registered as
the node agent writes them, two running pods holding shares on each, ``--pending`` Pending pods with
kube-scheduler's message. The dashboard watches it as in a cluster. Measured: the view build (all
nodes, devices and pods accounted by the scheduler's own state) and, per page, Chromium's time from
navigation to the load event (Navigation Timing), medians over ``--repeat`` loads, plus the HTML size.
Final line: ``nodes=<n> build_s=<median> overview_load_s=… nodes_load_s=… pods_load_s=…``.

Run: ``.venv/bin/python bench/ui.py [--nodes 500] [--repeat 5]`` (needs Debian's chromium and playwright).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from hami.fakes.kubeapi import KubeAPIServer
from hami.node.devices import discover_node
from hami.node.registration import node_annotations
from hami.plugin.manager import load_backends
from hami.plugin.model import Grant
from hami.ui.cli import start_dashboard, stop_dashboard, url_of
from hami.wire.allocation import Allocation

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def populate(server: KubeAPIServer, nodes: int, pending: int, folder: Path) -> object:
    inventory = folder / "nodes.yaml"
    devices = [{"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 81920, "count": 8}]
    spec = [{"name": f"gpu-{i:04d}", "devices": devices} for i in range(nodes)]
    inventory.write_text(yaml.safe_dump({"nodes": spec}))
    os.environ["HAMI_INVENTORY"] = str(inventory)
    manager = load_backends(allow=("nvidia",))
    from kubernetes import client

    core_v1 = client.CoreV1Api(server.api_client())
    now = time.time()
    # one node discovered, the others are its copies under their names (device ids carry the node name;
    # discovering each would parse the whole inventory per node)
    template = node_annotations(manager.kinds, discover_node(manager, spec[0]["name"]), {}, {}, now)
    for node in spec:
        annotations = {k: v.replace(spec[0]["name"], node["name"]) for k, v in template.items()}
        core_v1.create_node({"metadata": {"name": node["name"], "annotations": annotations}}, _preload_content=False)
        for k in range(2):
            name, device = f"job-{node['name']}-{k}", f"NVIDIA-{node['name']}-{k}"
            limits = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "12288"}
            core_v1.create_namespaced_pod(
                "team",
                {"metadata": {"name": name}, "spec": {"containers": [{"name": "main", "image": "x", "resources": {"limits": limits}}]}},
                _preload_content=False,
            )
            uid = core_v1.read_namespaced_pod(name, "team").metadata.uid
            grants = {"NVIDIA": ((Grant(device, "NVIDIA", 12288, 30),),)}
            core_v1.patch_namespaced_pod(
                name,
                "team",
                {"metadata": {"annotations": Allocation(node["name"], grants).annotations(manager.kinds, uid, now, None)}},
                _preload_content=False,
            )
            binding = {"metadata": {"name": name}, "target": {"kind": "Node", "name": node["name"]}}
            core_v1.create_namespaced_pod_binding(name, "team", binding, _preload_content=False)
    message = f"0/{nodes} nodes are available: {nodes} CardInsufficientMemory: 200000 MiB needed, at most 69632 MiB free on one device."
    for i in range(pending):
        name = f"waiting-{i}"
        core_v1.create_namespaced_pod(
            "team",
            {
                "metadata": {"name": name},
                "spec": {
                    "containers": [
                        {"name": "main", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "200000"}}}
                    ]
                },
            },
            _preload_content=False,
        )
        core_v1.patch_namespaced_pod_status(
            name,
            "team",
            {"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]}},
            _preload_content=False,
        )
    return manager


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--pending", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chromium", default=os.environ.get("HAMI_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with KubeAPIServer() as server, tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        manager = populate(server, args.nodes, args.pending, Path(folder))
        took = time.perf_counter() - started
        print(f"populated {args.nodes} nodes, {2 * args.nodes} running and {args.pending} pending pods in {took:.1f} s")
        ui, http = start_dashboard(server.api_client(), manager.kinds, port=0)  # type: ignore[attr-defined]
        try:
            builds = []
            for _ in range(args.repeat):
                ui.watch._built = None  # force a rebuild
                ui.watch.view()
                builds.append(ui.watch.build_seconds)
            url = url_of(http)
            results = {"build_s": statistics.median(builds)}
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                for name, path in (("overview", ""), ("nodes", "nodes"), ("pods", "pods")):
                    loads, size = [], 0
                    for _ in range(args.repeat):
                        page.goto(url + path, wait_until="load")
                        timing = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
                        entry = json.loads(timing)
                        loads.append((entry["loadEventEnd"] - entry["startTime"]) / 1000)
                        size = entry["transferSize"] or entry["encodedBodySize"]
                    results[f"{name}_load_s"] = statistics.median(loads)
                    spread = f"min {min(loads):.3f}, max {max(loads):.3f}"
                    print(f"{name:9s} load {statistics.median(loads):.3f} s ({spread}), {size / 1024:.0f} KiB")
                browser.close()
        finally:
            stop_dashboard(ui, http)
    print(f"view build {results['build_s']:.3f} s (median of {args.repeat})")
    print(f"nodes={args.nodes} " + " ".join(f"{k}={v:.3f}" for k, v in results.items()))


if __name__ == "__main__":
    sys.exit(main())
