"""``hami devices`` and ``hami agent`` as command objects (the lead attaches them to ``hami``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from hami.fakes.kubelet import FakeKubelet
from hami.node.cli import agent_command, devices_command
from hami.wire.signing import SigningKeys

NODE = "node-1"


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "nodes.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "nodes": [
                    {
                        "name": NODE,
                        "devices": [
                            {"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": "40Gi", "count": 2, "numa": 1},
                            {"vendor": "DCU", "type": "DCU Z100", "memory": 32768},
                            {"vendor": "Ascend910B3", "type": "Ascend910B3", "memory": 65536},
                        ],
                    }
                ]
            }
        )
    )
    return path


@pytest.fixture
def config(tmp_path, inventory):
    path = tmp_path / "agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "backends": {
                    "nvidia": {"inventory": str(inventory), "split_count": 5},
                    "hygon": {"inventory": str(inventory)},
                    "ascend": {"inventory": str(inventory)},
                }
            }
        )
    )
    return path


def test_devices_json_lists_every_backends_devices(config, monkeypatch):
    monkeypatch.delenv("HAMI_INVENTORY", raising=False)
    result = CliRunner().invoke(devices_command, ["--json", "--node-name", NODE, "--config", str(config)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == ["Ascend910B3-node-1-0", "DCU-node-1-0", "NVIDIA-node-1-0", "NVIDIA-node-1-1"]
    gpu = by_id["NVIDIA-node-1-1"]
    assert {k: gpu[k] for k in ("backend", "vendor", "index", "type", "memory_mib", "cores", "slots", "numa", "health", "resource")} == {
        "backend": "nvidia",
        "vendor": "NVIDIA",
        "index": 1,
        "type": "NVIDIA A100",
        "memory_mib": 40960,
        "cores": 100,
        "slots": 5,
        "numa": 1,
        "health": "Healthy",
        "resource": "nvidia.com/gpu",
    }
    assert gpu["slot_ids"][0] == "NVIDIA-node-1-1::0" and len(gpu["slot_ids"]) == 5
    assert by_id["DCU-node-1-0"]["backend"] == "hygon" and by_id["DCU-node-1-0"]["slots"] == 4
    assert by_id["Ascend910B3-node-1-0"]["resource"] == "huawei.com/Ascend910B3"


def test_devices_table_and_inventory_from_the_environment(inventory, monkeypatch):
    monkeypatch.setenv("HAMI_INVENTORY", str(inventory))
    result = CliRunner().invoke(devices_command, ["--node-name", NODE])
    assert result.exit_code == 0, result.output
    assert "NVIDIA-node-1-0" in result.output and "hygon.com/dcunum" in result.output


def test_devices_on_a_node_without_devices(monkeypatch, inventory):
    monkeypatch.setenv("HAMI_INVENTORY", str(inventory))
    result = CliRunner().invoke(devices_command, ["--json", "--node-name", "elsewhere"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_config_must_map_backends_to_settings(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- nvidia\n")
    result = CliRunner().invoke(devices_command, ["--config", str(bad)])
    assert result.exit_code == 2 and "expected a mapping with an optional 'backends' mapping" in result.output


def test_agent_requires_keys_or_an_explicit_opt_out(monkeypatch):
    monkeypatch.delenv("HAMI_SIGNING_KEY_DIR", raising=False)
    result = CliRunner().invoke(agent_command, ["--node-name", NODE])
    assert result.exit_code == 2
    assert "--signing-key-dir" in result.output and "--insecure-skip-signature" in result.output
    monkeypatch.delenv("NODE_NAME", raising=False)
    result = CliRunner().invoke(agent_command, ["--insecure-skip-signature"])
    assert result.exit_code == 2 and "NODE_NAME" in result.output


def test_agent_process_serves_kubelet_with_a_kubeconfig(kube_apiserver, core_v1, kubelet_dir, inventory, tmp_path):
    """The real command in its own process, configured the way the DaemonSet runs it."""
    kubeconfig = kube_apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    keys = tmp_path / "keys"
    keys.mkdir()
    SigningKeys.generate().write(keys, private=False)  # an agent gets the public key only
    env = {**os.environ, "HAMI_INVENTORY": str(inventory), "NODE_NAME": NODE, "HAMI_BACKENDS": "nvidia"}
    code = "from hami.node.cli import agent_command; agent_command()"
    with FakeKubelet(kubelet_dir, NODE, core_v1=core_v1) as kubelet:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "--kubeconfig",
                str(kubeconfig),
                "--device-plugin-dir",
                str(kubelet_dir),
                "--signing-key-dir",
                str(keys),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            kubelet.wait_devices("nvidia.com/gpu", 20, timeout=15)
            kubelet.wait_for(
                lambda: "hami.io/node-nvidia-register" in (core_v1.read_node(NODE).metadata.annotations or {}), what="node annotation"
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, output
    assert "event=registered_with_kubelet resource=nvidia.com/gpu" in output
    assert "event=agent_stopped" in output


def test_devices_reports_what_the_health_hook_says(inventory, monkeypatch):
    from hami import hookimpl
    from hami.backendkit.standard import StandardBackend
    from hami.plugin.manager import BackendManager
    from hami.plugin.model import HealthEvent
    from hami_nvidia.plugin import INFO

    class SickNvidia(StandardBackend):
        @hookimpl
        def hami_device_health(self, devices, config):
            return [HealthEvent(d.id, False, "XID 48") for d in devices if d.id.endswith("-1")]

    def loaded(**kwargs):
        manager = BackendManager(allow=(), deny=())
        manager.register(SickNvidia(INFO), name="nvidia")
        return manager

    monkeypatch.setenv("HAMI_INVENTORY", str(inventory))
    monkeypatch.setattr("hami.plugin.manager.load_backends", loaded)
    result = CliRunner().invoke(devices_command, ["--json", "--node-name", NODE])
    assert result.exit_code == 0, result.output
    health = {r["id"]: r["health"] for r in json.loads(result.stdout)}
    assert health == {"NVIDIA-node-1-0": "Healthy", "NVIDIA-node-1-1": "Unhealthy"}
