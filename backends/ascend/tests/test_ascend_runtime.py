"""Prepare/release (vNPU create/destroy through the fake npu-smi) and container edits for every mode."""

from __future__ import annotations

import json
import time

import pytest

from hami.sdk import BackendError, DeviceNode, Grant, Mount, NodeContext
from hami_ascend.plugin import plugin

SOFT = {"huawei.com/vnpu-mode": "hami-core"}


def pod(uid="uid-1", annotations=None):
    return {"metadata": {"name": "p", "namespace": "default", "uid": uid, "annotations": dict(annotations or {})}}


CONTAINER = {"name": "main"}


class OnNode:
    """The manager's runtime calls with the node's context, as the agent makes them (the manager finds
    the granted chips by discovery on that node)."""

    def __init__(self, manager, node):
        self.manager, self.node = manager, node

    def configure(self, *args):
        self.manager.configure(*args)

    def prepare(self, grants, pod, container):
        self.manager.prepare(grants, pod, container, self.node)

    def container_edits(self, grants, pod, container):
        return self.manager.container_edits(grants, pod, container, self.node)

    def release(self, grants, pod, container):
        self.manager.release(grants, pod, container, self.node)


@pytest.fixture
def node(fake_npu_smi, hami_manager, register_backend, tmp_path):
    """A 910A-class node discovered through the fake npu-smi; its vNPU ledger in its state dir."""
    fake_npu_smi.replay_info("info_910a_8card.txt")
    register_backend(plugin, config={"host_root": str(tmp_path / "host")})
    context = NodeContext("n1", config=hami_manager.config("ascend"), state_dir=tmp_path / "state")
    devices = hami_manager.discover("ascend", context)
    return OnNode(hami_manager, context), devices, fake_npu_smi, tmp_path


def test_prepare_creates_the_template_vnpu_and_release_destroys_it(node):
    manager, devices, smi, tmp = node
    grants = [Grant(devices[5].id, "Ascend910A", 4369, 14)]
    manager.prepare(grants, pod(), CONTAINER)
    assert smi.set_calls() == [["set", "-t", "create-vnpu", "-i", "5", "-c", "0", "-f", "vir04", "-v", str(5 * 16 + 100)]]
    ledger = json.loads((tmp / "state" / "vnpus.json").read_text())
    assert ledger["uid-1/main"][0]["vnpu_id"] == 180 and ledger["uid-1/main"][0]["template"] == "vir04"
    edits = manager.container_edits(grants, pod(), CONTAINER)
    assert dict(edits.env) == {"ASCEND_VISIBLE_DEVICES": "180", "ASCEND_RUNTIME_OPTIONS": "VIRTUAL"}
    assert edits.devices[0] == DeviceNode("/dev/davinci180", "/dev/vdavinci180")
    assert {d.host_path for d in edits.devices[1:]} == {"/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"}
    manager.release(grants, pod(), CONTAINER)
    assert smi.set_calls()[-1] == ["set", "-t", "destroy-vnpu", "-i", "5", "-c", "0", "-v", "180"]
    assert json.loads((tmp / "state" / "vnpus.json").read_text()) == {}


def test_prepare_and_release_are_idempotent(node):
    manager, devices, smi, _ = node
    grants = [Grant(devices[0].id, "Ascend910A", 2184, 7)]
    manager.prepare(grants, pod(), CONTAINER)
    manager.prepare(grants, pod(), CONTAINER)  # kubelet retried Allocate
    assert len(smi.set_calls()) == 1
    manager.release(grants, pod(), CONTAINER)
    manager.release(grants, pod(), CONTAINER)
    assert [c[2] for c in smi.set_calls()] == ["create-vnpu", "destroy-vnpu"]


def test_two_containers_on_one_chip_get_different_vnpu_ids(node):
    manager, devices, smi, _ = node
    grants = [Grant(devices[1].id, "Ascend910A", 2184, 7)]
    manager.prepare(grants, pod("a"), CONTAINER)
    manager.prepare(grants, pod("b"), CONTAINER)
    assert [c[-1] for c in smi.set_calls()] == ["116", "117"]
    assert manager.container_edits(grants, pod("b"), CONTAINER).env["ASCEND_VISIBLE_DEVICES"] == "117"


