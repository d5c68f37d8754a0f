"""Issue 19, item 3: a node lock whose holder is no longer between bind and Allocate is taken over at
once; a bare-timestamp lock of older HAMi is held until it expires.

Upstream's rules are in Project-HAMi/HAMi ``pkg/util/nodelock/nodelock.go``: ParseNodeLock reads a
value without a comma as a bare RFC3339 time (no namespace, no pod), and LockNode lets such a lock
go only after NodeLockTimeout (no owner to check); a lock naming a pod is taken over when that pod
is not found. Here a finished, failed, deleting or re-created holder also lets go.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from kubernetes import client

from hami.wire.annotations import BIND_PHASE, NODE_LOCK
from hami.wire.nodelock import LockHolder, NodeLock, NodeLockError

NODE = "n1"


@pytest.fixture
def node(core_v1):
    core_v1.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=NODE)))
    return NODE


def pod(core_v1, name, bind_phase=None):
    annotations = {BIND_PHASE: bind_phase} if bind_phase else None
    core_v1.create_namespaced_pod(
        "default",
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, annotations=annotations),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")]),
        ),
    )


def locked_by(core_v1, node, name, since=None):
    value = LockHolder(since or datetime.now(timezone.utc).replace(microsecond=0), "default", name).encode()
    core_v1.patch_node(node, {"metadata": {"annotations": {NODE_LOCK: value}}})


def test_allocating_holder_keeps_the_lock(core_v1, node):
    pod(core_v1, "busy", "allocating")
    locked_by(core_v1, node, "busy")
    with pytest.raises(NodeLockError, match="locked by pod default/busy"):
        NodeLock(core_v1).acquire(node, "default", "next")


@pytest.mark.parametrize("bind_phase", ["failed", "success"])
def test_holder_whose_bind_ended_is_taken_over_at_once(core_v1, node, bind_phase):
    pod(core_v1, "done", bind_phase)
    locked_by(core_v1, node, "done")
    assert NodeLock(core_v1).acquire(node, "default", "next").name == "next"


@pytest.mark.parametrize("phase", ["Failed", "Succeeded"])
def test_finished_holder_is_taken_over_at_once(core_v1, node, phase):
    pod(core_v1, "over", "allocating")
    core_v1.patch_namespaced_pod_status("over", "default", {"status": {"phase": phase}})
    locked_by(core_v1, node, "over")
    assert NodeLock(core_v1).acquire(node, "default", "next").name == "next"


def test_a_newer_pod_of_the_same_name_does_not_hold_its_predecessors_lock(core_v1, node):
    locked_by(core_v1, node, "web-0", since=datetime.now(timezone.utc) - timedelta(minutes=1))
    pod(core_v1, "web-0")  # created after the lock was taken: a StatefulSet's replacement
    assert NodeLock(core_v1).acquire(node, "default", "next").name == "next"


def test_a_pod_between_lock_and_allocating_keeps_it(core_v1, node):
    pod(core_v1, "binding")  # no bind-phase yet: the scheduler writes it right after locking
    locked_by(core_v1, node, "binding", since=datetime.now(timezone.utc) + timedelta(seconds=5))
    with pytest.raises(NodeLockError, match="locked by pod default/binding"):
        NodeLock(core_v1).acquire(node, "default", "next")


def test_bare_timestamp_lock_of_older_hami_is_held_until_it_expires(core_v1, node):
    stamp = datetime.now(timezone.utc).replace(microsecond=0)
    value = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert LockHolder.decode(value) == LockHolder(stamp, "", "") and LockHolder(stamp, "", "").encode() == value
    core_v1.patch_node(node, {"metadata": {"annotations": {NODE_LOCK: value}}})
    with pytest.raises(NodeLockError, match="older HAMi"):
        NodeLock(core_v1).acquire(node, "default", "p")
    later = NodeLock(core_v1, clock=lambda: stamp + timedelta(minutes=5))
    assert later.acquire(node, "default", "p").name == "p"
