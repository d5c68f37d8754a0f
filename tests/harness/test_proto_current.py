"""The committed kubelet API modules (device plugin v1beta1, PodResources v1) are current, and the compiled schemas match kubelet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from hami.node.deviceplugin import regenerate
from hami.node.deviceplugin.v1beta1 import api_pb2

# message -> {field name: (number, type, repeated)} ; the table of kubernetes-protocols.md section 1.
S, B, I32, I64, MSG = (
    FieldDescriptor.TYPE_STRING,
    FieldDescriptor.TYPE_BOOL,
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_MESSAGE,
)
EXPECTED: dict[str, dict[str, tuple[int, int, bool]]] = {
    "Empty": {},
    "DevicePluginOptions": {"pre_start_required": (1, B, False), "get_preferred_allocation_available": (2, B, False)},
    "RegisterRequest": {
        "version": (1, S, False),
        "endpoint": (2, S, False),
        "resource_name": (3, S, False),
        "options": (4, MSG, False),
    },
    "ListAndWatchResponse": {"devices": (1, MSG, True)},
    "TopologyInfo": {"nodes": (1, MSG, True)},
    "NUMANode": {"ID": (1, I64, False)},
    "Device": {"ID": (1, S, False), "health": (2, S, False), "topology": (3, MSG, False)},
    "PreStartContainerRequest": {"devices_ids": (1, S, True)},
    "PreStartContainerResponse": {},
    "PreferredAllocationRequest": {"container_requests": (1, MSG, True)},
    "ContainerPreferredAllocationRequest": {
        "available_deviceIDs": (1, S, True),
        "must_include_deviceIDs": (2, S, True),
        "allocation_size": (3, I32, False),
    },
    "PreferredAllocationResponse": {"container_responses": (1, MSG, True)},
    "ContainerPreferredAllocationResponse": {"deviceIDs": (1, S, True)},
    "AllocateRequest": {"container_requests": (1, MSG, True)},
    "ContainerAllocateRequest": {"devices_ids": (1, S, True)},
    "AllocateResponse": {"container_responses": (1, MSG, True)},
    "ContainerAllocateResponse": {
        "envs": (1, MSG, True),
        "mounts": (2, MSG, True),
        "devices": (3, MSG, True),
        "annotations": (4, MSG, True),
        "cdi_devices": (5, MSG, True),
    },
    "Mount": {"container_path": (1, S, False), "host_path": (2, S, False), "read_only": (3, B, False)},
    "DeviceSpec": {"container_path": (1, S, False), "host_path": (2, S, False), "permissions": (3, S, False)},
    "CDIDevice": {"name": (1, S, False)},
}
MESSAGE_TYPES = {
    ("RegisterRequest", "options"): "v1beta1.DevicePluginOptions",
    ("ListAndWatchResponse", "devices"): "v1beta1.Device",
    ("TopologyInfo", "nodes"): "v1beta1.NUMANode",
    ("Device", "topology"): "v1beta1.TopologyInfo",
    ("PreferredAllocationRequest", "container_requests"): "v1beta1.ContainerPreferredAllocationRequest",
    ("PreferredAllocationResponse", "container_responses"): "v1beta1.ContainerPreferredAllocationResponse",
    ("AllocateRequest", "container_requests"): "v1beta1.ContainerAllocateRequest",
    ("AllocateResponse", "container_responses"): "v1beta1.ContainerAllocateResponse",
    ("ContainerAllocateResponse", "mounts"): "v1beta1.Mount",
    ("ContainerAllocateResponse", "devices"): "v1beta1.DeviceSpec",
    ("ContainerAllocateResponse", "cdi_devices"): "v1beta1.CDIDevice",
}
SERVICES = {
    "Registration": {"Register": ("RegisterRequest", "Empty", False)},
    "DevicePlugin": {
        "GetDevicePluginOptions": ("Empty", "DevicePluginOptions", False),
        "ListAndWatch": ("Empty", "ListAndWatchResponse", True),
        "GetPreferredAllocation": ("PreferredAllocationRequest", "PreferredAllocationResponse", False),
        "Allocate": ("AllocateRequest", "AllocateResponse", False),
        "PreStartContainer": ("PreStartContainerRequest", "PreStartContainerResponse", False),
    },
}


def _repeated(f: FieldDescriptor) -> bool:
    # protobuf >= 6 has ``is_repeated`` (and 7 dropped ``label``).
    if hasattr(f, "is_repeated"):
        return bool(f.is_repeated)
    return f.label == FieldDescriptor.LABEL_REPEATED  # pragma: no cover


def _without_generator_versions(text: str) -> str:
    """A newer grpcio-tools stamps its own version; only the generated code itself must match."""
    text = re.sub(r"(# Protobuf Python Version: )[\d.]+", r"\1X", text)
    text = re.sub(r"(GRPC_GENERATED_VERSION = )'[\d.]+'", r"\1'X'", text)
    return re.sub(r"(ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,)\s*\d+,\s*\d+,\s*\d+,", r"\1 X,", text)


def test_generated_modules_are_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    regenerate.generate(tmp_path)
    for name in regenerate.GENERATED:
        committed = _without_generator_versions((regenerate.PACKAGE_DIR / name).read_text())
        fresh = _without_generator_versions((tmp_path / name).read_text())
        assert fresh == committed, f"{name} is stale: run `python -m hami.node.deviceplugin.regenerate`"


def test_grpc_module_imports_pb2_from_the_package() -> None:
    text = (regenerate.PACKAGE_DIR / "api_pb2_grpc.py").read_text()
    assert "from hami.node.deviceplugin.v1beta1 import api_pb2" in text
    assert "\nimport api_pb2" not in text


def test_package_and_messages() -> None:
    fd = api_pb2.DESCRIPTOR
    assert fd.package == "v1beta1"
    assert set(fd.message_types_by_name) == set(EXPECTED)


@pytest.mark.parametrize("message", sorted(EXPECTED))
def test_fields_match_reference_table(message: str) -> None:
    desc = api_pb2.DESCRIPTOR.message_types_by_name[message]
    got = {f.name: (f.number, f.type, _repeated(f)) for f in desc.fields}
    assert got == EXPECTED[message]
    for f in desc.fields:
        if (message, f.name) in MESSAGE_TYPES:
            assert f.message_type.full_name == MESSAGE_TYPES[(message, f.name)]


@pytest.mark.parametrize("field", ["envs", "annotations"])
def test_allocate_response_maps_are_string_maps(field: str) -> None:
    f = api_pb2.ContainerAllocateResponse.DESCRIPTOR.fields_by_name[field]
    entry = f.message_type
    assert entry.GetOptions().map_entry
    assert [(x.name, x.number, x.type) for x in entry.fields] == [("key", 1, S), ("value", 2, S)]
    msg = api_pb2.ContainerAllocateResponse()
    getattr(msg, field)["K"] = "v"
    assert api_pb2.ContainerAllocateResponse.FromString(msg.SerializeToString()) == msg


def test_services_and_method_paths() -> None:
    fd = api_pb2.DESCRIPTOR
    assert set(fd.services_by_name) == set(SERVICES)
    for svc, methods in SERVICES.items():
        sd = fd.services_by_name[svc]
        assert {m.name for m in sd.methods} == set(methods)
        for m in sd.methods:
            req, resp, streaming = methods[m.name]
            assert f"/{sd.full_name}/{m.name}" == f"/v1beta1.{svc}/{m.name}"
            assert m.input_type.full_name == f"v1beta1.{req}"
            assert m.output_type.full_name == f"v1beta1.{resp}"
            assert m.server_streaming is streaming
            assert m.client_streaming is False


def test_wire_bytes_of_a_known_message() -> None:
    # Field numbers/types decide the bytes: Device{ID="a"(1), health="H"(2), topology{nodes[{ID=1}]}(3)}.
    dev = api_pb2.Device(ID="a", health="H", topology=api_pb2.TopologyInfo(nodes=[api_pb2.NUMANode(ID=1)]))
    assert dev.SerializeToString() == b"\x0a\x01a\x12\x01H\x1a\x04\x0a\x02\x08\x01"


# ---------------------------------------------------------------- kubelet PodResources API v1
# k8s.io/kubelet/pkg/apis/podresources/v1/api.proto: message -> {field: (number, type, repeated)}.
U64 = FieldDescriptor.TYPE_UINT64
PODRESOURCES_EXPECTED: dict[str, dict[str, tuple[int, int, bool]]] = {
    "AllocatableResourcesRequest": {},
    "AllocatableResourcesResponse": {"devices": (1, MSG, True), "cpu_ids": (2, I64, True), "memory": (3, MSG, True)},
    "ListPodResourcesRequest": {},
    "ListPodResourcesResponse": {"pod_resources": (1, MSG, True)},
    "PodResources": {"name": (1, S, False), "namespace": (2, S, False), "containers": (3, MSG, True)},
    "ContainerResources": {
        "name": (1, S, False),
        "devices": (2, MSG, True),
        "cpu_ids": (3, I64, True),
        "memory": (4, MSG, True),
        "dynamic_resources": (5, MSG, True),
    },
    "ContainerMemory": {"memory_type": (1, S, False), "size": (2, U64, False), "topology": (3, MSG, False)},
    "ContainerDevices": {"resource_name": (1, S, False), "device_ids": (2, S, True), "topology": (3, MSG, False)},
    "TopologyInfo": {"nodes": (1, MSG, True)},
    "NUMANode": {"ID": (1, I64, False)},
    "DynamicResource": {"claim_name": (2, S, False), "claim_namespace": (3, S, False), "claim_resources": (4, MSG, True)},
    "ClaimResource": {
        "cdi_devices": (1, MSG, True),
        "driver_name": (2, S, False),
        "pool_name": (3, S, False),
        "device_name": (4, S, False),
    },
    "CDIDevice": {"name": (1, S, False)},
    "GetPodResourcesRequest": {"pod_name": (1, S, False), "pod_namespace": (2, S, False)},
    "GetPodResourcesResponse": {"pod_resources": (1, MSG, False)},
}
PODRESOURCES_SERVICE = {
    "List": ("ListPodResourcesRequest", "ListPodResourcesResponse"),
    "GetAllocatableResources": ("AllocatableResourcesRequest", "AllocatableResourcesResponse"),
    "Get": ("GetPodResourcesRequest", "GetPodResourcesResponse"),
}


def test_podresources_modules_are_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    from hami.node.podresources import regenerate as pr_regenerate

    pr_regenerate.generate(tmp_path)
    for name in pr_regenerate.GENERATED:
        committed = _without_generator_versions((pr_regenerate.PACKAGE_DIR / name).read_text())
        fresh = _without_generator_versions((tmp_path / name).read_text())
        assert fresh == committed, f"{name} is stale: run `python -m hami.node.podresources.regenerate`"
    assert "from hami.node.podresources.v1 import api_pb2" in (pr_regenerate.PACKAGE_DIR / "api_pb2_grpc.py").read_text()


@pytest.mark.parametrize("message", sorted(PODRESOURCES_EXPECTED))
def test_podresources_fields_match_kubelet(message: str) -> None:
    from hami.node.podresources.v1 import api_pb2 as pr

    assert pr.DESCRIPTOR.package == "v1"
    assert set(pr.DESCRIPTOR.message_types_by_name) == set(PODRESOURCES_EXPECTED)
    desc = pr.DESCRIPTOR.message_types_by_name[message]
    assert {f.name: (f.number, f.type, _repeated(f)) for f in desc.fields} == PODRESOURCES_EXPECTED[message]


def test_podresources_service_and_method_paths() -> None:
    from hami.node.podresources.v1 import api_pb2 as pr

    (service,) = pr.DESCRIPTOR.services_by_name.values()
    assert service.full_name == "v1.PodResourcesLister"
    assert {m.name: (m.input_type.name, m.output_type.name) for m in service.methods} == PODRESOURCES_SERVICE
    assert all(not m.server_streaming and not m.client_streaming for m in service.methods)


def test_podresources_wire_bytes_of_a_known_message() -> None:
    from hami.node.podresources.v1 import api_pb2 as pr

    # PodResources{name="p"(1), namespace="n"(2), containers[{name="c"(1), devices[{resource_name="r"(1), device_ids["d"](2)}](2)}](3)}
    devices = [pr.ContainerDevices(resource_name="r", device_ids=["d"])]
    msg = pr.PodResources(name="p", namespace="n", containers=[pr.ContainerResources(name="c", devices=devices)])
    assert msg.SerializeToString() == b"\x0a\x01p\x12\x01n\x1a\x0b\x0a\x01c\x12\x06\x0a\x01r\x12\x01d"


# ---------------------------------------------------------------- kubelet DRA v1 and plugin registration v1
# k8s.io/kubelet/pkg/apis/dra/v1/api.proto and pkg/apis/pluginregistration/v1/api.proto (our hami/dra/*).
DRA_EXPECTED: dict[str, dict[str, tuple[int, int, bool]]] = {
    "NodePrepareResourcesRequest": {"claims": (1, MSG, True)},
    "NodePrepareResourcesResponse": {"claims": (1, MSG, True)},
    "NodePrepareResourceResponse": {"devices": (1, MSG, True), "error": (2, S, False)},
    "Device": {
        "request_names": (1, S, True),
        "pool_name": (2, S, False),
        "device_name": (3, S, False),
        "cdi_device_ids": (4, S, True),
        "share_id": (5, S, False),
    },
    "NodeUnprepareResourcesRequest": {"claims": (1, MSG, True)},
    "NodeUnprepareResourcesResponse": {"claims": (1, MSG, True)},
    "NodeUnprepareResourceResponse": {"error": (1, S, False)},
    "Claim": {"namespace": (1, S, False), "uid": (2, S, False), "name": (3, S, False)},
}
REGISTRATION_EXPECTED: dict[str, dict[str, tuple[int, int, bool]]] = {
    "PluginInfo": {"type": (1, S, False), "name": (2, S, False), "endpoint": (3, S, False), "supported_versions": (4, S, True)},
    "RegistrationStatus": {"plugin_registered": (1, B, False), "error": (2, S, False)},
    "RegistrationStatusResponse": {},
    "InfoRequest": {},
}


def test_dra_modules_are_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    from hami.dra import regenerate as dra_regenerate

    dra_regenerate.generate(tmp_path)
    for proto in dra_regenerate.PROTOS:
        for name in dra_regenerate.GENERATED:
            committed = _without_generator_versions((proto.parent / name).read_text())
            fresh = _without_generator_versions((tmp_path / proto.parent.name / name).read_text())
            assert fresh == committed, f"{proto.parent.name}/{name} is stale: run `python -m hami.dra.regenerate`"
    assert "from hami.dra.v1 import api_pb2" in (dra_regenerate.PACKAGE_DIR / "v1" / "api_pb2_grpc.py").read_text()


@pytest.mark.parametrize(
    ("module", "package", "expected"),
    [
        ("hami.dra.v1.api_pb2", "k8s.io.kubelet.pkg.apis.dra.v1", "DRA"),
        ("hami.dra.pluginregistration.api_pb2", "pluginregistration", "REG"),
    ],
)
def test_dra_and_registration_fields_match_kubelet(module: str, package: str, expected: str) -> None:
    import importlib

    pb = importlib.import_module(module)
    table = DRA_EXPECTED if expected == "DRA" else REGISTRATION_EXPECTED
    assert pb.DESCRIPTOR.package == package
    assert set(pb.DESCRIPTOR.message_types_by_name) == set(table)
    for message, fields in table.items():
        desc = pb.DESCRIPTOR.message_types_by_name[message]
        assert {f.name: (f.number, f.type, _repeated(f)) for f in desc.fields} == fields, message


def test_dra_maps_optional_share_id_and_method_paths() -> None:
    from hami.dra.pluginregistration import api_pb2 as reg
    from hami.dra.v1 import api_pb2 as dra

    maps = (
        ("NodePrepareResourcesResponse", "NodePrepareResourceResponse"),
        ("NodeUnprepareResourcesResponse", "NodeUnprepareResourceResponse"),
    )
    for message, value in maps:
        entry = dra.DESCRIPTOR.message_types_by_name[message].fields_by_name["claims"].message_type
        assert entry.GetOptions().map_entry
        assert [(x.name, x.number, x.type) for x in entry.fields] == [("key", 1, S), ("value", 2, MSG)]
        assert entry.fields_by_name["value"].message_type.name == value
    # ``optional string share_id = 5``: presence is tracked (proto3 optional, a synthetic oneof).
    share = dra.Device.DESCRIPTOR.fields_by_name["share_id"]
    assert share.has_presence
    assert not dra.Device().HasField("share_id")
    (service,) = dra.DESCRIPTOR.services_by_name.values()
    assert service.full_name == "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin"
    assert {m.name: (m.input_type.name, m.output_type.name) for m in service.methods} == {
        "NodePrepareResources": ("NodePrepareResourcesRequest", "NodePrepareResourcesResponse"),
        "NodeUnprepareResources": ("NodeUnprepareResourcesRequest", "NodeUnprepareResourcesResponse"),
    }
    (registration,) = reg.DESCRIPTOR.services_by_name.values()
    assert registration.full_name == "pluginregistration.Registration"
    assert {m.name: (m.input_type.name, m.output_type.name) for m in registration.methods} == {
        "GetInfo": ("InfoRequest", "PluginInfo"),
        "NotifyRegistrationStatus": ("RegistrationStatus", "RegistrationStatusResponse"),
    }
    assert all(not m.server_streaming and not m.client_streaming for m in (*service.methods, *registration.methods))


def test_dra_wire_bytes_of_a_known_message() -> None:
    from hami.dra.v1 import api_pb2 as dra

    # Device{request_names["r"](1), pool_name="p"(2), device_name="d"(3), cdi_device_ids["c"](4), share_id="s"(5)}
    msg = dra.Device(request_names=["r"], pool_name="p", device_name="d", cdi_device_ids=["c"], share_id="s")
    assert msg.SerializeToString() == b"\x0a\x01r\x12\x01p\x1a\x01d\x22\x01c\x2a\x01s"
    # Claim{namespace="n"(1), uid="u"(2), name="x"(3)}
    assert dra.Claim(namespace="n", uid="u", name="x").SerializeToString() == b"\x0a\x01n\x12\x01u\x1a\x01x"