def test_a_failed_create_rolls_back_and_names_the_command(node, fake_npu_smi):
    manager, devices, smi, tmp = node
    first = [Grant(devices[2].id, "Ascend910A", 2184, 7)]
    manager.prepare(first, pod("a"), CONTAINER)
    smi.fail("create-vnpu:2")
    with pytest.raises(BackendError) as caught:
        manager.prepare([Grant(devices[3].id, "Ascend910A", 2184, 7)], pod("b"), CONTAINER)
    message = str(caught.value)
    assert "creating vNPU 148 (vir02)" in message and "create-vnpu -i 3 -c 0 -f vir02 -v 148 exited with 1" in message
    assert list(json.loads((tmp / "state" / "vnpus.json").read_text())) == ["a/main"]
    with pytest.raises(BackendError, match="has no vNPU"):
        manager.container_edits([Grant(devices[3].id, "Ascend910A", 2184, 7)], pod("b"), CONTAINER)


def test_rollback_destroys_what_was_created_before_the_failure(node):
    """The vNPU ledger plans several vNPUs at once (a plan is per container); the second fails."""
    from hami_ascend import vnpu
    from hami_ascend.chips import packaged_table
    from hami_ascend.npusmi import NpuSmi

    _manager, devices, smi, tmp = node
    chip = packaged_table()["Ascend910A"]
    plan = [(Grant(d.id, "Ascend910A", 2184, 7), chip, d.attributes, "vir02") for d in devices[:2]]
    smi.fail("create-vnpu:2")
    ledger = vnpu.Ledger(str(tmp / "other"))
    with pytest.raises(BackendError) as caught:
        vnpu.create("x/c", plan, ledger, NpuSmi())
    assert [c[2] for c in smi.set_calls()] == ["create-vnpu", "create-vnpu", "destroy-vnpu"]
    assert smi.set_calls()[-1][-1] == "100" and "rolled back" in str(caught.value)
    assert ledger.get("x/c") == ()


def test_a_failed_rollback_is_reported(node):
    from hami_ascend import vnpu
    from hami_ascend.chips import packaged_table
    from hami_ascend.npusmi import NpuSmi

    _manager, devices, smi, _tmp = node
    chip = packaged_table()["Ascend910A"]
    plan = [(Grant(d.id, "Ascend910A", 2184, 7), chip, d.attributes, "vir02") for d in devices[:2]]
    smi.fail("create-vnpu:2", "destroy-vnpu:*")
    with pytest.raises(BackendError, match="rollback could not destroy vNPU\\(s\\) 100"):
        vnpu.create("x/c", plan, vnpu.Ledger(None), NpuSmi())


def test_a_failed_destroy_keeps_the_vnpu_for_the_next_release(node):
    manager, devices, smi, tmp = node
    grants = [Grant(devices[4].id, "Ascend910A", 2184, 7)]
    manager.prepare(grants, pod(), CONTAINER)
    smi.fail("destroy-vnpu:1")
    with pytest.raises(BackendError, match=r"releasing container uid-1/main: .*destroy-vnpu -i 4 -c 0 -v 164 exited with 1"):
        manager.release(grants, pod(), CONTAINER)
    assert json.loads((tmp / "state" / "vnpus.json").read_text())["uid-1/main"][0]["vnpu_id"] == 164
    manager.release(grants, pod(), CONTAINER)
    assert json.loads((tmp / "state" / "vnpus.json").read_text()) == {}


def test_the_ledger_survives_an_agent_restart(node):
    from hami_ascend import vnpu

    manager, devices, _smi, tmp = node
    grants = [Grant(devices[6].id, "Ascend910A", 2184, 7)]
    manager.prepare(grants, pod(), CONTAINER)
    restarted = vnpu.Ledger(str(tmp / "state"))
    assert [v.vnpu_id for v in restarted.get("uid-1/main")] == [196]


