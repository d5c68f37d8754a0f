"""The conformance kit every backend runs, ours and third parties' alike.

Subclass :class:`BackendConformance` in your backend's tests and provide a ``backend`` fixture
returning the plugin object your entry point names::

    from hami.testing.conformance import BackendConformance
    from hami_acme.plugin import plugin

    class TestAcmeConformance(BackendConformance):
        @pytest.fixture
        def backend(self):
            return plugin

Override ``backend_config`` to add what your hooks need in tests (fake tool paths, a host root).
The kit drives the backend through the same typed manager the scheduler and node agent use, so a
hook that returns the wrong type, touches host paths it did not declare, or cannot read its own
requests back through the HAMi codecs fails here rather than in a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from hami.errors import RequestError
from hami.k8snames import is_annotation_key, is_extended_resource_name
from hami.plugin.manager import BackendManager
from hami.plugin.model import (
    BackendInfo,
    ContainerEdits,
    ContainerShare,
    DeviceKind,
    DeviceRequest,
    DeviceUsage,
    Grant,
    GrantedDevice,
    NodeContext,
    NodeUsage,
    PhysicalDevice,
    UsageReport,
)
from hami.wire.codec import (
    check_node_device,
    decode_node_devices,
    decode_pod_devices,
    encode_node_devices,
    encode_pod_devices,
)

NODE = "conformance-node"
DEVICES_PER_KIND = 2
DEVICE_MEMORY = 16384

# Every hook of the contract and the test below that exercises it.
EXERCISED_HOOKS = {
    "hami_backend": "test_identity_is_complete",
    "hami_discover_devices": "test_discovery_reads_the_inventory",
    "hami_device_health": "test_health_reports_events_for_own_devices",
    "hami_sample_usage": "test_usage_sample_keeps_the_contract",
    "hami_enforcement": "test_simulated_node_is_enforced",
    "hami_split_device": "test_split_devices_round_trip_through_the_node_annotation",
    "hami_node_annotations": "test_split_devices_round_trip_through_the_node_annotation",
    "hami_select_devices": "test_fit_hooks_keep_the_contract",
    "hami_node_capacity_devices": "test_capacity_devices_belong_to_the_vendor",
    "hami_container_requests": "test_requests_round_trip_through_the_allocation_codec",
    "hami_mutate_container": "test_admission_defaults_touch_only_own_resources",
    "hami_normalize_request": "test_fit_hooks_keep_the_contract",
    "hami_device_fits": "test_fit_hooks_keep_the_contract",
    "hami_container_edits": "test_runtime_hooks_stay_within_declared_host_paths",
    "hami_prepare": "test_runtime_hooks_stay_within_declared_host_paths",
    "hami_release": "test_runtime_hooks_stay_within_declared_host_paths",
    "hami_allocation_annotations": "test_allocation_annotations_are_valid_pod_annotations",
    "hami_policies": "test_every_policy_scores_its_devices",
}


def sample_container(kind: DeviceKind, *, name: str = "main") -> dict[str, Any]:
    """A container asking for one device of ``kind`` with some memory and cores where it can."""
    limits = {kind.resources.count: "1"}
    if kind.resources.memory:
        limits[kind.resources.memory] = "1024"
    if kind.resources.cores:
        limits[kind.resources.cores] = "10"
    return {"name": name, "image": "busybox", "resources": {"limits": limits}}


def sample_pod(*containers: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "conformance", "namespace": "default", "uid": "00000000-0000-0000-0000-000000000001", "annotations": {}},
        "spec": {"containers": list(containers)},
    }


class BackendConformance:
    """Contract tests for one backend; subclass and provide the ``backend`` fixture."""

    @pytest.fixture
    def backend(self) -> object:
        pytest.fail("define a `backend` fixture returning your backend's plugin object")

    @pytest.fixture
    def backend_info(self, backend: object) -> BackendInfo:
        return backend.hami_backend()  # type: ignore[attr-defined]

    @pytest.fixture
    def conformance_inventory(self, backend_info: BackendInfo, tmp_path: Path) -> Path:
        """A node inventory with a few devices of every kind the backend declares."""
        devices = [
            {"vendor": k.vendor, "type": f"{k.vendor} conformance card", "memory": DEVICE_MEMORY, "count": DEVICES_PER_KIND}
            for k in backend_info.kinds
        ]
        path = tmp_path / "inventory.yaml"
        path.write_text(yaml.safe_dump({"nodes": [{"name": NODE, "cpu": 8, "memory": "32Gi", "devices": devices}]}))
        return path

    @pytest.fixture
    def backend_config(self, conformance_inventory: Path) -> dict[str, Any]:
        """The operator configuration the tests run with; extend it in your subclass."""
        return {"inventory": str(conformance_inventory)}

    @pytest.fixture
    def manager(self, backend: object, backend_config: dict[str, Any]) -> BackendManager:
        manager = BackendManager(strict=True, allow=(), deny=())
        record = manager.register(backend, distribution="conformance")
        assert record.status == "ok" and record.info is not None, record.error
        manager.configure(record.info.name, backend_config)
        return manager

    @pytest.fixture
    def node(self, manager: BackendManager, backend_info: BackendInfo, tmp_path: Path) -> NodeContext:
        """The node context the agent would build: simulated, because an inventory is configured."""
        return manager.node_context(backend_info.name, NODE, state_root=tmp_path / "state")

    @pytest.fixture
    def devices(self, manager: BackendManager, backend_info: BackendInfo, node: NodeContext) -> list[PhysicalDevice]:
        return manager.discover(backend_info.name, node)

    # ------------------------------------------------------------ identity and loading

    def test_identity_is_complete(self, backend_info: BackendInfo) -> None:
        assert isinstance(backend_info, BackendInfo)
        assert backend_info.name and backend_info.kinds
        annotation_keys = []
        for kind in backend_info.kinds:
            assert kind.resources.count, f"{kind.vendor}: no count resource"
            for name in kind.resources.all():
                assert is_extended_resource_name(name), name
            keys = [kind.annotations.node_register, kind.annotations.handshake, kind.annotations.to_allocate, kind.annotations.allocated]
            assert all(is_annotation_key(k) for k in keys), keys
            annotation_keys += [kind.annotations.node_register, kind.annotations.to_allocate, kind.annotations.allocated]
        assert len(set(annotation_keys)) == len(annotation_keys), f"annotation keys shared between kinds: {annotation_keys}"
        resources = backend_info.resource_names
        assert len(set(resources)) == len(resources), f"a resource name is declared twice: {resources}"

    def test_loads_cleanly_and_owns_its_vendor_keys(self, manager: BackendManager, backend_info: BackendInfo) -> None:
        manager.check_pending()
        assert [r.status for r in manager.records if not r.builtin] == ["ok"]
        for vendor in backend_info.vendors:
            assert manager.owner(vendor).name == backend_info.name
        for resource in backend_info.resource_names:
            assert manager.kind_for_resource(resource) is not None, resource

    def test_every_implemented_hook_is_exercised(self, manager: BackendManager, backend: object) -> None:
        implemented = {caller.name for caller in manager.pm.get_hookcallers(backend) or ()}
        assert "hami_backend" in implemented
        assert implemented <= set(EXERCISED_HOOKS), f"the kit does not exercise {sorted(implemented - set(EXERCISED_HOOKS))}"

    # ------------------------------------------------------------ node side

    def test_discovery_reads_the_inventory(self, devices: list[PhysicalDevice], backend_info: BackendInfo, node: NodeContext) -> None:
        """Every backend must run on the simulated source, so the sandbox and tests need no hardware."""
        assert node.simulated
        assert len(devices) == DEVICES_PER_KIND * len(backend_info.kinds)
        assert all(isinstance(d, PhysicalDevice) and d.vendor in backend_info.vendors for d in devices)
        assert len({d.id for d in devices}) == len(devices)

    def test_health_reports_events_for_own_devices(
        self, manager: BackendManager, devices: list[PhysicalDevice], backend_info: BackendInfo, node: NodeContext
    ) -> None:
        events = manager.device_health(backend_info.name, devices, node)
        ids = {d.id for d in devices}
        assert all(e.device_id in ids for e in events), events

    def test_simulated_node_is_enforced(
        self, manager: BackendManager, devices: list[PhysicalDevice], backend_info: BackendInfo, node: NodeContext
    ) -> None:
        """A simulated node touches no host and is enforced by definition (unless its inventory says
        ``isolation_missing``): every report is ready and of an owned vendor (the manager checks)."""
        reports = manager.enforcement(backend_info.name, devices, node)
        assert all(r.ready for r in reports), [r for r in reports if not r.ready]

    def test_usage_sample_keeps_the_contract(
        self, manager: BackendManager, devices: list[PhysicalDevice], backend_info: BackendInfo, node: NodeContext
    ) -> None:
        """A simulated node's sample (what the sandbox shows): figures only for the devices and
        containers asked about (the manager checks), usage within what exists, twice (the sampler repeats)."""
        containers: list[ContainerShare] = []
        for kind in backend_info.kinds:
            device = next(d for d in devices if d.vendor == kind.vendor)
            containers.append(
                ContainerShare(
                    "default", f"pod-{len(containers)}", f"uid-{len(containers)}", "main", [Grant(device.id, kind.vendor, 1024, 10)]
                )
            )
        for _ in range(2):
            report = manager.sample_usage(backend_info.name, devices, containers, node)
            assert isinstance(report, UsageReport)
            for share in report.shares:
                assert share.memory_limit is None or share.memory_used <= share.memory_limit * 2, share
            for load in report.devices:
                assert load.memory_total is None or load.memory_used <= load.memory_total, load

    def test_split_devices_round_trip_through_the_node_annotation(
        self, manager: BackendManager, devices: list[PhysicalDevice], backend_info: BackendInfo, node: NodeContext
    ) -> None:
        extra = manager.node_annotations(backend_info.name, [manager.split(d, node) for d in devices], devices)
        assert all(is_annotation_key(k) and isinstance(v, str) for k, v in extra.items()), extra
        for device in devices:
            split = manager.split(device, node)
            assert split.id == device.id and split.vendor == device.vendor
            assert split.count >= 1 and split.memory >= 1, split
            kind = manager.kind(device.vendor)
            text = encode_node_devices([split], kind.node_encoding)
            assert decode_node_devices(text, device.vendor, kind.node_encoding) == (split,)

    # ------------------------------------------------------------ scheduling side

    def test_requests_round_trip_through_the_allocation_codec(
        self, manager: BackendManager, devices: list[PhysicalDevice], backend_info: BackendInfo
    ) -> None:
        for kind in backend_info.kinds:
            container = sample_container(kind)
            requests = manager.container_requests(container, sample_pod(container))
            assert [r.vendor for r in requests] == [kind.vendor], requests
            request = requests[0]
            assert request.count == 1
            device = manager.split(next(d for d in devices if d.vendor == kind.vendor))
            grants = [Grant(device.id, kind.vendor, request.memory_on(device), request.cores)]
            text = encode_pod_devices([grants, []])
            assert decode_pod_devices(text) == (tuple(grants), ())

    def test_container_without_its_resources_asks_nothing(self, manager: BackendManager) -> None:
        container = {"name": "plain", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
        assert manager.container_requests(container, sample_pod(container)) == []

    def test_bad_quantity_is_a_clear_request_error(self, manager: BackendManager, backend_info: BackendInfo) -> None:
        for kind in backend_info.kinds:
            container = {"name": "bad", "resources": {"limits": {kind.resources.count: "two"}}}
            with pytest.raises(RequestError) as caught:
                manager.container_requests(container, sample_pod(container))
            assert "two" in str(caught.value) and kind.resources.count in str(caught.value)

    def test_admission_defaults_touch_only_own_resources(self, manager: BackendManager, backend_info: BackendInfo) -> None:
        for kind in backend_info.kinds:
            container = sample_container(kind)
            del container["resources"]["limits"][kind.resources.count]
            patch = manager.mutate_container(container, sample_pod(container))
            assert set(patch.limits) <= set(backend_info.resource_names), patch
            patched = {**container, "resources": {"limits": {**container["resources"]["limits"], **patch.limits}}}
            assert [r.vendor for r in manager.container_requests(patched, sample_pod(patched))] in ([kind.vendor], [])

    def test_fit_hooks_keep_the_contract(self, manager: BackendManager, devices: list[PhysicalDevice], backend_info: BackendInfo) -> None:
        for kind in backend_info.kinds:
            container = sample_container(kind)
            pod = sample_pod(container)
            (request,) = manager.container_requests(container, pod)
            usage = DeviceUsage(manager.split(next(d for d in devices if d.vendor == kind.vendor)))
            normalized = manager.normalize(request, usage, pod)
            assert isinstance(normalized, DeviceRequest) and normalized.vendor == kind.vendor
            reason = manager.device_fits(normalized, usage, pod)
            assert reason is None or (isinstance(reason, str) and reason), reason
            pair = [DeviceUsage(manager.split(d)) for d in devices if d.vendor == kind.vendor]
            chosen = manager.select_devices(attrs.evolve(request, count=2), pair, {}, pod)  # checks ids and count
            assert chosen is None or len(chosen) in (0, 2)

    def test_capacity_devices_belong_to_the_vendor(self, manager: BackendManager, backend_info: BackendInfo) -> None:
        """A node without the device-list annotation: whatever the backend reads from its capacity
        is its own vendor's and within the registration bounds (None/[] for a node showing nothing)."""
        for kind in backend_info.kinds:
            names = [n for n in (kind.resources.count, kind.resources.memory, kind.resources.cores) if n]
            node = {
                "metadata": {"name": "conformance-node"},
                "status": {"capacity": dict.fromkeys(names, "200"), "allocatable": dict.fromkeys(names, "200")},
            }
            for device in manager.node_capacity_devices(kind.vendor, node):  # checks the vendor
                check_node_device(device, f"{kind.vendor} capacity device")
            assert manager.node_capacity_devices(kind.vendor, {"metadata": {"name": "conformance-node"}}) == ()

    def test_every_policy_scores_its_devices(
        self, manager: BackendManager, devices: list[PhysicalDevice], backend_info: BackendInfo
    ) -> None:
        """The policies a backend offers load beside the core's (no name taken twice), and every
        policy, the backend's and the core's, scores this backend's devices with a number."""
        policies = manager.policies()
        for kind in backend_info.kinds:
            container = sample_container(kind)
            pod = sample_pod(container)
            (request,) = manager.container_requests(container, pod)
            usages = [DeviceUsage(manager.split(d)) for d in devices if d.vendor == kind.vendor]
            node = NodeUsage("conformance-node", usages)
            for level, name in policies:
                if level == "node":
                    assert len(manager.score_nodes(name, [node, NodeUsage("empty-node")], [request], pod)) == 2
                else:
                    for usage in usages:
                        manager.score_device(name, manager.normalize(request, usage, pod), usage, pod)  # checked: a number

    # ------------------------------------------------------------ runtime side

    def test_runtime_hooks_stay_within_declared_host_paths(
        self, manager: BackendManager, devices: list[PhysicalDevice], backend_info: BackendInfo, node: NodeContext
    ) -> None:
        """prepare → edits → release with the devices and node context the agent hands over; twice,
        because kubelet retries Allocate and a pod watch may see a deletion twice."""
        for kind in backend_info.kinds:
            container = sample_container(kind)
            pod = sample_pod(container)
            device = next(d for d in devices if d.vendor == kind.vendor)
            grants = [Grant(device.id, kind.vendor, 1024, 10)]
            granted = [GrantedDevice(grants[0], device, manager.split(device, node))]
            for _ in range(2):
                manager.prepare(grants, pod, container, node, granted)
            edits = manager.container_edits(grants, pod, container, node, granted)  # raises on undeclared host paths
            assert isinstance(edits, ContainerEdits)
            for _ in range(2):
                manager.release(grants, pod, container, node, granted)

    def test_allocation_annotations_are_valid_pod_annotations(
        self, manager: BackendManager, devices: list[PhysicalDevice], backend_info: BackendInfo, node: NodeContext
    ) -> None:
        for kind in backend_info.kinds:
            container = sample_container(kind)
            found = [d for d in devices if d.vendor == kind.vendor]
            grants = [[], [Grant(found[0].id, kind.vendor, 1024, 10)]]
            split = {d.id: manager.split(d, node) for d in found}
            extra = manager.allocation_annotations(kind.vendor, grants, split, sample_pod(container))  # checks keys and values
            assert all(is_annotation_key(k) and isinstance(v, str) for k, v in extra.items()), extra
