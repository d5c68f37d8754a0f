"""Issue 19 item 5: the agent reconciles at start. Pods deleted while it was down are released once
with the devices they held (its pod ledger + the API server + kubelet's PodResources API); pods still
running are re-adopted (nothing prepared or released again)."""

from __future__ import annotations

import json

import pytest

from hami.fakes.agent import pod_manifest, schedule_pod
from hami.node.podresources import PodResourcesClient, PodResourcesError, pod_resources_socket
from hami.node.podwatch import LEDGER_FILE
from hami.plugin.model import Grant
from hami.wire.signing import SigningKeys

NODE = "node-1"
GPU = "nvidia.com/gpu"
DEV0, DEV1 = "NVIDIA-node-1-0", "NVIDIA-node-1-1"
KEYS = SigningKeys.from_seed(b"k" * 32)


def g(device: str, memory: int = 3000) -> Grant:
    return Grant(device, "NVIDIA", memory, 0)


def started(start_agent, manager, kubelet):
    agent = start_agent(manager, NODE, keys=KEYS)
    assert agent.releaser.synced.wait(10), "the agent's first pod list"
    kubelet.wait_devices(GPU, 8)
    return agent


def run_pod(core_v1, kubelet, manager, name, grants):
    containers = {f"c{i}": {GPU: "1"} for i in range(len(grants))}
    core_v1.create_namespaced_pod("default", pod_manifest(name, containers))
    schedule_pod(core_v1, manager, "default", name, NODE, {"NVIDIA": grants}, KEYS)
    result = kubelet.admit(core_v1.read_namespaced_pod(name, "default"))
    assert result.admitted, result.error
    return core_v1.read_namespaced_pod(name, "default")


def node_pods(core_v1):
    resp = core_v1.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE}", _preload_content=False)
    return json.loads(resp.data)["items"]


def test_pod_deleted_while_the_agent_was_down_is_released_once_at_start(start_agent, hami_manager, backend, kubelet, core_v1):
    first = started(start_agent, hami_manager, kubelet)
    pod = run_pod(core_v1, kubelet, hami_manager, "gone", [[g(DEV0)], [g(DEV1, 5000)]])
    kept = run_pod(core_v1, kubelet, hami_manager, "kept", [[g(DEV1, 2000)]])
    assert len(backend.prepared) == 3
    first.stop()

    core_v1.delete_namespaced_pod("gone", "default")
    kubelet.release(pod.metadata.uid)  # kubelet tore the pod down: PodResources no longer lists it
    assert backend.released == []

    started(start_agent, hami_manager, kubelet)
    assert sorted(backend.released) == [("gone", "c0", (g(DEV0),)), ("gone", "c1", (g(DEV1, 5000),))]
    assert len(backend.prepared) == 3, "nothing prepared again"

    # "kept" was re-adopted: its deletion now is seen by the watch and released once.
    core_v1.delete_namespaced_pod("kept", "default")
    kubelet.release(kept.metadata.uid)
    kubelet.wait_for(lambda: len(backend.released) == 3, what="release of the re-adopted pod")
    assert backend.released[-1] == ("kept", "c0", (g(DEV1, 2000),))


def test_restart_with_everything_running_releases_nothing(start_agent, hami_manager, backend, kubelet, core_v1):
    first = started(start_agent, hami_manager, kubelet)
    run_pod(core_v1, kubelet, hami_manager, "running", [[g(DEV0)]])
    first.stop()
    second = started(start_agent, hami_manager, kubelet)
    assert backend.released == [] and len(backend.prepared) == 1
    assert [p["metadata"]["name"] for p in second.releaser.ledger.snapshot().values()] == ["running"]


def test_finished_pod_is_not_released_again_after_a_restart(start_agent, hami_manager, backend, kubelet, core_v1):
    first = started(start_agent, hami_manager, kubelet)
    run_pod(core_v1, kubelet, hami_manager, "batch", [[g(DEV0)]])
    core_v1.patch_namespaced_pod_status("batch", "default", {"status": {"phase": "Succeeded"}})
    kubelet.wait_for(lambda: len(backend.released) == 1, what="release of the finished pod")
    first.stop()
    started(start_agent, hami_manager, kubelet)
    assert backend.released == [("batch", "c0", (g(DEV0),))], "the restarted agent listed the finished pod again"


def test_pod_kubelet_still_holds_is_released_only_when_kubelet_lets_go(start_agent, hami_manager, backend, kubelet, core_v1):
    first = started(start_agent, hami_manager, kubelet)
    pod = run_pod(core_v1, kubelet, hami_manager, "forced", [[g(DEV0)]])
    first.stop()
    core_v1.delete_namespaced_pod("forced", "default", grace_period_seconds=0)  # force-deleted: kubelet still tears it down

    agent = started(start_agent, hami_manager, kubelet)
    assert backend.released == []
    assert agent.releaser.reconcile(node_pods(core_v1))["deferred"] == ["default/forced"]

    kubelet.release(pod.metadata.uid)
    assert agent.releaser.reconcile(node_pods(core_v1))["released"] == ["default/forced"]
    assert backend.released == [("forced", "c0", (g(DEV0),))]
    assert agent.releaser.reconcile(node_pods(core_v1)) == {"released": [], "adopted": [], "deferred": []}


def test_ledger_lives_in_the_state_dir_and_survives_garbage(start_agent, hami_manager, backend, kubelet, core_v1, kubelet_dir):
    ledger = kubelet_dir / "state" / LEDGER_FILE
    ledger.parent.mkdir(parents=True)
    ledger.write_text("{not json")
    agent = started(start_agent, hami_manager, kubelet)
    run_pod(core_v1, kubelet, hami_manager, "noted", [[g(DEV0)]])
    kubelet.wait_for(lambda: "noted" in ledger.read_text(), what="the ledger to record the pod")
    assert agent.releaser.ledger.path == ledger


def test_pod_resources_list_reports_what_the_fake_kubelet_admitted(start_agent, hami_manager, backend, kubelet, core_v1, kubelet_dir):
    started(start_agent, hami_manager, kubelet)
    pod = run_pod(core_v1, kubelet, hami_manager, "listed", [[g(DEV0)], [g(DEV1)]])
    client = PodResourcesClient(pod_resources_socket(kubelet_dir))
    (found,) = [p for p in client.list() if p.name == "listed"]
    assert (found.namespace, sorted(found.containers)) == ("default", ["c0", "c1"])
    assert [i.split("::")[0] for i in found.device_ids()] == [DEV0, DEV1]
    assert found.device_ids(frozenset({"other.com/x"})) == ()
    kubelet.release(pod.metadata.uid)
    assert [p for p in client.list() if p.name == "listed"] == []


def test_pod_resources_socket_layout(tmp_path):
    assert str(pod_resources_socket("/var/lib/kubelet/device-plugins/")) == "/var/lib/kubelet/pod-resources/kubelet.sock"
    assert pod_resources_socket(tmp_path) == tmp_path / "pod-resources" / "kubelet.sock"
    with pytest.raises(PodResourcesError, match="does not exist"):
        PodResourcesClient(tmp_path / "nothing.sock").list()
