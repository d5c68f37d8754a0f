"""Issue 28 through the agent: it writes the node's isolation annotation and an event when the state
changes, kubelet sees one slot per device whose isolation is missing, ``/metrics`` serves
``hami_isolation_ready``; Hygon's check (the virtualization module answering ``hy-smi virtual``) and
the Ascend and Cambricon ones."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from hami.fakes.tools import FakeTools
from hami.node.agent import Agent, AgentOptions
from hami.node.devices import discover_node
from hami.plugin.manager import BackendManager
from hami.sdk import Enforcement, NodeContext, PhysicalDevice
from hami.wire.isolation import ISOLATION_ANNOTATION
from hami_ascend.plugin import INFO as ASCEND
from hami_ascend.plugin import AscendBackend
from hami_cambricon.plugin import CambriconBackend
from hami_hygon.plugin import HygonBackend

HYGON_FIXTURES = Path(__file__).parents[2] / "backends" / "hygon" / "tests" / "fixtures"


@pytest.fixture
def bw1000(tmp_path, monkeypatch):
    """A BW1000 host whose hy-smi answers only the default table: no virtualization module (published recording)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv("HAMI_INVENTORY", raising=False)
    FakeTools(bin_dir, tmp_path / "calls.jsonl", HYGON_FIXTURES).install("hy-smi", {"": "hy-smi_bw1000_hcu2.txt"})

    def loaded(**config):
        manager = BackendManager(allow=(), deny=())
        manager.register(HygonBackend(), name="hygon")
        manager.configure("hygon", {"sysfs_root": str(tmp_path / "nosys"), "memory_mib": 65520, **config})
        return manager

    return loaded


def test_without_the_virtualization_module_dcus_are_whole_only(bw1000, tmp_path):
    found = discover_node(bw1000(), "bw", tmp_path / "state")
    assert [(d.physical.attributes["virtualization"], d.schedulable.count, d.isolation) for d in found.devices] == [
        (False, 1, "whole-only")
    ] * 2
    assert "the virtualization module is not loaded" in found.devices[0].isolation_reason
    assert [d.isolation for d in discover_node(bw1000(advisory_limits=True), "bw", tmp_path / "state").devices] == ["advisory"] * 2


def test_the_agent_annotates_the_node_sends_one_event_and_serves_the_gauge(bw1000, tmp_path, core_v1, kube_apiserver):
    core_v1.create_node({"metadata": {"name": "bw"}})
    options = AgentOptions("bw", tmp_path / "kubelet", state_dir=tmp_path / "state", watch_pods=False, metrics_bind=("127.0.0.1", 0))
    agent = Agent(bw1000(), core_v1, options, None, insecure_skip_signature=True)
    try:
        agent.start()
        assert agent.node_registered.wait(10)
        node = json.loads(core_v1.read_node("bw", _preload_content=False).data)
        state = json.loads(node["metadata"]["annotations"][ISOLATION_ANNOTATION])
        assert state["status"] == "False"
        assert [(m["state"], m.get("devices")) for m in state["modes"]] == [("enforced", None)] + [
            ("whole-only", [d.id]) for d in agent.discovery.devices
        ]
        agent.registrar.write(agent.discovery, {})  # the next registration: same state, no second event
        events = json.loads(core_v1.list_namespaced_event("default", _preload_content=False).data)["items"]
        ours = [e for e in events if e["involvedObject"]["kind"] == "Node" and e["involvedObject"]["name"] == "bw"]
        assert [(e["type"], e["reason"]) for e in ours] == [("Warning", "IsolationMissing")]
        assert "virtualization module is not loaded" in ours[0]["message"]
        assert agent.metrics_server is not None
        text = urllib.request.urlopen(f"{agent.metrics_server.url}/metrics", timeout=5).read().decode()
        assert 'hami_isolation_ready{mode="all",node="bw",vendor="DCU",zone="vGPU"} 0.0' in text
        assert [d.ID for d in agent.servers["hygon.com/dcunum"].servicer.devices] == [f"{d.id}::0" for d in agent.discovery.devices]
    finally:
        agent.stop()


