"""Fixtures for the dashboard's tests: a synthetic cluster in the in-memory API server, the dashboard
served in-process, and a real Chromium driven by Playwright (skipped, saying what to install, where
either is missing)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hami.node.devices import discover_node
from hami.node.registration import node_annotations
from hami.plugin.manager import BackendManager, load_backends
from hami.plugin.model import Grant
from hami.ui.cli import start_dashboard, stop_dashboard, url_of
from hami.wire.allocation import Allocation

CHROMIUM = os.environ.get("HAMI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("HAMI_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")) / "ui"


def make_cluster(
    core_v1: Any, folder: Path, monkeypatch: pytest.MonkeyPatch, nodes: int = 2, gpus: int = 4, pods_per_node: int = 2
) -> BackendManager:
    """``nodes`` GPU nodes of ``gpus`` 80 GiB devices (registered as the node agent writes them) and one
    DCU node; ``pods_per_node`` running pods on each GPU node holding device 0 and 1 (12 GiB, 30 %)."""
    spec = [
        {"name": f"gpu-{i:03d}", "devices": [{"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 81920, "count": gpus}]}
        for i in range(nodes)
    ]
    spec.append({"name": "dcu-000", "devices": [{"vendor": "DCU", "type": "DCU Z100L", "memory": 32768, "count": 2}]})
    inventory = folder / "nodes.yaml"
    inventory.write_text(yaml.safe_dump({"nodes": spec}))
    monkeypatch.setenv("HAMI_INVENTORY", str(inventory))
    manager = load_backends(allow=("nvidia", "hygon"))
    now = time.time()
    for node in spec:
        annotations = node_annotations(manager.kinds, discover_node(manager, node["name"]), {}, {}, now)
        core_v1.create_node({"metadata": {"name": node["name"], "annotations": annotations}}, _preload_content=False)
    for node in spec[:-1]:
        for k in range(pods_per_node):
            name = f"train-{node['name']}-{k}"
            device = f"NVIDIA-{node['name']}-{k % gpus}"
            limits = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "12288", "nvidia.com/gpucores": "30"}
            namespace = "ml" if k % 2 == 0 else "research"
            add_pod(core_v1, manager, name, namespace, node["name"], "NVIDIA", [[Grant(device, "NVIDIA", 12288, 30)]], limits)
    return manager


def add_pod(
    core_v1: Any,
    manager: BackendManager,
    name: str,
    namespace: str,
    node: str,
    vendor: str,
    grants: list[list[Grant]],
    limits: dict[str, str],
    env: list[dict[str, str]] | None = None,
) -> None:
    """A pod bound to ``node`` with a signed-off allocation, as the scheduler leaves it, Running."""
    container = {"name": "main", "image": "x", "resources": {"limits": limits}, "env": env or []}
    core_v1.create_namespaced_pod(namespace, {"metadata": {"name": name}, "spec": {"containers": [container]}}, _preload_content=False)
    uid = core_v1.read_namespaced_pod(name, namespace).metadata.uid
    annotations = Allocation(node, {vendor: tuple(tuple(g) for g in grants)}).annotations(manager.kinds, uid, time.time(), None)
    core_v1.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": annotations}}, _preload_content=False)
    core_v1.create_namespaced_pod_binding(
        name, namespace, {"metadata": {"name": name}, "target": {"kind": "Node", "name": node}}, _preload_content=False
    )
    core_v1.patch_namespaced_pod_status(name, namespace, {"status": {"phase": "Running"}}, _preload_content=False)


@pytest.fixture
def cluster(kube_apiserver: Any, core_v1: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BackendManager:
    return make_cluster(core_v1, tmp_path, monkeypatch)


@pytest.fixture
def dashboard(kube_apiserver: Any, cluster: BackendManager) -> Iterator[str]:
    """The dashboard over the synthetic cluster on a free loopback port; yields its URL."""
    ui, server = start_dashboard(kube_apiserver.api_client(), cluster.kinds, port=0)
    try:
        yield url_of(server)
    finally:
        stop_dashboard(ui, server)


def browser_missing() -> str:
    """Why the browser tests cannot run here ('' when they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install -e '.[dev]' (or pip install playwright)"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set HAMI_CHROMIUM to a Chromium binary)"
    return ""


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's, not Playwright's download) for the whole session."""
    missing = browser_missing()
    if missing:
        pytest.skip(f"browser tests need a browser: {missing}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.errors = errors
    try:
        yield page
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
