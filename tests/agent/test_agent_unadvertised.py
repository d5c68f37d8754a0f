"""Devices a vendor tool shows but a backend cannot offer: ``hami devices`` lists them with the
reason, the agent logs each once and never registers them (issue 25)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from hami.errors import ValidationError
from hami.fakes.tools import FakeTools
from hami.node.agent import Agent, AgentOptions
from hami.node.cli import devices_command
from hami.node.devices import discover_node
from hami.plugin.manager import BackendManager
from hami.plugin.model import PhysicalDevice
from hami_hygon.plugin import HygonBackend

HYGON_FIXTURES = Path(__file__).parents[2] / "backends" / "hygon" / "tests" / "fixtures"


@pytest.fixture
def bw1000(tmp_path, monkeypatch):
    """A BW1000 host whose hy-smi answers only the default table (published recording)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv("HAMI_INVENTORY", raising=False)
    FakeTools(bin_dir, tmp_path / "calls.jsonl", HYGON_FIXTURES).install("hy-smi", {"": "hy-smi_bw1000_hcu2.txt"})

    def loaded(**kwargs):
        manager = BackendManager(allow=(), deny=())
        manager.register(HygonBackend(), name="hygon")
        manager.configure("hygon", {"sysfs_root": str(tmp_path / "nosys")})
        return manager

    monkeypatch.setattr("hami.plugin.manager.load_backends", loaded)
    return loaded


def test_a_device_not_advertised_needs_its_reason():
    with pytest.raises(ValidationError, match="reason"):
        PhysicalDevice(id="x", vendor="V", type="t", memory=0, advertised=False)
    assert PhysicalDevice(id="x", vendor="V", type="t", memory=0, advertised=False, reason="why").reason == "why"


def test_devices_json_lists_unadvertised_devices_with_the_reason(bw1000):
    result = CliRunner().invoke(devices_command, ["--json", "--node-name", "bw"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    shown = [(r["backend"], r["index"], r["advertised"], r["resource"], r["slots"]) for r in rows]
    assert shown == [("hygon", 0, False, None, 0), ("hygon", 1, False, None, 0)]
    assert all("set memory_mib in the hygon config" in r["reason"] for r in rows)


def test_devices_table_explains_every_device_it_does_not_advertise(bw1000):
    result = CliRunner().invoke(devices_command, ["--node-name", "bw"])
    assert result.exit_code == 0, result.output
    assert result.output.count("not advertised: hygon DCU index") == 2
    assert "install the virtualization module" in result.output
    assert "No devices found" not in result.output


def test_advertised_rows_say_so(bw1000, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("backends:\n  hygon:\n    memory_mib: 65520\n")
    result = CliRunner().invoke(devices_command, ["--json", "--node-name", "bw", "--config", str(config)])
    rows = json.loads(result.stdout)
    assert [(r["advertised"], r["reason"], r["memory_mib"], r["resource"]) for r in rows] == [(True, "", 65520, "hygon.com/dcunum")] * 2


def test_discovery_keeps_unadvertised_devices_out_of_the_split(bw1000):
    found = discover_node(bw1000(), "bw")
    assert found.devices == () and [d.physical.index for d in found.unadvertised] == [0, 1]
    assert found.by_resource() == {}


def test_agent_logs_each_unadvertised_device_once(bw1000, tmp_path, caplog, core_v1):
    options = AgentOptions("bw", tmp_path / "kubelet", state_dir=tmp_path / "state")
    agent = Agent(bw1000(), core_v1, options, None, insecure_skip_signature=True)
    with caplog.at_level(logging.WARNING, logger="hami.node.agent"):
        agent.refresh()
        agent.refresh()
        agent.refresh()
    lines = [r.getMessage() for r in caplog.records if "device_not_advertised" in r.getMessage()]
    assert len(lines) == 2 and "index=0" in lines[0] and "index=1" in lines[1]
    assert "set memory_mib in the hygon config" in lines[0]
    assert agent.servers == {}
