"""The dashboard's HTTP endpoints over a synthetic cluster: JSON API, pages, fragments, server-sent events,
filters, static files, and what it refuses (writes, foreign Host headers, secrets)."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hami.errors import HamiError
from hami.plugin.model import Grant
from hami.ui.server import load_simulation

from .conftest import add_pod


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def view(url: str, query: str = "") -> dict:
    status, body, _ = get(f"{url}api/view{query}")
    assert status == 200, body
    return json.loads(body)


def wait_for(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_json_view_has_the_clusters_numbers(dashboard):
    state = view(dashboard)
    by_vendor = {v["vendor"]: v for v in state["overview"]}
    assert set(by_vendor) == {"NVIDIA", "DCU"}
    gpu = by_vendor["NVIDIA"]
    assert (gpu["nodes"], gpu["devices"], gpu["pods_running"]) == (2, 8, 4)
    assert gpu["memory_mib"] == {"used": 4 * 12288, "total": 8 * 81920, "ratio": round(4 * 12288 / (8 * 81920), 4)}
    assert gpu["cores"]["used"] == 4 * 30 and gpu["slots"]["used"] == 4
    assert by_vendor["DCU"]["devices"] == 2 and by_vendor["DCU"]["slots"]["used"] == 0
    node = next(n for n in state["nodes"] if n["name"] == "gpu-001")
    device = next(d for d in node["devices"] if d["id"] == "NVIDIA-gpu-001-1")
    assert device["memory_mib"]["used"] == 12288 and device["cores"]["used"] == 30
    assert [p["pod"] for p in device["pods"]] == ["train-gpu-001-1"]
    pod = next(p for p in state["pods"] if p["name"] == "train-gpu-000-0")
    assert pod["node"] == "gpu-000" and pod["vendors"] == ["NVIDIA"]
    assert pod["devices"] == [
        {
            "container": "main",
            "node": "gpu-000",
            "device": "NVIDIA-gpu-000-0",
            "vendor": "NVIDIA",
            "type": "NVIDIA A100",
            "memory_mib": 12288,
            "cores": 30,
        }
    ]
    assert state["choices"] == {"vendors": ["DCU", "NVIDIA"], "namespaces": ["ml", "research"], "nodes": ["dcu-000", "gpu-000", "gpu-001"]}


def test_filters_narrow_nodes_pods_and_overview(dashboard):
    state = view(dashboard, "?vendor=DCU")
    assert [n["name"] for n in state["nodes"]] == ["dcu-000"] and state["pods"] == []
    state = view(dashboard, "?namespace=research&node=gpu-001")
    assert [p["name"] for p in state["pods"]] == ["train-gpu-001-1"]
    assert [n["name"] for n in state["nodes"]] == ["gpu-001"]
    assert state["overview"][0]["devices"] == 4 and state["overview"][0]["pods_running"] == 1
    status, body, _ = get(f"{dashboard}api/pods?namespace=nowhere")
    assert (status, json.loads(body)) == (200, [])


def test_pages_render_with_security_headers(dashboard):
    for path, needle in (
        ("", 'id="vendor-NVIDIA"'),
        ("nodes", 'data-device="NVIDIA-gpu-000-0"'),
        ("pods", 'data-pod="ml/train-gpu-000-0"'),
        ("simulation", 'id="sim-chart"'),
    ):
        status, body, headers = get(dashboard + path)
        assert status == 200 and needle in body, path
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    status, body, _ = get(f"{dashboard}fragment/nodes?node=dcu-000")
    assert status == 200 and "<html" not in body and 'data-node="dcu-000"' in body
    assert "gpu-000" not in body.split("</h1>")[1]


def test_static_files_and_unknown_paths(dashboard):
    status, body, headers = get(f"{dashboard}static/chart.umd.min.js")
    assert status == 200 and body.startswith("/*!\n * Chart.js v4.") and headers["Content-Type"].startswith("text/javascript")
    status, body, _ = get(f"{dashboard}static/chart.js.LICENSE.md")
    assert status == 200 and "MIT" in body
    assert get(f"{dashboard}static/../server.py")[0] == 404
    assert get(f"{dashboard}static/nothing.js")[0] == 404
    assert get(f"{dashboard}secrets")[0] == 404
    assert get(f"{dashboard}healthz")[0] == 200


def test_read_only_and_loopback_host_only(dashboard):
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        request = urllib.request.Request(f"{dashboard}api/view", data=b"{}", method=method)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 405
    status, body, _ = get(f"{dashboard}api/view", {"Host": "evil.example:8080"})
    assert status == 403 and "evil.example" in body
    port = urlsplit(dashboard).port
    assert get(f"{dashboard}api/view", {"Host": f"localhost:{port}"})[0] == 200


def test_no_secret_reaches_a_page(dashboard, kube_apiserver, core_v1, cluster):
    """Env values, annotations (the allocation's signature) and Secrets never appear on a page or in the JSON."""
    core_v1.create_namespaced_secret("ml", {"metadata": {"name": "token"}, "stringData": {"token": "s3cret-value"}}, _preload_content=False)
    add_pod(
        core_v1,
        cluster,
        "with-secret",
        "ml",
        "gpu-000",
        "NVIDIA",
        [[Grant("NVIDIA-gpu-000-3", "NVIDIA", 1024, 10)]],
        {"nvidia.com/gpu": "1"},
        env=[{"name": "PASSWORD", "value": "hunter2-plain"}],
    )
    pod = core_v1.read_namespaced_pod("with-secret", "ml")
    annotation_values = [v for v in (pod.metadata.annotations or {}).values() if len(v) > 20]
    assert annotation_values
    assert wait_for(lambda: any(p["name"] == "with-secret" for p in view(dashboard)["pods"]))
    for path in ("", "nodes", "pods", "api/view", "fragment/pods"):
        body = get(dashboard + path)[1]
        assert "hunter2-plain" not in body and "s3cret-value" not in body and "PASSWORD" not in body
        for value in annotation_values:
            assert value not in body, path


def test_pending_pod_shows_the_schedulers_reasons(dashboard, core_v1):
    core_v1.create_namespaced_pod(
        "ml",
        {
            "metadata": {"name": "waiting"},
            "spec": {
                "containers": [
                    {"name": "main", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "200000"}}}
                ]
            },
        },
        _preload_content=False,
    )
    message = (
        "0/3 nodes are available: 2 CardInsufficientMemory: 200000 MiB needed, at most 81920 MiB free on one NVIDIA device, "
        "1 Insufficient cpu."
    )
    core_v1.patch_namespaced_pod_status(
        "waiting",
        "ml",
        {"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]}},
        _preload_content=False,
    )

    def waiting():
        pods = [p for p in view(dashboard, "?namespace=ml")["pods"] if p["name"] == "waiting" and p["waiting"][0]["source"]]
        return pods[0] if pods else None

    pod = wait_for(waiting)
    assert pod is not None and pod["phase"] == "Pending" and pod["vendors"] == ["NVIDIA"]
    assert [(r["count"], r["text"][:22]) for r in pod["waiting"][0]["reasons"]] == [(2, "CardInsufficientMemory"), (1, "Insufficient cpu")]
    body = get(f"{dashboard}pods?namespace=ml")[1]
    assert "None of the 3 nodes can take this pod." in body and "memory left" in body
    assert get(dashboard)[1].count("waiting") >= 1


def test_server_sent_events_announce_changes(dashboard, core_v1, cluster):
    parts = urlsplit(dashboard)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("GET", "/events")
    response = connection.getresponse()
    assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"

    def next_version() -> int:
        while True:
            line = response.fp.readline().decode()
            if line.startswith("data: "):
                return int(line.removeprefix("data: "))

    first = next_version()
    grants = [[Grant("NVIDIA-gpu-001-3", "NVIDIA", 2048, 5)]]
    add_pod(core_v1, cluster, "new-pod", "ml", "gpu-001", "NVIDIA", grants, {"nvidia.com/gpu": "1"})
    assert next_version() > first
    assert wait_for(lambda: any(p["name"] == "new-pod" for p in view(dashboard)["pods"]))
    connection.close()


def test_event_stream_ends_when_the_server_stops(kube_apiserver, cluster):
    from hami.ui.cli import start_dashboard, stop_dashboard

    ui, server = start_dashboard(kube_apiserver.api_client(), cluster.kinds, port=0)
    sock = socket.create_connection(server.server_address[:2], timeout=10)
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    received = b""
    while b"event: version" not in received:  # headers and the first event may come in separate segments
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    stop_dashboard(ui, server)
    data = b"x"
    while data:  # the stream closes: recv returns b"" (a timeout here fails the test)
        data = sock.recv(4096)
    sock.close()


def test_simulation_file_is_checked_line_by_line(tmp_path: Path):
    good = '{"policy": "binpack", "seed": 42, "alloc_at_arrived": [0, 1.5], "alloc_at_100": 91.2}\n\n'
    assert load_simulation(good)[0]["policy"] == "binpack"
    with pytest.raises(HamiError, match=r"results.jsonl line 3: not JSON"):
        load_simulation(good + "{oops\n", "results.jsonl")
    with pytest.raises(HamiError, match=r"line 1: not a 'hami simulate --json' run"):
        load_simulation('{"policy": 3}')


def test_simulation_is_served(kube_apiserver, cluster):
    from hami.ui.cli import start_dashboard, stop_dashboard, url_of

    runs = load_simulation('{"policy": "fgd", "seed": 1, "alloc_at_arrived": [0, 2, 4], "alloc_at_100": 90.0}')
    ui, server = start_dashboard(kube_apiserver.api_client(), cluster.kinds, port=0, simulation=runs)
    try:
        url = url_of(server)
        assert json.loads(get(f"{url}api/simulation")[1]) == runs
        assert '"policy": "fgd"' in get(f"{url}simulation")[1]
    finally:
        stop_dashboard(ui, server)


def test_nodes_and_pods_are_paged(kube_apiserver, core_v1, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from hami.ui.cli import start_dashboard, stop_dashboard, url_of

    from .conftest import make_cluster

    manager = make_cluster(core_v1, tmp_path, monkeypatch, nodes=30, gpus=1, pods_per_node=4)
    ui, server = start_dashboard(kube_apiserver.api_client(), manager.kinds, port=0)
    try:
        url = url_of(server)
        first = get(f"{url}nodes")[1]
        assert first.count('<section class="node"') == 25 and "Nodes 1–25 of 31" in first and 'rel="next"' in first
        last = get(f"{url}nodes?page=2")[1]
        assert last.count('<section class="node"') == 6 and 'data-node="gpu-029"' in last
        assert get(f"{url}nodes?page=99")[1].count('<section class="node"') == 6  # past the end: the last page
        assert get(f"{url}nodes?page=x")[1].count('<section class="node"') == 25
        pods = get(f"{url}pods?page=2")[1]
        assert pods.count('<tr class="pod') == 20 and "Pods 101–120 of 120" in pods
        assert len(view(url)["pods"]) == 120  # the JSON API is not paged
    finally:
        stop_dashboard(ui, server)


def test_used_figures_where_the_agent_reports_them(dashboard, core_v1):
    """The node's usage summary (hami.io/node-usage, as hami top reads it): shown beside what is allocated."""
    from hami.node.usage import USAGE_ANNOTATION

    summary = {
        "t": 1700000000,
        "devices": {"NVIDIA-gpu-000-0": [5 * 1024**3, 40.0]},
        "shares": {"ml/train-gpu-000-0/main": {"NVIDIA-gpu-000-0": [3 * 1024**3, 35.5, 1]}},
    }
    core_v1.patch_node("gpu-000", {"metadata": {"annotations": {USAGE_ANNOTATION: json.dumps(summary)}}}, _preload_content=False)

    def reported():
        state = view(dashboard)
        return state if state["overview"][1]["usage"]["devices"] else None

    state = wait_for(reported)
    assert state is not None
    assert state["overview"][1]["usage"] == {"devices": 1, "memory_mib": 5120, "utilization": 40.0}
    assert state["overview"][0]["usage"] == {"devices": 0, "memory_mib": 0, "utilization": None}  # the DCU node reports nothing
    pod = next(p for p in state["pods"] if p["name"] == "train-gpu-000-0")
    assert (pod["devices"][0]["used_mib"], pod["devices"][0]["utilization"], pod["devices"][0]["throttled"]) == (3072, 35.5, True)
    nodes = get(f"{dashboard}nodes?node=gpu-000")[1]
    assert 'data-used-now="5120"' in nodes and "using 3 GiB · 35.5 % busy · throttled" in nodes
    assert "in use now (1 of 8 devices report)" in get(dashboard)[1]
    other = get(f"{dashboard}nodes?node=gpu-001")[1]
    assert "data-used-now" not in other  # no figures where none are reported