def test_whole_chips_need_no_vnpu(node):
    manager, devices, smi, _ = node
    grants = [Grant(devices[0].id, "Ascend910A", 32768, 100), Grant(devices[1].id, "Ascend910A", 32768, 100)]
    manager.prepare(grants, pod(), CONTAINER)
    assert smi.set_calls() == []
    edits = manager.container_edits(grants, pod(), CONTAINER)
    assert dict(edits.env) == {"ASCEND_VISIBLE_DEVICES": "0,1"}
    assert [d.host_path for d in edits.devices[:2]] == ["/dev/davinci0", "/dev/davinci1"]
    manager.release(grants, pod(), CONTAINER)
    assert smi.set_calls() == []


def test_runtime_mode_leaves_the_vnpu_to_the_ascend_docker_runtime(node):
    manager, devices, smi, _ = node
    manager.configure("ascend", {"vnpu_create": "runtime"})
    grants = [Grant(devices[3].id, "Ascend910A", 8738, 27)]
    manager.prepare(grants, pod(), CONTAINER)
    edits = manager.container_edits(grants, pod(), CONTAINER)
    assert dict(edits.env) == {"ASCEND_VISIBLE_DEVICES": "3", "ASCEND_VNPU_SPECS": "vir08"} and smi.set_calls() == []


def test_soft_split_refuses_without_the_vnpu_core_library(node):
    manager, devices, smi, tmp = node
    grants = [Grant(devices[0].id, "Ascend910A", 5000, 30)]
    with pytest.raises(BackendError) as caught:
        manager.prepare(grants, pod(annotations=SOFT), CONTAINER)
    assert "/usr/local/hami-vnpu-core is missing" in str(caught.value) and str(tmp / "host") in str(caught.value)
    with pytest.raises(BackendError, match="hami-vnpu-core"):
        manager.container_edits(grants, pod(annotations=SOFT), CONTAINER)
    assert smi.set_calls() == []


def test_soft_split_edits_follow_hami_s_vnpu_core_contract(node):
    manager, devices, smi, tmp = node
    core = tmp / "host" / "usr/local/hami-vnpu-core"
    core.mkdir(parents=True)
    (core / "ld.so.preload").write_text("/hami-vnpu-core/libvnpu.so\n")
    grants = [Grant(devices[2].id, "Ascend910A", 5000, 30)]
    manager.prepare(grants, pod(annotations=SOFT), CONTAINER)
    assert (core / "containers" / "uid-1_main").is_dir() and smi.set_calls() == []
    edits = manager.container_edits(grants, pod(annotations=SOFT), CONTAINER)
    assert dict(edits.env) == {
        "ASCEND_VISIBLE_DEVICES": "2",
        "NPU_MEM_QUOTA": "5000",
        "NPU_PRIORITY": "30",
        "NPU_GLOBAL_SHM_PATH": "/hami-shared-region/2_global_registry",
        "NPU_LOCAL_SHM_PATH": "/hami-vnpu-shmem/vnpu_local_shmem",
    }
    assert Mount("/etc/ld.so.preload", "/usr/local/hami-vnpu-core/ld.so.preload", read_only=True) in edits.mounts
    assert Mount("/hami-vnpu-shmem", "/usr/local/hami-vnpu-core/containers/uid-1_main") in edits.mounts
    assert edits.devices[0] == DeviceNode("/dev/davinci2", "/dev/davinci2")
    manager.release(grants, pod(annotations=SOFT), CONTAINER)
    assert not (core / "containers" / "uid-1_main").exists()


def test_grants_of_an_undiscovered_device_are_refused(node):
    manager, *_ = node
    with pytest.raises(BackendError, match="'Ascend910A-elsewhere-0' is not on node 'n1'"):
        manager.prepare([Grant("Ascend910A-elsewhere-0", "Ascend910A", 2184, 7)], pod(), CONTAINER)


