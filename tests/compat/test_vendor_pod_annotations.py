"""The pod annotations the vendors' own device plugins read, as HAMi v2.10.0's ``PatchAnnotations`` writes
them (issue 18, node protocol): the same keys, value forms and timestamp units, through the backend
manager our scheduler uses. A vendor plugin that compares ``predicate-time`` with its own clock needs the
unit upstream writes: Unix seconds for Ascend, nanoseconds for MetaX, Enflame and AWS Neuron.

Upstream: pkg/device/ascend/device.go, pkg/device/metax/sdevice.go + pkg/device/metax/protocol.go,
pkg/device/kunlun/device.go, pkg/device/enflame/device.go, pkg/device/awsneuron/device.go."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from hami.plugin.manager import BackendManager, load_backends
from hami.plugin.model import Grant, SchedulableDevice


@pytest.fixture(scope="module")
def manager() -> BackendManager:
    return load_backends(allow=("ascend", "metax", "kunlunxin", "enflame", "awsneuron"))


def _pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "default", "uid": "uid-p", "annotations": {}},
        "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "first"}, {"name": "main"}]},
    }


def _annotate(manager: BackendManager, vendor: str, containers: list[list[Grant]], devices: dict[str, SchedulableDevice]):
    """The backend's annotations with the wall clock read before and after, in seconds and nanoseconds."""
    before, before_ns = int(time.time()), time.time_ns()
    found = manager.allocation_annotations(vendor, containers, devices, _pod())
    return found, (before, int(time.time()) + 1), (before_ns, time.time_ns())


def test_ascend_runtime_info_and_predicate_time_in_seconds(manager):
    """pkg/device/ascend/device.go PatchAnnotations: ``huawei.com/<chip>`` is json.Marshal([]RuntimeInfo)
    with omitempty; ``predicate-time`` is ``time.Now().Unix()``."""
    grant = Grant("Ascend910B3-n1-0", "Ascend910B3", 65536, 100)
    found, (low, high), _ = _annotate(manager, "Ascend910B3", [[], [grant]], {})
    assert json.loads(found.pop("huawei.com/Ascend910B3")) == [{"UUID": "Ascend910B3-n1-0", "memory": 65536, "core": 100}]
    assert low <= int(found.pop("predicate-time")) <= high
    assert found == {}


def test_metax_sgpu_allocation_and_predicate_time(manager):
    """pkg/device/metax/sdevice.go PatchAnnotations: ``metax-tech.com/gpu-devices-allocated``
    (pkg/device/metax/protocol.go MetaxAllocatedSDevices) per container, and MetaxPredicateTime from
    ``time.Now().UnixNano()``."""
    device = SchedulableDevice(id="g0", vendor="Metax-SGPU", type="C500", count=16, memory=65536, index=0)
    found, _, (low, high) = _annotate(manager, "Metax-SGPU", [[], [Grant("g0", "Metax-SGPU", 4096, 60)]], {"g0": device})
    assert json.loads(found.pop("metax-tech.com/gpu-devices-allocated")) == [[], [{"uuid": "g0", "compute": 60, "vRam": 4096}]]
    assert low <= int(found.pop("metax-tech.com/predicate-time")) <= high
    assert found == {}


def test_kunlun_device_indexes(manager):
    """pkg/device/kunlun/device.go PatchAnnotations: SupportDevices ``hami.io/kunlun-allocated`` is
    EncodePodSingleDevice of every container, ``BAIDU_COM_DEVICE_IDX`` the indexes of the last container
    that holds devices (each container's loop overwrites it)."""
    devices = {f"x{i}": SchedulableDevice(id=f"x{i}", vendor="kunlun", type="P800", count=1, memory=98304, index=i) for i in range(8)}
    containers = [[Grant("x1", "kunlun", 98304, 0)], [Grant("x4", "kunlun", 98304, 0), Grant("x5", "kunlun", 98304, 0)]]
    found, _, _ = _annotate(manager, "kunlun", containers, devices)
    assert found == {"hami.io/kunlun-allocated": "x1,kunlun,98304,0:;x4,kunlun,98304,0:x5,kunlun,98304,0:;", "BAIDU_COM_DEVICE_IDX": "4,5"}


def test_enflame_drs_patch(manager):
    """pkg/device/enflame/device.go PatchAnnotations: ``enflame.com/gcu-assigned=false``,
    ``gcu-assigned-time`` from UnixNano, the first grant's index/minor, the DRS slice count and
    ``assigned-containers`` keyed by container name (init containers count first in the index)."""
    device = SchedulableDevice(id="d2", vendor="Enflame", type="S60", count=6, memory=40960, index=2)
    # containers: init, first, main; main holds the grant
    found, _, (low, high) = _annotate(manager, "Enflame", [[], [], [Grant("d2", "Enflame", 20480, 50)]], {"d2": device})
    assert low <= int(found.pop("enflame.com/gcu-assigned-time")) <= high
    assert json.loads(found.pop("assigned-containers")) == {
        "main": {"allocated": False, "request": 3, "profileID": "1", "profileName": "3g.20gb"}
    }
    assert found == {
        "enflame.com/gcu-assigned": "false",
        "enflame.com/gcu-assigned-index": "2",
        "enflame.com/gcu-assigned-id": "2",
        "enflame.com/gcu-assigned-minor": "2",
        "enflame.com/gcu-request-size": "3",
    }


def _neurons() -> dict[str, SchedulableDevice]:
    return {
        f"n1-AWSNeuron-{i}": SchedulableDevice(id=f"n1-AWSNeuron-{i}", vendor="AWSNeuron", type="t", count=2, memory=0, index=i)
        for i in range(4)
    }


def test_aws_neuron_whole_devices(manager):
    """pkg/device/awsneuron/device.go PatchAnnotations: ``AWS_NEURON_IDS`` the device indexes,
    ``NEURON_ALLOCATED=false``, ``NEURON_ALLOC_TIME`` from UnixNano, ``aws.amazon.com/predicate-node``."""
    whole = [Grant("n1-AWSNeuron-2", "AWSNeuron", 0, 100), Grant("n1-AWSNeuron-3", "AWSNeuron", 0, 100)]
    found, _, (low, high) = _annotate(manager, "AWSNeuron", [[], whole], _neurons())
    assert low <= int(found.pop("NEURON_ALLOC_TIME")) <= high
    assert found == {"AWS_NEURON_IDS": "2,3", "NEURON_ALLOCATED": "false", "aws.amazon.com/predicate-node": "n1"}


def test_aws_neuron_core_shares_leave_the_core_ids_to_our_agent(manager):
    """pkg/device/awsneuron/device.go PatchAnnotations writes core indexes (``coresPerAWSNeuron*idx`` +
    the used-core bits) into ``AWS_NEURON_IDS`` for a core request. Ours differs on purpose: the scheduler
    grants a share, our agent picks disjoint core ids at Allocate (its ledger), so only
    ``NEURON_RESOURCE_TYPE`` says a core share was granted (docs/migrating-from-hami.md)."""
    found, _, _ = _annotate(manager, "AWSNeuron", [[], [Grant("n1-AWSNeuron-1", "AWSNeuron", 0, 50)]], _neurons())
    assert found.pop("NEURON_RESOURCE_TYPE") == "aws.amazon.com/neuroncore"
    assert "AWS_NEURON_IDS" not in found
    assert found["NEURON_ALLOCATED"] == "false"
