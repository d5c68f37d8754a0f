"""``hami dra`` as a user runs it: ``slices`` prints what would be published; ``serve`` in a real
process publishes into the in-memory API server, registers its sockets and deletes its slices on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kubernetes
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("HAMI_")}, "HAMI_INVENTORY": str(EXAMPLES / "nodes.yaml")}


def test_slices_prints_the_nodes_pool(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hami.cli", "dra", "slices", "--node-name", "mlu-370", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (slice_,) = json.loads(done.stdout)
    assert slice_["spec"]["pool"]["name"] == "mlu-370" and len(slice_["spec"]["devices"]) == 4


def test_classes_prints_one_per_vendor_kind_and_hami_io() -> None:
    done = subprocess.run([sys.executable, "-m", "hami.cli", "dra", "classes"], capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    names = [c["metadata"]["name"] for c in yaml.safe_load_all(done.stdout)]
    assert names[0] == "hami.io" and {"nvidia.hami.io", "mlu.hami.io", "ascend910b3.hami.io"} <= set(names)


def _wait(predicate: Any, what: str, proc: subprocess.Popen[str]) -> None:
    for _ in range(600):  # a bound on polls, not a timing assertion
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"hami dra serve exited ({proc.returncode}) before {what}: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.1)
    raise AssertionError(f"never saw {what}")


def test_serve_publishes_then_cleans_up_on_sigterm(kube_apiserver: Any, kube_client: Any, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(kube_apiserver.kubeconfig()))
    sockets = Path(tempfile.mkdtemp(prefix="dra", dir="/tmp"))
    api = kubernetes.client.CustomObjectsApi(kube_client)

    def slices() -> list[Any]:
        return list(api.list_cluster_custom_object("resource.k8s.io", "v1", "resourceslices")["items"])

    args = [
        sys.executable,
        "-m",
        "hami.cli",
        "dra",
        "serve",
        "--node-name",
        "dcu-z100",
        "--kubeconfig",
        str(kubeconfig),
        "--registry-dir",
        str(sockets / "r"),
        "--plugin-dir",
        str(sockets / "p"),
        "--cdi-dir",
        str(tmp_path / "cdi"),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    proc = subprocess.Popen(args, env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: (sockets / "r" / "hami.io-reg.sock").exists() and slices(), "the slice and the registration socket", proc)
        (published,) = slices()
        assert published["spec"]["nodeName"] == "dcu-z100" and len(published["spec"]["devices"]) == 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert slices() == []
        assert not (sockets / "r" / "hami.io-reg.sock").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        shutil.rmtree(sockets, ignore_errors=True)