def test_simulated_nodes_do_not_look_for_the_host_library(tmp_path):
    from hami.errors import BackendError
    from hami_ascend.edits import require_vnpu_core

    with pytest.raises(BackendError, match="hami-vnpu-core"):
        require_vnpu_core({"host_root": str(tmp_path)}, simulated=False)
    require_vnpu_core({"host_root": str(tmp_path)}, simulated=True)


def test_allocation_annotations_are_hami_s_runtime_info():
    """HAMi v2.10.0 pkg/device/ascend/device.go PatchAnnotations: ``huawei.com/<chip>`` is
    json.Marshal([]RuntimeInfo{UUID, temp, memory, core}) with omitempty over every granted chip,
    container by container; ``temp`` is trimMemory's template; ``predicate-time`` is Unix seconds."""
    from hami.plugin.manager import BackendManager

    manager = BackendManager(strict=True, allow=(), deny=())
    manager.register(plugin, distribution="in-process")
    shared = [Grant("Ascend910A-n1-5", "Ascend910A", 4369, 14)]
    whole = [Grant("Ascend910A-n1-0", "Ascend910A", 32768, 100), Grant("Ascend910A-n1-1", "Ascend910A", 32768, 100)]
    before = int(time.time())
    found = manager.allocation_annotations("Ascend910A", [[], shared, whole], {}, pod())
    after = int(time.time())
    assert found["huawei.com/Ascend910A"] == (
        '[{"UUID":"Ascend910A-n1-5","temp":"vir04","memory":4369,"core":14},'
        '{"UUID":"Ascend910A-n1-0","memory":32768,"core":100},{"UUID":"Ascend910A-n1-1","memory":32768,"core":100}]'
    )
    assert set(found) == {"huawei.com/Ascend910A", "predicate-time"} and before <= int(found["predicate-time"]) <= after
    soft = manager.allocation_annotations("Ascend910A", [[Grant("Ascend910A-n1-2", "Ascend910A", 5000, 0)]], {}, pod(annotations=SOFT))
    assert json.loads(soft["huawei.com/Ascend910A"]) == [{"UUID": "Ascend910A-n1-2", "memory": 5000}]  # hami-core: no temp, core 0 left out
    assert manager.allocation_annotations("Ascend910A", [[], []], {}, pod()) == {}


def test_simulated_nodes_keep_vnpus_in_their_own_state_dir(hami_manager, register_backend, fake_npu_smi, tmp_path):
    """The sandbox's nodes share one process: each keeps its vNPU ledger in its own state directory,
    and nothing runs npu-smi or touches the host."""
    inventory = tmp_path / "nodes.yaml"
    chips = [{"vendor": "Ascend910A", "type": "Ascend910A", "memory": 32768, "count": 2}]
    inventory.write_text(json.dumps({"nodes": [{"name": "a", "devices": chips}, {"name": "b", "devices": chips}]}))
    register_backend(plugin, config={"inventory": str(inventory), "host_root": str(tmp_path / "host")})
    nodes = {name: hami_manager.node_context("ascend", name, state_root=tmp_path / name) for name in "ab"}
    for node in nodes.values():
        assert node.simulated
        (device, _) = hami_manager.discover("ascend", node)
        grants = [Grant(device.id, "Ascend910A", 2184, 7)]
        hami_manager.prepare(grants, pod(), CONTAINER, node)
        edits = hami_manager.container_edits(grants, pod(), CONTAINER, node)
        assert dict(edits.env) == {"ASCEND_VISIBLE_DEVICES": "100", "ASCEND_RUNTIME_OPTIONS": "VIRTUAL"}  # each node's own first id
        soft = [Grant(device.id, "Ascend910A", 5000, 30)]
        hami_manager.prepare(soft, pod("s", annotations=SOFT), CONTAINER, node)
    for name in "ab":
        assert list(json.loads((tmp_path / name / "ascend" / "vnpus.json").read_text())) == ["uid-1/main"]
    hami_manager.release(grants, pod(), CONTAINER, nodes["b"])
    assert json.loads((tmp_path / "b" / "ascend" / "vnpus.json").read_text()) == {}
    assert fake_npu_smi.calls() == [] and not (tmp_path / "host").exists()
