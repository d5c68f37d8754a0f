"""Requests, selectors, MIG rounding and NVLink-aware choice, driven through the scheduler's own
``fit_node`` on a ``ClusterState`` fed with node annotations this backend produced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hami.scheduler.core import Scheduler
from hami.scheduler.fit import Fit, Misfit, fit_node
from hami.scheduler.state import ClusterState
from hami.sdk import RequestError
from hami.wire.codec import encode_node_devices
from hami_nvidia.plugin import KIND

NODE = "gpu-node"


def a100(i: int, **extra: Any) -> dict[str, Any]:
    return {"vendor": "NVIDIA", "type": "NVIDIA A100-SXM4-80GB", "memory": 81920, "id": f"GPU-{i}", "index": i, **extra}


def mig_gpu(i: int) -> dict[str, Any]:
    instances = [{"uuid": f"MIG-{i}-{n}", "profile": "1g.10gb", "memory": 9728} for n in range(3)]
    instances.append({"uuid": f"MIG-{i}-big", "profile": "3g.40gb", "memory": 40192})
    return a100(i, attributes={"mig_enabled": True, "mig_devices": instances})


def scored(i: int, scores: dict[int, int], **extra: Any) -> dict[str, Any]:
    return a100(i, attributes={"pair_scores": {f"GPU-{j}": s for j, s in scores.items()}}, **extra)


@pytest.fixture
def cluster(nvidia, tmp_path: Path):
    """``cluster(devices, **config)`` → (manager, state): the node registered as the agent would."""

    def build(devices: list[dict[str, Any]], **config: Any):
        inventory = tmp_path / "nodes.yaml"
        inventory.write_text(yaml.safe_dump({"nodes": [{"name": NODE, "devices": devices}]}))
        manager = nvidia(inventory=str(inventory), **config)
        physical = manager.discover("nvidia", NODE)
        split = [manager.split(d, NODE) for d in physical]  # per-node settings apply to this node's split
        annotations = {
            KIND.annotations.node_register: encode_node_devices(split, "json"),
            **manager.node_annotations("nvidia", split, physical),
        }
        state = ClusterState({"NVIDIA": KIND})
        state.apply_node({"metadata": {"name": NODE, "annotations": annotations}})
        return manager, state

    return build


def pod(limits: dict[str, str], **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "default", "uid": "uid-p", "annotations": annotations},
        "spec": {"containers": [{"name": "main", "resources": {"limits": limits}}]},
    }


def fit(manager, state, wanted, policy: str = "spread") -> Fit | Misfit:
    return fit_node(manager, state.node(NODE), wanted, Scheduler(manager, state, None).requests(wanted), policy)


def chosen(result: Fit | Misfit) -> list[str]:
    assert isinstance(result, Fit), result
    return [g.id for g in result.devices["NVIDIA"][0]]


def test_type_selectors_are_case_insensitive_substrings(cluster):
    manager, state = cluster([a100(0), a100(1), {**a100(2), "type": "Tesla V100-SXM2-32GB"}, {**a100(3), "type": "NVIDIA H100 80GB HBM3"}])
    assert chosen(fit(manager, state, pod({"nvidia.com/gpu": "2"}, **{"nvidia.com/use-gputype": " v100 , h100"}))) == ["GPU-2", "GPU-3"]
    assert chosen(fit(manager, state, pod({"nvidia.com/gpu": "2"}, **{"nvidia.com/nouse-gputype": "A100"}))) == ["GPU-2", "GPU-3"]
    result = fit(manager, state, pod({"nvidia.com/gpu": "1"}, **{"nvidia.com/use-gputype": "T4"}))
    assert result.reason == "container #0 needs 1 NVIDIA: 4/4 CardTypeMismatch"


def test_uuid_selectors_match_exactly(cluster):
    manager, state = cluster([a100(i) for i in range(4)])
    assert chosen(fit(manager, state, pod({"nvidia.com/gpumem": "1000"}, **{"nvidia.com/use-gpuuuid": "GPU-2"}))) == ["GPU-2"]
    assert chosen(fit(manager, state, pod({"nvidia.com/gpu": "2"}, **{"nvidia.com/nouse-gpuuuid": "GPU-0,GPU-1"}))) == ["GPU-2", "GPU-3"]
    result = fit(manager, state, pod({"nvidia.com/gpu": "1"}, **{"nvidia.com/use-gpuuuid": "gpu-2"}))  # case matters for UUIDs
    assert result.reason == "container #0 needs 1 NVIDIA: 4/4 CardUuidMismatch"


def test_vgpu_mode_must_match_the_devices_mode(cluster):
    manager, state = cluster([a100(0), mig_gpu(1)])
    assert [d.mode for d in state.node(NODE).devices.values()] == ["hami-core", "mig"]
    assert chosen(fit(manager, state, pod({"nvidia.com/gpumem": "1000"}, **{"nvidia.com/vgpu-mode": "mig"}))) == ["GPU-1"]
    assert chosen(fit(manager, state, pod({"nvidia.com/gpumem": "1000"}, **{"nvidia.com/vgpu-mode": "hami-core"}))) == ["GPU-0"]
    assert (
        fit(manager, state, pod({"nvidia.com/gpu": "1"}, **{"nvidia.com/vgpu-mode": "mps"})).reason
        == "container #0 needs 1 NVIDIA: 2/2 ModeNotFit"
    )


def test_a_per_node_mode_reaches_the_device_annotation(cluster):
    manager, state = cluster([a100(0)], nodes={NODE: {"mode": "mps", "split_count": 3}})
    (device,) = state.node(NODE).devices.values()
    assert (device.mode, device.count) == ("mps", 3)
    assert chosen(fit(manager, state, pod({"nvidia.com/gpu": "1"}, **{"nvidia.com/vgpu-mode": "mps"}))) == ["GPU-0"]


def test_mig_requests_round_up_to_the_smallest_profile(cluster):
    manager, state = cluster([mig_gpu(0)])
    result = fit(manager, state, pod({"nvidia.com/gpumem": "5000", "nvidia.com/gpucores": "30"}))
    assert [(g.memory, g.cores) for g in result.devices["NVIDIA"][0]] == [(9728, 0)]
    assert fit(manager, state, pod({"nvidia.com/gpumem": "20000"})).devices["NVIDIA"][0][0].memory == 40192
    assert fit(manager, state, pod({"nvidia.com/gpu": "1"})).devices["NVIDIA"][0][0].memory == 40192  # whole GPU asked: largest profile
    assert fit(manager, state, pod({"nvidia.com/gpumem": "50000"})).reason == "container #0 needs 1 NVIDIA: 1/1 MigProfileNotFit"


def test_numa_bind_sets_the_core_attribute_and_keeps_one_numa_node(cluster, nvidia):
    manager, state = cluster([a100(0, numa=0), a100(1, numa=1), a100(2, numa=1), a100(3, numa=0)])
    (request,) = manager.container_requests(
        pod({"nvidia.com/gpu": "2"})["spec"]["containers"][0], pod({}, **{"nvidia.com/numa-bind": "true"})
    )
    assert request.single_numa is True
    wanted = pod(
        {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "1000"},
        **{"nvidia.com/numa-bind": "true", "nvidia.com/use-gpuuuid": "GPU-0,GPU-1,GPU-2"},
    )
    assert sorted(chosen(fit(manager, state, wanted))) == ["GPU-1", "GPU-2"]


def test_multi_gpu_requests_prefer_nvlinked_sets(cluster):
    # GPU-2/3 share two NVLinks, GPU-0/1 one; 0–2 a PCIe switch; the rest cross sockets
    gpus = [
        scored(0, {1: 120, 2: 50, 3: 10}),
        scored(1, {0: 120, 2: 10, 3: 10}),
        scored(2, {0: 50, 1: 10, 3: 220}),
        scored(3, {0: 10, 1: 10, 2: 220}),
    ]
    manager, state = cluster(gpus)
    assert "hami.io/node-nvidia-score" in state.node(NODE).annotations
    # the device policy alone would take GPU-0 and GPU-1 (index order on idle GPUs)
    assert sorted(chosen(fit(manager, state, pod({"nvidia.com/gpu": "2", "nvidia.com/gpumem": "1000"})))) == ["GPU-2", "GPU-3"]
    assert sorted(chosen(fit(manager, state, pod({"nvidia.com/gpu": "2"}, **{"nvidia.com/nouse-gpuuuid": "GPU-3"})))) == ["GPU-0", "GPU-1"]
    assert sorted(chosen(fit(manager, state, pod({"nvidia.com/gpu": "3"})))) == ["GPU-0", "GPU-2", "GPU-3"]
    assert len(chosen(fit(manager, state, pod({"nvidia.com/gpu": "1"})))) == 1  # single GPUs: the device policy's choice


def test_topology_with_numa_bind_stays_on_one_numa_node(cluster):
    gpus = [
        scored(0, {1: 10, 2: 220, 3: 20}, numa=0),
        scored(1, {0: 10, 2: 10, 3: 10}, numa=1),
        scored(2, {0: 220, 1: 10, 3: 10}, numa=1),
        scored(3, {0: 20, 1: 10, 2: 10}, numa=0),
    ]
    manager, state = cluster(gpus)
    assert sorted(chosen(fit(manager, state, pod({"nvidia.com/gpu": "2"})))) == ["GPU-0", "GPU-2"]  # NVLink across sockets
    assert sorted(chosen(fit(manager, state, pod({"nvidia.com/gpu": "2"}, **{"nvidia.com/numa-bind": "true"})))) == ["GPU-0", "GPU-3"]
    result = fit(manager, state, pod({"nvidia.com/gpu": "3"}, **{"nvidia.com/numa-bind": "true"}))
    assert result.reason == "container #0 needs 3 NVIDIA: 4/4 NumaNotFit"


def test_topology_can_be_switched_off(cluster):
    gpus = [scored(0, {1: 10, 2: 220}), scored(1, {0: 10, 2: 10}), scored(2, {0: 220, 1: 10})]
    manager, state = cluster(gpus, topology_aware=False)
    assert "hami.io/node-nvidia-score" not in state.node(NODE).annotations
    assert chosen(fit(manager, state, pod({"nvidia.com/gpu": "2"}))) == ["GPU-0", "GPU-1"]


@pytest.mark.parametrize(
    ("limits", "annotations", "fragment"),
    [
        ({"nvidia.com/gpu": "1"}, {"nvidia.com/vgpu-mode": "turbo"}, "nvidia.com/vgpu-mode='turbo'"),
        ({"nvidia.com/gpu": "1"}, {"nvidia.com/numa-bind": "yes"}, "nvidia.com/numa-bind='yes'"),
        ({"nvidia.com/gpu": "1", "nvidia.com/priority": "-1"}, {}, "nvidia.com/priority='-1'"),
        ({"nvidia.com/gpu": "1"}, {"nvidia.com/vgpu-mode": "mps,turbo"}, "'turbo' is not an isolation mode"),
        ({"nvidia.com/gpu": "1"}, {"nvidia.com/numa-bind": "tRuE"}, "nvidia.com/numa-bind='tRuE'"),
        ({"nvidia.com/gpu": "1", "nvidia.com/priority": "high"}, {}, "'high'"),
    ],
)
def test_bad_annotations_and_priority_are_request_errors_naming_the_value(nvidia, limits, annotations, fragment):
    manager = nvidia()
    wanted = pod(limits, **annotations)
    with pytest.raises(RequestError) as caught:
        manager.container_requests(wanted["spec"]["containers"][0], wanted)
    assert fragment in str(caught.value)


def test_pods_without_gpus_are_not_parsed(nvidia):
    manager = nvidia()
    wanted = pod({"cpu": "1"}, **{"nvidia.com/vgpu-mode": "turbo"})
    assert manager.container_requests(wanted["spec"]["containers"][0], wanted) == []


def test_topology_aware_gives_one_gpu_the_worst_connected_card(cluster):
    """Upstream pkg/device/nvidia/device.go (v2.10.0) ``Fit``: with ``needTopology`` and ``originReq == 1``
    ``computeWorstSingleCard`` takes the fitting card with the lowest total pair score to the others,
    keeping the NVLinked pairs free for multi-GPU pods; spread alone takes the lowest index."""
    gpus = [
        scored(0, {1: 220, 2: 50, 3: 10}),
        scored(1, {0: 220, 2: 10, 3: 10}),
        scored(2, {0: 50, 1: 10, 3: 20}),
        scored(3, {0: 10, 1: 10, 2: 20}),  # total 40: the worst connected
    ]
    manager, state = cluster(gpus)
    one = pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"})
    assert chosen(fit(manager, state, one, "topology-aware")) == ["GPU-3"]
    assert chosen(fit(manager, state, one, "binpack,topology-aware")) == ["GPU-3"]
    assert chosen(fit(manager, state, one)) == ["GPU-0"]  # no topology policy: the device policy's choice
    # only the fitting cards count: without GPU-3, GPU-2 (60 to GPU-0/1) is the worst of the rest
    avoid = pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"}, **{"nvidia.com/nouse-gpuuuid": "GPU-3"})
    assert chosen(fit(manager, state, avoid, "topology-aware")) == ["GPU-2"]
    off, off_state = cluster(gpus, topology_aware=False)
    assert chosen(fit(off, off_state, one, "topology-aware")) == ["GPU-0"]
