"""The node lock against the in-memory API server: optimistic concurrency makes exactly one winner."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
from kubernetes import client

from hami.wire.annotations import NODE_LOCK
from hami.wire.nodelock import LockHolder, NodeLock, NodeLockError


@pytest.fixture
def node(core_v1):
    core_v1.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="n1")))
    return "n1"


def pod(core_v1, name):
    core_v1.create_namespaced_pod(
        "default",
        client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")])),
    )


def test_acquire_release(core_v1, node):
    lock = NodeLock(core_v1)
    pod(core_v1, "a")
    held = lock.acquire(node, "default", "a")
    assert core_v1.read_node(node).metadata.annotations[NODE_LOCK] == held.encode()
    assert LockHolder.decode(held.encode()) == held
    with pytest.raises(NodeLockError, match="locked by pod default/a"):
        lock.acquire(node, "default", "b")
    assert lock.release(node, "default", "b") is False  # not the holder
    assert lock.release(node, "default", "a") is True
    assert NODE_LOCK not in (core_v1.read_node(node).metadata.annotations or {})
    lock.acquire(node, "default", "b")


def test_expired_lock_and_dead_owner_are_taken_over(core_v1, node):
    pod(core_v1, "alive")
    past = datetime(2020, 1, 1, tzinfo=timezone.utc)
    NodeLock(core_v1, clock=lambda: past).acquire(node, "default", "alive")
    assert NodeLock(core_v1).acquire(node, "default", "newcomer").name == "newcomer"  # expired after 5 min

    NodeLock(core_v1).release(node)
    NodeLock(core_v1).acquire(node, "default", "ghost")  # no such pod
    assert NodeLock(core_v1).acquire(node, "default", "next").name == "next"


def test_corrupt_lock_does_not_wedge_the_node(core_v1, node):
    core_v1.patch_node(node, {"metadata": {"annotations": {NODE_LOCK: "garbage"}}})
    assert NodeLock(core_v1).acquire(node, "default", "p").name == "p"


def test_acquire_waits_for_release(core_v1, node):
    pod(core_v1, "first")
    lock = NodeLock(core_v1)
    lock.acquire(node, "default", "first")
    threading.Timer(0.3, lambda: lock.release(node, "default", "first")).start()
    assert lock.acquire(node, "default", "second", timeout=5, interval=0.05).name == "second"


def test_concurrent_acquirers_exactly_one_wins(core_v1, node):
    for i in range(8):
        pod(core_v1, f"p{i}")
    for _round in range(3):
        barrier = threading.Barrier(8)
        winners, losers = [], []

        def contend(i, barrier=barrier, winners=winners, losers=losers):  # this round's (bound now: B023)
            lock = NodeLock(core_v1)
            barrier.wait()
            try:
                lock.acquire(node, "default", f"p{i}")
                winners.append(i)
            except NodeLockError as exc:
                losers.append(str(exc))

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1, (winners, losers)
        holder = LockHolder.decode(core_v1.read_node(node).metadata.annotations[NODE_LOCK])
        assert holder.name == f"p{winners[0]}"
        assert NodeLock(core_v1).release(node, "default", holder.name)


def test_an_unrelated_write_between_read_and_patch_is_retried(core_v1, node):
    """An agent's heartbeat on the node makes the lock patch 409; that is not another holder."""

    class Interrupted(NodeLock):
        writes = 2

        def holder(self, node_name):
            found = super().holder(node_name)
            if self.writes:
                self.writes -= 1
                core_v1.patch_node(node_name, {"metadata": {"labels": {"heartbeat": str(self.writes)}}})
            return found

    pod(core_v1, "p")
    lock = Interrupted(core_v1)
    assert lock.acquire(node, "default", "p").name == "p"
    assert lock.writes == 0
    stubborn = Interrupted(core_v1)
    stubborn.writes = 100
    NodeLock(core_v1).release(node)
    with pytest.raises(NodeLockError, match="409 Conflict"):
        stubborn.acquire(node, "default", "p", conflicts=3)
