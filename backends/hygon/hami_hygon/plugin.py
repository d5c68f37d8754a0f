"""Hygon DCUs: hy-smi discovery, HAMi's names (legacy CSV registration), selectors, virtual DCUs.

Hook by hook:
- discovery: hy-smi (or the node inventory when configured); health = the device is still listed;
- requests: HAMi's rules, with ``dcucores`` defaulting to 100 as HAMi does (a DCU asked for without
  cores is used whole); more than one DCU per container means whole DCUs, because a vDCU limit
  only exists for a single device (HAMi documents the same);
- fits: ``hygon.com/use-dcutype`` / ``nouse-dcutype`` (substring) and ``use-gpuuuid`` / ``nouse-gpuuuid``;
- prepare/release: a vdev config per shared container (see :mod:`hami_hygon.vdev`), optionally
  followed by an operator-configured ``hy_virtual`` command;
- edits: ``/dev/kfd``, ``/dev/mkfd``, the DRM nodes of each granted DCU, the vdev config dir at
  ``/etc/vdev/docker/``, the driver dirs ``/opt/hygondriver`` and ``/opt/hyhal``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from hami.sdk import (
    AnnotationKeys,
    BackendError,
    BackendInfo,
    ContainerEdits,
    ContainerPatch,
    DeviceKind,
    DeviceNode,
    DeviceRequest,
    DeviceUsage,
    Enforcement,
    GrantedDevice,
    HealthEvent,
    Mount,
    NodeContext,
    PhysicalDevice,
    PresenceWatch,
    ResourceNames,
    StandardBackend,
    container_resources,
    hookimpl,
    run_tool,
    selectors,
    simulated_enforcement,
)
from hami_hygon import discovery
from hami_hygon.vdev import PhysicalDcu, VdevConf, VdevStore, container_key

log = logging.getLogger(__name__)

KIND = DeviceKind(
    vendor="DCU",
    resources=ResourceNames(count="hygon.com/dcunum", memory="hygon.com/dcumem", cores="hygon.com/dcucores"),
    annotations=AnnotationKeys.hami("hami.io/node-dcu-register", "hami.io/node-handshake-dcu", "hami.io/dcu"),
    node_encoding="csv",
)

USE_TYPE = "hygon.com/use-dcutype"
NOUSE_TYPE = "hygon.com/nouse-dcutype"
USE_UUID = "hygon.com/use-gpuuuid"
NOUSE_UUID = "hygon.com/nouse-gpuuuid"
VDEV_CONTAINER_PATH = "/etc/vdev/docker"
DRIVER_CONTAINER_PATH = "/opt/hygondriver"
HYHAL = "/opt/hyhal"

INFO = BackendInfo(
    name="hygon",
    kinds=[KIND],
    description="Hygon DCUs shared through virtual DCUs (compute-unit masks, memory limits)",
    default_config={
        "split_count": 4,
        "memory_scaling": 1,
        "core_scaling": 1,
        "default_memory": 0,
        "default_cores": 100,
        "hy_smi": "hy-smi",
        "hy_smi_timeout": 10.0,
        "compute_units": 60,
        "vdev_root": "/etc/vdev",
        "driver_dir": "/opt/hygondriver",
        "hy_virtual": None,
        "hy_virtual_timeout": 10.0,
        "sysfs_root": "/sys",
    },
    host_paths=("/dev", "/etc/vdev", "/opt/hygondriver", HYHAL),
)


class HygonBackend(StandardBackend):
    """The Hygon backend; it keeps no state (vDCU state lives in files)."""

    def __init__(self, info: BackendInfo = INFO) -> None:
        super().__init__(info)
        self._presence = PresenceWatch()

    # ------------------------------------------------------------ node side

    @hookimpl
    def hami_discover_devices(self, config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:  # type: ignore[override]  # pluggy passes hook arguments by name
        return discovery.discover(config, node)

    @hookimpl
    def hami_enforcement(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[Enforcement]:
        """vDCU limits are enforced by the DCU virtualization module (the vdev configs the agent writes
        are read by it): ready for the DCUs ``hy-smi virtual -show-device-info`` answered for."""
        if node.simulated:
            return simulated_enforcement(devices, discovery.VENDOR, [""], "vDCU (virtualization module)")
        out = [Enforcement(discovery.VENDOR, "", mechanism="vDCU (virtualization module)")]
        for d in devices:
            if not d.attributes.get("virtualization"):
                out.append(
                    Enforcement(
                        discovery.VENDOR,
                        "",
                        ready=False,
                        mechanism="vDCU (virtualization module)",
                        device_ids=(d.id,),
                        reason=f"hy-smi virtual -show-device-info gave nothing for DCU {d.index}: the virtualization module is not loaded",
                    )
                )
        return out

    @hookimpl
    def hami_device_health(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[HealthEvent]:
        """A DCU that drops out of hy-smi's table is unhealthy until it is listed again."""
        if node.simulated:
            return []
        present = discovery.present_indexes(config)
        if present is None:
            return []
        return self._presence.events(devices, present, lambda device: f"DCU {device.index} is no longer listed by hy-smi")

    # ------------------------------------------------------------ scheduling side

    @hookimpl
    def hami_container_requests(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> list[DeviceRequest]:
        requests = super().hami_container_requests(container, pod, config)
        return [_whole(r) if r.count > 1 else r for r in requests]

    @hookimpl
    def hami_mutate_container(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> ContainerPatch | None:
        patch = super().hami_mutate_container(container, pod, config)
        resources = container_resources(container)
        (kind,) = self.kinds(config)  # under the operator's resource_names
        names = kind.resources
        count = str(resources.get(names.count, "1"))
        if count.isdecimal() and int(count) > 1 and (names.memory in resources or names.cores in resources):
            warning = (
                f"container {container.get('name')!r}: {names.count}={count} gets whole DCUs; "
                f"{names.memory} and {names.cores} only apply to a single vDCU"
            )
            # the shared request rules' warnings (cores clamped, 0 read as unset, ...) are kept
            return ContainerPatch(limits=patch.limits if patch else {}, warnings=[*(patch.warnings if patch else ()), warning])
        return patch

    @hookimpl
    def hami_device_fits(
        self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> str | None:
        annos = selectors.pod_annotations(pod)
        if not annos:
            return None
        return selectors.type_reason(annos, device.device.type, USE_TYPE, NOUSE_TYPE) or selectors.uuid_reason(
            annos, device.device.id, USE_UUID, NOUSE_UUID
        )

    # ------------------------------------------------------------ runtime side

    @hookimpl
    def hami_prepare(
        self,
        devices: Sequence[GrantedDevice],
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        config: Mapping[str, Any],
        node: NodeContext,
    ) -> None:
        """A vDCU for a single shared DCU; whole DCUs (several, or all of one) need none."""
        if len(devices) != 1 or devices[0].whole:
            return
        grant, device = devices[0].grant, devices[0].device
        store = _store(config, node)
        key = _key(pod, container)
        physical = PhysicalDcu(
            index=device.index,
            pci_bus_id=str(device.attributes.get("pci_bus_id") or f"index-{device.index}"),
            compute_units=int(device.attributes.get("compute_units") or config.get("compute_units", 60)),
            memory=device.memory,
        )
        conf = store.create(key, physical, grant.cores, grant.memory)
        try:
            _hy_virtual(config, "create", store, key, conf)
        except BackendError:
            store.remove(key)
            raise

    @hookimpl
    def hami_release(self, pod: Mapping[str, Any], container: Mapping[str, Any], config: Mapping[str, Any], node: NodeContext) -> None:
        store = _store(config, node)
        key = _key(pod, container)
        conf = store.releasable(key)
        if conf is not None:
            try:
                _hy_virtual(config, "remove", store, key, conf)
            except BackendError as exc:
                log.warning("event=hy_virtual_failed action=remove key=%s error=%r", key, str(exc))
        store.remove(key)

    @hookimpl
    def hami_container_edits(
        self,
        devices: Sequence[GrantedDevice],
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        config: Mapping[str, Any],
        node: NodeContext,
    ) -> ContainerEdits:
        nodes = [DeviceNode("/dev/kfd", "/dev/kfd", "rwm"), DeviceNode("/dev/mkfd", "/dev/mkfd", "rwm")]
        for device in (d.device for d in devices):
            for name in (
                device.attributes.get("card") or f"card{device.index}",
                device.attributes.get("render") or f"renderD{128 + device.index}",
            ):
                nodes.append(DeviceNode(f"/dev/dri/{name}", f"/dev/dri/{name}", "rw"))
        mounts = []
        key = _key(pod, container)
        if _store(config, node).container_dir(key).is_dir():
            # where a real node keeps it (a simulated node's private copy is not a host path)
            folder = VdevStore(str(config.get("vdev_root", "/etc/vdev"))).container_dir(key)
            mounts.append(Mount(VDEV_CONTAINER_PATH, str(folder)))
            mounts.append(Mount(DRIVER_CONTAINER_PATH, str(config.get("driver_dir", DRIVER_CONTAINER_PATH))))
        mounts.append(Mount(HYHAL, HYHAL, read_only=True))
        return ContainerEdits(devices=nodes, mounts=mounts)


def _whole(request: DeviceRequest) -> DeviceRequest:
    return attrs.evolve(request, memory=0, memory_percentage=100, cores=100)


def _store(config: Mapping[str, Any], node: NodeContext) -> VdevStore:
    """The vdev configs: ``vdev_root`` on a real node; the node's state directory on a simulated
    one, which has no host to write to."""
    return VdevStore(str(node.state_dir / "vdev") if node.simulated else str(config.get("vdev_root", "/etc/vdev")))


def _key(pod: Mapping[str, Any], container: Mapping[str, Any]) -> str:
    uid = (pod.get("metadata") or {}).get("uid")
    name = container.get("name")
    if not uid or not name:
        raise BackendError(f"cannot name a vDCU: pod uid={uid!r}, container name={name!r}")
    return container_key(str(uid), str(name))


def _hy_virtual(config: Mapping[str, Any], action: str, store: VdevStore, key: str, conf: VdevConf) -> None:
    """Run the operator's ``hy_virtual`` argv template, if any (``{action}``, ``{conf}``, ``{vdev_id}``, ``{device}``)."""
    template = config.get("hy_virtual")
    if not template:
        return
    if isinstance(template, str) or not all(isinstance(part, str) for part in template):
        raise BackendError(f"config hy_virtual={template!r} must be a list of strings (an argv template)")
    values = {
        "action": action,
        "conf": str(store.root / f"vdev{conf.vdev_id}.conf"),
        "vdev_id": str(conf.vdev_id),
        "device": str(conf.device_id),
        "key": key,
    }
    try:
        argv = [part.format(**values) for part in template]
    except (KeyError, IndexError) as exc:
        raise BackendError(f"config hy_virtual={template!r} names an unknown placeholder {exc}") from None
    try:
        run_tool(argv, float(config.get("hy_virtual_timeout", 10.0)))
    except BackendError as exc:
        raise BackendError(f"hy_virtual: {exc}") from None
    log.info("event=hy_virtual_ran action=%s key=%s vdev_id=%d", action, key, conf.vdev_id)


plugin = HygonBackend(INFO)
