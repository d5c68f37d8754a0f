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
        default_config={"split_count": 4},
        host_paths=("/dev",),
    )


@hookimpl
def hami_discover_devices(config, node_name):
    # A real backend asks its SDK here, imported lazily; the inventory is the simulated source.
    return inventory_devices(config, node_name, ["ACME"])


@hookimpl
def hami_split_device(device, config):
    return SchedulableDevice(
        id=device.id, vendor=device.vendor, type=device.type, count=config["split_count"],
        memory=device.memory, cores=100, index=device.index, numa=device.numa, healthy=device.healthy,
    )


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
def hami_container_edits(grants, pod, container, config):
    return ContainerEdits(
        env={"ACME_VISIBLE_DEVICES": ",".join(g.id for g in grants),
             "ACME_MEMORY_LIMIT_MIB": str(min(g.memory for g in grants))},
        devices=[DeviceNode("/dev/acmectl", "/dev/acmectl")],
    )