def test_ascend_needs_npu_smi_to_create_vnpus(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    chips = [PhysicalDevice(id="npu-0", vendor="Ascend910B", type="Ascend910B", memory=65536)]
    backend = AscendBackend(ASCEND)
    (missing,) = backend.hami_enforcement(chips, {"npu_smi": "npu-smi"}, NodeContext("n"))
    assert not missing.ready and "npu-smi is not on the agent's PATH" in missing.reason
    assert backend.hami_enforcement(chips, {"vnpu_create": "runtime"}, NodeContext("n")) == []  # the runtime's: unverified
    tool = tmp_path / "npu-smi"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert backend.hami_enforcement(chips, {"npu_smi": "npu-smi"}, NodeContext("n")) == [
        Enforcement("Ascend910B", "", mechanism="vNPU partitions (npu-smi create-vnpu)")
    ]


def test_cambricon_vouches_only_for_cards_cnmon_listed():
    cards = [
        PhysicalDevice(id="MLU-0", vendor="MLU", type="MLU370", memory=24576, attributes={"cnmon": "v5.10"}),
        PhysicalDevice(id="MLU-1", vendor="MLU", type="MLU370", memory=24576, index=1),
    ]
    reports = CambriconBackend().hami_enforcement(cards, {}, NodeContext("n"))
    assert [(r.ready, r.device_ids) for r in reports] == [(True, ()), (False, ("MLU-1",))]
    assert all(r.ready for r in CambriconBackend().hami_enforcement(cards, {}, NodeContext("n", simulated=True)))


def test_hami_devices_shows_isolation_per_device(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hami.node.cli import devices_command

    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(
        "nodes:\n  - name: n1\n    devices:\n"
        "      - {vendor: NVIDIA, type: A100, memory: 40960, count: 1}\n"
        "      - {vendor: NVIDIA, type: A100, memory: 40960, count: 1, index: 1, attributes: {isolation_missing: HAMi-core is not installed}}\n"
    )
    monkeypatch.setenv("HAMI_INVENTORY", str(inventory))
    monkeypatch.setenv("HAMI_BACKENDS", "nvidia")
    rows = json.loads(CliRunner().invoke(devices_command, ["--json", "--node-name", "n1"]).stdout)
    assert [(r["index"], r["slots"], r["isolation"]) for r in rows] == [(0, 10, "enforced"), (1, 1, "whole-only")]
    table = CliRunner().invoke(devices_command, ["--node-name", "n1"])
    assert "whole-only: nvidia NVIDIA index 1 (NVIDIA-n1-1): HAMi-core is not installed (simulated)" in table.output


def test_hami_top_marks_whole_only_devices():
    from hami.plugin.manager import load_backends
    from hami.sdk import SchedulableDevice
    from hami.top import render, snapshot
    from hami.wire.codec import encode_node_devices
    from hami.wire.isolation import ModeState, encode_isolation

    manager = load_backends(allow=("nvidia",))
    gpus = [
        SchedulableDevice(id=f"GPU-{i}", vendor="NVIDIA", type="A100", count=1 + 9 * i, memory=40960, index=i, mode="hami-core")
        for i in range(2)
    ]
    missing = ModeState("NVIDIA", "hami-core", "whole-only", "HAMi-core", "libvgpu.so is missing", ("GPU-0",))
    annotations = {
        "hami.io/node-nvidia-register": encode_node_devices(gpus, "json"),
        ISOLATION_ANNOTATION: encode_isolation([ModeState("NVIDIA", "hami-core", "enforced"), missing]),
    }
    view = snapshot(manager.kinds, [{"metadata": {"name": "n", "annotations": annotations}}], [])
    devices = view["nodes"][0]["devices"]
    assert [(d["id"], d["isolation"]) for d in devices] == [("GPU-0", "whole-only"), ("GPU-1", "enforced")]
    assert devices[0]["isolation_reason"] == "libvgpu.so is missing"
    assert render(view, width=200).count("whole-only") == 1
