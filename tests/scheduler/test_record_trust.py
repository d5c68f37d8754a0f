"""Issue 19, items 2 and 4, through the extender on the in-memory API server: the scheduler counts
only what it signed (an owner's edit, written past the webhook, changes nothing; an unsigned squat
blocks nothing), and a bind that loses the node lock gives back its reservation, so the retried pod
never competes with itself."""

from __future__ import annotations

import threading
import time

import attrs
import pytest
from kubernetes import client

from hami.fakes.extender import ExtenderHarness
from hami.plugin.model import SchedulableDevice
from hami.scheduler.config import SchedulerConfig
from hami.wire.annotations import ASSIGNED_NODE, BIND_PHASE
from hami.wire.codec import decode_pod_devices, encode_node_devices, encode_pod_devices
from hami.wire.nodelock import NodeLock
from hami_nvidia.plugin import KIND, plugin

ALLOCATED = KIND.annotations.allocated
NODE = "gpu-a"


@pytest.fixture
def manager(hami_manager, register_backend):
    register_backend(plugin)
    return hami_manager


def add_node(core_v1, gpus: int, memory: int) -> None:
    devices = [
        SchedulableDevice(id=f"GPU-{i}", vendor="NVIDIA", type="NVIDIA A100", count=10, memory=memory, cores=100, index=i)
        for i in range(gpus)
    ]
    annotation = encode_node_devices(devices, "json")
    core_v1.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=NODE, annotations={KIND.annotations.node_register: annotation})))


def add_pod(core_v1, name, limits, *, annotations=None, node_name=None):
    resources = client.V1ResourceRequirements(limits=limits) if limits else None
    body = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, annotations=annotations),
        spec=client.V1PodSpec(
            scheduler_name="hami-scheduler",
            node_name=node_name,
            containers=[client.V1Container(name="main", image="cuda", resources=resources)],
        ),
    )
    return core_v1.create_namespaced_pod("default", body)


def start(manager, core_v1, **config) -> ExtenderHarness:
    harness = ExtenderHarness(manager, core_v1, config=SchedulerConfig(**config)).start()
    harness.cache.nodes.synced.wait(5)
    return harness


