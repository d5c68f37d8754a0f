"""The sandbox at cluster size (issue 29): a component failure gives a partial report, not a traceback;
a 30-node, 300-pod run puts every pod in its phase without a warning; the scheduler cache counts
what is bound."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from hami.sandbox.cli import sandbox_command
from hami.sandbox.cluster import Sandbox
from hami.sandbox.outcome import PodOutcome
from hami.sandbox.runner import GIVE_UP_AFTER, run_pods


def test_run_pods_reports_a_failing_pod_and_gives_up_on_a_broken_component():
    pods = [{"metadata": {"name": f"p{i}"}} for i in range(10)]

    def submit(pod):
        name = pod["metadata"]["name"]
        if name in ("p1",) or int(name[1:]) >= 4:
            raise ConnectionRefusedError(111, "Connection refused")
        return PodOutcome("default", name, "Running", "node-1")

    seen = []
    result = run_pods(submit, pods, lambda done, total, s: seen.append((done, total)), every=0.0)
    assert [o.name for o in result.outcomes] == ["p0", "p2", "p3"]
    assert result.error == "pod default/p1: ConnectionRefusedError: [Errno 111] Connection refused"
    reasons = {p["name"]: p["reason"] for p in result.not_run}
    assert reasons["p1"].startswith("submission failed: ConnectionRefusedError")
    assert [n for n in reasons if reasons[n].startswith("submission failed")] == ["p1", "p4", "p5", "p6"][: 1 + GIVE_UP_AFTER]
    assert all(reasons[f"p{i}"].startswith("not submitted: the sandbox stopped after pod default/p1") for i in range(4 + GIVE_UP_AFTER, 10))
    assert len(result.outcomes) + len(result.not_run) == 10 and not result.ok
    assert seen[-1] == (10, 10)


def test_the_extender_dying_mid_run_still_prints_a_json_document(write_cluster, tmp_path, monkeypatch):
    nodes_file, pods_file = write_cluster(tmp_path, 2, 6)
    real_submit = Sandbox.submit
    calls = []

    def submit(self, pod):
        calls.append(pod["metadata"]["name"])
        if len(calls) == 3:
            self.service.extender_server.stop()  # kube-scheduler's calls to /filter are refused from now on
        return real_submit(self, pod)

    monkeypatch.setattr(Sandbox, "submit", submit)
    result = CliRunner().invoke(sandbox_command, ["--nodes", str(nodes_file), "--pods", str(pods_file), "--json"])
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert [(p["name"], p["phase"]) for p in document["pods"]] == [("p-00000", "Running"), ("p-00001", "Running")]
    assert document["error"].startswith("pod default/p-00002: URLError: ") and "Connection refused" in document["error"]
    reasons = {p["name"]: p["reason"] for p in document["not_run"]}
    assert set(reasons) == {f"p-{i:05d}" for i in range(2, 6)}
    assert reasons["p-00005"].startswith("not submitted: the sandbox stopped after pod default/p-00002")
    assert len(document["nodes"]) == 2
    assert "error: pod default/p-00002" in result.stderr and "(2 of 6 pods running, 4 not run)" in result.stderr


def test_the_api_server_dying_mid_run_denies_the_rest_at_admission_saying_why(write_cluster, tmp_path, monkeypatch):
    nodes_file, pods_file = write_cluster(tmp_path, 1, 3)
    real_submit = Sandbox.submit

    def submit(self, pod):
        if pod["metadata"]["name"] == "p-00001":
            self.api.stop()
        return real_submit(self, pod)

    monkeypatch.setattr(Sandbox, "submit", submit)
    result = CliRunner().invoke(sandbox_command, ["--nodes", str(nodes_file), "--pods", str(pods_file), "--json"])
    assert result.exit_code == 1
    pods = json.loads(result.stdout)["pods"]
    assert [p["phase"] for p in pods] == ["Running", "Rejected", "Rejected"]
    assert all("cannot check ResourceQuota" in p["reason"] and "Connection refused" in p["reason"] for p in pods[1:])


def test_a_sandbox_that_cannot_start_prints_the_error_and_every_pod_not_run(write_cluster, tmp_path, monkeypatch):
    nodes_file, pods_file = write_cluster(tmp_path, 1, 3)

    def broken_start(self, timeout=30.0):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(Sandbox, "start", broken_start)
    result = CliRunner().invoke(sandbox_command, ["--nodes", str(nodes_file), "--pods", str(pods_file), "--json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["pods"] == [] and document["error"] == "the sandbox failed: OSError: [Errno 98] Address already in use"
    assert [p["name"] for p in document["not_run"]] == ["p-00000", "p-00001", "p-00002"]


def test_the_scheduler_cache_counts_bound_pods_and_forgets_deleted_ones(write_cluster, tmp_path):
    nodes_file, _ = write_cluster(tmp_path, 1, 0)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cpu-hog"},
        "spec": {
            "schedulerName": "default-scheduler",
            "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "100"}}}],
        },
    }
    with Sandbox(nodes_file) as sandbox:
        assert sandbox.submit(pod).phase == "Running"
        second = sandbox.submit({**pod, "metadata": {"name": "cpu-hog-2"}})
        assert second.phase == "Pending" and "Insufficient cpu" in second.reason  # 128 cpu: the first one counts at once
        sandbox.delete("default", "cpu-hog")
        assert sandbox.submit({**pod, "metadata": {"name": "cpu-hog-3"}}).phase == "Running"


@pytest.mark.slow
def test_thirty_nodes_three_hundred_pods_every_pod_running_without_a_warning(write_cluster, tmp_path):
    nodes_file, pods_file = write_cluster(tmp_path, 30, 300)
    result = subprocess.run(
        [sys.executable, "-m", "hami.cli", "sandbox", "--nodes", str(nodes_file), "--pods", str(pods_file), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)
    assert len(document["pods"]) == 300 and {p["phase"] for p in document["pods"]} == {"Running"}
    used = sum(d["used_slots"] for n in document["nodes"] for d in n["devices"])
    assert used == 300
    assert "WARNING" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "pods/s" not in result.stderr  # no progress lines with --json
