"""ACME NPUs: shared by memory, selected by model, exposed as /dev/acme<N>."""

from __future__ import annotations

from hami.sdk import (
    AnnotationKeys,
    BackendInfo,
    ContainerEdits,
    DeviceKind,
    DeviceNode,
    ResourceNames,
    SchedulableDevice,
    hookimpl,
    inventory_devices,
    standard_request,
)

KIND = DeviceKind(
    vendor="ACME",
    resources=ResourceNames(count="acme.com/npu", memory="acme.com/npumem", cores="acme.com/npucores"),
    annotations=AnnotationKeys.hami("hami.io/node-acme-register", "hami.io/node-handshake-acme", "hami.io/acme"),
)
USE_TYPE = "acme.com/use-npotype"


@hookimpl
def hami_backend():
    return BackendInfo(
        name="acme",
        kinds=[KIND],
        description="ACME NPUs shared by memory",
        default_config={"split_count": 4, "node_split": {}},
        host_paths=("/dev",),
    )


@hookimpl
def hami_discover_devices(config, node):
    if node.simulated:  # an inventory is configured: sandbox, tests, demos
        return inventory_devices(config, node.name, ["ACME"])
    return []  # a real backend asks its SDK here, imported lazily


@hookimpl
def hami_split_device(device, config, node):
    count = config["node_split"].get(node.name, config["split_count"])  # a node may share differently
    facts = {name: getattr(device, name) for name in ("id", "vendor", "type", "memory", "index", "numa", "healthy")}
    return SchedulableDevice(count=count, cores=100, **facts)


@hookimpl
def hami_container_requests(container, pod, config):
    request = standard_request(container, KIND)
    return [request] if request else []


@hookimpl
def hami_device_fits(request, device, pod, config):
    wanted = (pod.get("metadata") or {}).get("annotations", {}).get(USE_TYPE)
    if wanted and not any(w.strip().lower() in device.device.type.lower() for w in wanted.split(",")):
        return "CardTypeMismatch"
    return None


@hookimpl
def hami_container_edits(devices, config):  # each grant with the device the node agent found
    nodes = [f"/dev/acme{d.index}" for d in devices]
    return ContainerEdits(
        env={
            "ACME_VISIBLE_DEVICES": ",".join(str(d.index) for d in devices),
            "ACME_MEMORY_LIMIT_MIB": str(min(d.grant.memory for d in devices)),
        },
        devices=[DeviceNode(p, p) for p in ["/dev/acmectl", *nodes]],
    )