def wait_for(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def used_memory(harness) -> dict[str, int]:
    return {device: memory for device, (_, memory, _) in harness.state.usage_snapshot().get(NODE, {}).items()}


def test_an_edited_record_does_not_free_memory_even_past_the_webhook(manager, core_v1):
    """The campaign's case: 12000 MiB granted and signed, the owner shrinks the record to 4000 with
    a direct API write; another 12000 MiB pod must not fit on the 16384 MiB GPU (24000 granted)."""
    add_node(core_v1, 1, 16384)
    harness = start(manager, core_v1)
    try:
        add_pod(core_v1, "owner", {"nvidia.com/gpumem": "12000"})
        first = harness.schedule("default", "owner")
        assert first.node == NODE and first.bind_error == ""
        record = harness.pod_json("default", "owner")["metadata"]["annotations"][ALLOCATED]
        shrunk = encode_pod_devices([[attrs.evolve(g, memory=4000) for g in c] for c in decode_pod_devices(record)])
        assert shrunk != record
        core_v1.patch_namespaced_pod("owner", "default", {"metadata": {"annotations": {ALLOCATED: shrunk}}})

        add_pod(core_v1, "second", {"nvidia.com/gpumem": "12000"})  # the watch delivers the edit first
        second = harness.schedule("default", "second")
        assert second.node is None
        assert "CardInsufficientMemory: 12000 MiB needed, at most 4384 MiB free" in second.filter_result["FailedNodes"][NODE]
        assert used_memory(harness) == {"GPU-0": 12000}

        core_v1.patch_namespaced_pod("owner", "default", {"metadata": {"annotations": {ALLOCATED: None}}})  # removed: still held
        add_pod(core_v1, "third", {"nvidia.com/gpumem": "12000"})
        assert harness.schedule("default", "third").node is None
        assert used_memory(harness) == {"GPU-0": 12000}
    finally:
        harness.stop()


def test_unsigned_squats_block_nothing_and_unsigned_grants_count_capped(manager, core_v1):
    """Unsigned records: on a pod asking for no devices, or on a pod not bound, they count for
    nothing; on a bound pod asking for one GPU (upstream HAMi's, mid-migration) they count as usage,
    cut to the one device the pod asked for."""
    add_node(core_v1, 2, 16384)
    squat = encode_pod_devices([[attrs.evolve(g, id=f"GPU-{i}") for i, g in enumerate(_grants(2, 16384))]])
    add_pod(core_v1, "squatter", None, annotations={ASSIGNED_NODE: NODE, ALLOCATED: squat}, node_name=NODE)
    add_pod(core_v1, "pending-squatter", {"nvidia.com/gpu": "2"}, annotations={ASSIGNED_NODE: NODE, ALLOCATED: squat})
    add_pod(core_v1, "upstream", {"nvidia.com/gpu": "1"}, annotations={ASSIGNED_NODE: NODE, ALLOCATED: squat}, node_name=NODE)
    harness = start(manager, core_v1)
    try:
        assert used_memory(harness) == {"GPU-0": 16384}  # upstream's first device only, as it asked for one
        add_pod(core_v1, "fits", {"nvidia.com/gpumem": "16000"})
        assert harness.schedule("default", "fits").node == NODE
    finally:
        harness.stop()


def _grants(n, memory):
    from hami.plugin.model import Grant

    return [Grant(f"GPU-{i}", "NVIDIA", memory, 0) for i in range(n)]


def test_a_bind_that_loses_the_lock_drops_its_reservation(manager, core_v1):
    add_node(core_v1, 1, 10000)
    add_pod(core_v1, "holder", None, annotations={BIND_PHASE: "allocating"})
    NodeLock(core_v1).acquire(NODE, "default", "holder")
    harness = start(manager, core_v1)
    try:
        pod = add_pod(core_v1, "retried", {"nvidia.com/gpumem": "8000"})
        scheduled = harness.schedule("default", "retried")
        assert scheduled.node == NODE and "is locked by pod default/holder" in scheduled.bind_error
        assert pod.metadata.uid not in harness.state.pods
        wait_for(lambda: harness.pod_json("default", "retried")["metadata"]["annotations"].get(BIND_PHASE) == "failed", "bind-phase failed")
        core_v1.patch_namespaced_pod("retried", "default", {"metadata": {"labels": {"touched": "yes"}}})  # a later event of the pod
        add_pod(core_v1, "sentinel", None)
        harness.schedule("default", "sentinel")  # waits for the watch to deliver it, after the events above
        assert pod.metadata.uid not in harness.state.pods and used_memory(harness) == {}

        NodeLock(core_v1).release(NODE, "default", "holder")
        again = harness.schedule("default", "retried")
        assert again.node == NODE and again.bind_error == "", again
        assert used_memory(harness) == {"GPU-0": 8000}
    finally:
        harness.stop()


def test_parallel_binds_onto_a_nearly_full_node(manager, core_v1):
    """Six 3000 MiB pods, two 10000 MiB GPUs: room for exactly six. Each round every unbound pod is
    filtered (reserving), then all bind at once; one wins the node lock, the others lose and retry.
    A lost bind that kept its reservation would make the next round answer "no node fits"."""
    add_node(core_v1, 2, 10000)
    harness = start(manager, core_v1)
    names = [f"p{i}" for i in range(6)]
    try:
        for name in names:
            add_pod(core_v1, name, {"nvidia.com/gpumem": "3000"})
        uids = {name: harness.pod_json("default", name)["metadata"]["uid"] for name in names}
        unbound = list(names)
        lost = 0
        while unbound:
            for name in unbound:
                result = harness.post("filter", {"Pod": harness.pod_json("default", name), "NodeNames": [NODE]})
                assert result.get("NodeNames") == [NODE], f"{name}: {result}"
            errors: dict[str, str] = {}
            barrier = threading.Barrier(len(unbound))

            def bind(name: str, barrier: threading.Barrier = barrier, errors: dict[str, str] = errors) -> None:
                barrier.wait()
                answer = harness.post("bind", {"PodName": name, "PodNamespace": "default", "PodUID": uids[name], "Node": NODE})
                errors[name] = answer.get("Error", "")

            threads = [threading.Thread(target=bind, args=(n,)) for n in unbound]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            winners = [n for n in unbound if not errors[n]]
            assert len(winners) == 1, errors
            lost += len(unbound) - 1
            # the node agent's part: Allocate succeeded, the lock is released
            core_v1.patch_namespaced_pod(winners[0], "default", {"metadata": {"annotations": {BIND_PHASE: "success"}}})
            NodeLock(core_v1).release(NODE, "default", winners[0])
            unbound.remove(winners[0])
        assert lost == 5 + 4 + 3 + 2 + 1
        wait_for(
            lambda: len(harness.state.pods) == 6 and all(r.bound for r in harness.state.pods.values()), "six bound records, no reservation"
        )
        assert sorted(used_memory(harness).values()) == [9000, 9000]
    finally:
        harness.stop()
