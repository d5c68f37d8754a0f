"""The dashboard in a real browser (Debian's Chromium through Playwright) on ``hami sandbox --serve``:
nodes, devices and pods of the sandbox with the numbers the API server's state gives, a pod created
through the API server appearing without a reload, Pending reasons, filters and the simulation plot.
Screenshots go to test-artifacts/ui/ (HAMI_TEST_ARTIFACTS overrides)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from .conftest import browser_missing, screenshot

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``hami sandbox --serve --port 0`` with three example pods (one too large, so Pending); its URL and kubeconfig."""
    missing = browser_missing()
    if missing:
        pytest.skip(f"browser tests need a browser: {missing}")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hami.cli",
            "sandbox",
            "--serve",
            "--port",
            "0",
            "--pods",
            str(EXAMPLES / "nvidia-gpumem.yaml"),
            "--pods",
            str(EXAMPLES / "hygon-dcu.yaml"),
            "--pods",
            str(EXAMPLES / "nvidia-too-large.yaml"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    found: dict[str, Any] = {}
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if match := re.match(r"dashboard: (http://\S+)", line):
            found["url"] = match[1]
        if match := re.match(r"kubeconfig: (\S+)", line):
            found["kubeconfig"] = match[1]
        if line.startswith("try: kubectl --kubeconfig"):
            found["kubectl"] = line.strip()
            break
    try:
        assert {"url", "kubeconfig", "kubectl"} <= set(found), "".join(lines)
        found["core_v1"] = client.CoreV1Api(config.new_client_from_config(found["kubeconfig"]))
        yield found
    finally:
        process.terminate()
        process.wait(timeout=60)


def api_state(core_v1: Any) -> dict[str, Any]:
    """What the API server holds, read independently of the dashboard (as ``hami top`` reads it)."""
    from hami.plugin.manager import load_backends
    from hami.top import snapshot

    nodes = json.loads(core_v1.list_node(_preload_content=False).data)["items"]
    pods = json.loads(core_v1.list_pod_for_all_namespaces(_preload_content=False).data)["items"]
    return snapshot(load_backends().kinds, nodes, pods)


def test_sandbox_serve_prints_kubeconfig_and_kubectl_line(served):
    assert served["kubectl"] == f"try: kubectl --kubeconfig {served['kubeconfig']} get pods -A"
    assert Path(served["kubeconfig"]).exists()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", served["url"])


def test_nodes_devices_and_pods_with_the_right_numbers(served, page):
    page.goto(served["url"] + "nodes")
    state = api_state(served["core_v1"])
    shown_nodes = page.locator("section.node").evaluate_all("els => els.map(e => e.dataset.node)")
    assert shown_nodes == [n["name"] for n in state["nodes"]]
    for node in state["nodes"]:
        for device in node["devices"]:
            row = page.locator(f'tr.device[data-device="{device["id"]}"]')
            assert row.locator("td.memory").get_attribute("data-used") == str(device["memory_mib"]["used"])
            assert row.locator("td.memory").get_attribute("data-total") == str(device["memory_mib"]["total"])
            assert row.locator("td.cores").get_attribute("data-used") == str(device["cores"]["used"])
            assert row.locator("td.slots").get_attribute("data-used") == str(device["slots"]["used"])
            for holder in device["pods"]:
                assert f"{holder['namespace']}/{holder['pod']}" in row.locator("td.holders").inner_text()
    held = sum(d["slots"]["used"] for n in state["nodes"] for d in n["devices"])
    assert held >= 2  # the gpumem and dcu examples hold devices
    screenshot(page, "nodes")
    page.goto(served["url"])
    vendors = page.locator("section.vendor").evaluate_all("els => els.map(e => e.dataset.vendor)")
    assert vendors == sorted({d["vendor"] for n in state["nodes"] for d in n["devices"]})
    for vendor in vendors:
        devices = [d for n in state["nodes"] for d in n["devices"] if d["vendor"] == vendor]
        card = page.locator(f'section.vendor[data-vendor="{vendor}"]')
        assert card.locator(".devices").get_attribute("data-value") == str(len(devices))
    screenshot(page, "overview")
    assert page.errors == []


def test_pending_pod_reasons_in_plain_words(served, page):
    page.goto(served["url"] + "pods")
    row = page.locator('tr.pod[data-phase="Pending"]').first
    text = row.inner_text()
    assert "CardInsufficientMemory" in text and "memory left" in text
    screenshot(page, "pods")


def test_pod_created_through_the_api_server_appears_without_reload(served, page):
    page.goto(served["url"] + "pods")
    page.evaluate("window.notReloaded = true")
    pod = yaml.safe_load((EXAMPLES / "nvidia-gpucores.yaml").read_text())
    pod["metadata"]["name"] = "browser-made"
    for container in pod["spec"]["containers"]:  # quantities are strings on the wire (YAML gave numbers)
        limits = container["resources"]["limits"]
        limits.update({k: str(v) for k, v in limits.items()})
    served["core_v1"].create_namespaced_pod(pod["metadata"].get("namespace", "default"), pod)
    page.wait_for_selector('tr.pod[data-pod$="/browser-made"][data-phase="Running"]', timeout=30_000)
    assert page.evaluate("window.notReloaded") is True
    grants = page.locator('tr.pod[data-pod$="/browser-made"] .grant').all_inner_texts()
    assert grants and all("NVIDIA" in g for g in grants)
    screenshot(page, "pods-after-create")
    served["core_v1"].delete_namespaced_pod("browser-made", pod["metadata"].get("namespace", "default"))
    page.wait_for_selector('tr.pod[data-pod$="/browser-made"]', state="detached", timeout=30_000)


def test_filters_reload_with_the_chosen_vendor(served, page):
    page.goto(served["url"] + "nodes")
    page.select_option("#filter-vendor", "DCU")
    page.wait_for_url("**/nodes?vendor=DCU")
    vendors = set(page.locator("tr.device").evaluate_all("els => els.map(e => e.dataset.vendor)"))
    assert vendors == {"DCU"}


def test_simulation_page_plots_a_loaded_file(served, page, tmp_path: Path):
    runs = [
        {
            "policy": policy,
            "seed": seed,
            "alloc_at_arrived": [min(i * factor, 100) for i in range(131)],
            "alloc_at_100": 90 + seed / 100,
            "placed": 10,
            "failed": 1,
        }
        for policy, factor in (("binpack", 1.0), ("fgd", 0.95))
        for seed in (42, 43)
    ]
    path = tmp_path / "sim.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in runs))
    page.goto(served["url"] + "simulation")
    page.set_input_files("#sim-file", str(path))
    page.wait_for_function("document.body.dataset.plotted === '2'")
    rows = page.locator("#sim-table tbody tr").evaluate_all("els => els.map(e => e.dataset.policy)")
    assert rows == ["binpack", "fgd"]
    screenshot(page, "simulation")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json")
    page.set_input_files("#sim-file", str(bad))
    page.wait_for_selector("#sim-error:not([hidden])")
    assert "line 1 is not JSON" in page.inner_text("#sim-error")
    assert page.errors == []
