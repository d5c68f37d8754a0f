"""The scheduler → agent handshake carried in pod annotations."""

from __future__ import annotations

import pytest

from hami.plugin.model import Grant
from hami.wire.allocation import (
    Allocation,
    is_fully_allocated,
    next_container,
    ordered_containers,
    read_allocated,
    verify_allocation,
)
from hami.wire.annotations import ASSIGNED_NODE, SIGNATURE
from hami.wire.signing import SignatureError, SigningKeys
from hami_hygon.plugin import KIND as DCU
from hami_nvidia.plugin import KIND as NVIDIA

KINDS = {"NVIDIA": NVIDIA, "DCU": DCU}
KEYS = SigningKeys.from_seed(b"s" * 32)
A = Grant("GPU-a", "NVIDIA", 3000, 30)
B = Grant("GPU-b", "NVIDIA", 5000, 0)


def annotations():
    allocation = Allocation("node-1", {"NVIDIA": ((), (A,), (), (B,)), "DCU": ((), (), (Grant("DCU-0", "DCU", 100, 10),), ())})
    return allocation.annotations(KINDS, "uid-1", 1_700_000_000, KEYS)


def test_written_annotations_match_hami():
    ann = annotations()
    assert ann[ASSIGNED_NODE] == "node-1" and ann["hami.io/vgpu-time"] == "1700000000"
    assert ann["hami.io/vgpu-devices-to-allocate"] == ";GPU-a,NVIDIA,3000,30:;;GPU-b,NVIDIA,5000,0:;"
    assert ann["hami.io/vgpu-devices-allocated"] == ann["hami.io/vgpu-devices-to-allocate"]
    assert read_allocated(ann, KINDS)["NVIDIA"][1] == (A,)
    verify_allocation(ann, KINDS, KEYS, "uid-1")


def test_containers_are_popped_in_order_and_the_work_list_still_verifies():
    ann = annotations()
    step = next_container(ann, NVIDIA)
    assert (step.index, step.grants) == (1, (A,))
    ann["hami.io/vgpu-devices-to-allocate"] = step.remaining
    verify_allocation(ann, KINDS, KEYS, "uid-1")  # emptied entries are fine
    step = next_container(ann, NVIDIA)
    assert (step.index, step.grants) == (3, (B,))
    ann["hami.io/vgpu-devices-to-allocate"] = step.remaining
    assert next_container(ann, NVIDIA) is None
    assert not is_fully_allocated(ann, KINDS)  # the DCU container is still waiting
    ann["hami.io/dcu-devices-to-allocate"] = next_container(ann, DCU).remaining
    assert is_fully_allocated(ann, KINDS)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("hami.io/vgpu-devices-to-allocate", ";GPU-a,NVIDIA,30000,30:;;GPU-b,NVIDIA,5000,0:;", "changed after scheduling"),
        ("hami.io/vgpu-devices-allocated", ";GPU-a,NVIDIA,30000,30:;;GPU-b,NVIDIA,5000,0:;", "changed after scheduling"),
        (ASSIGNED_NODE, "node-2", "changed after scheduling"),
        (SIGNATURE, "", "no allocation signature"),
    ],
)
def test_forgery_is_refused(key, value, fragment):
    ann = annotations()
    ann[key] = value
    with pytest.raises(SignatureError, match=fragment):
        verify_allocation(ann, KINDS, KEYS, "uid-1")


def test_a_user_written_allocation_without_signature_is_refused():
    forged = {
        ASSIGNED_NODE: "node-1",
        "hami.io/vgpu-devices-to-allocate": "GPU-a,NVIDIA,80000,100:;",
        "hami.io/vgpu-devices-allocated": "GPU-a,NVIDIA,80000,100:;",
    }
    with pytest.raises(SignatureError, match="no allocation signature"):
        verify_allocation(forged, KINDS, KEYS, "uid-1")


def test_container_order_is_init_first():
    pod = {"spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}, {"name": "b"}]}}
    assert [c["name"] for c in ordered_containers(pod)] == ["i", "a", "b"]


def test_an_agent_with_fewer_backends_still_verifies():
    """The signature covers every allocation record on the pod, not only the verifier's vendors."""
    ann = annotations()
    verify_allocation(ann, {"NVIDIA": NVIDIA}, KEYS, "uid-1")  # this agent has no Hygon backend
    ann["hami.io/dcu-devices-allocated"] = ";;DCU-0,DCU,999,10:;;"
    with pytest.raises(SignatureError, match="changed after scheduling"):
        verify_allocation(ann, {"NVIDIA": NVIDIA}, KEYS, "uid-1")
