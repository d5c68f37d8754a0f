"""MIG: a GPU in MIG mode is shared by handing out its existing instances, one per container.

Discovery lists each MIG-enabled GPU's instances (``mig_devices``: uuid, profile, MiB). The split
publishes them grouped by profile as HAMi's geometry shape (``[[{"name", "memory", "count"}]]``),
so the scheduler can round a request up to the smallest profile that holds it (like a vNPU
template). On the node, :class:`MigLedger` picks a free instance of that size for each container
(kept in the node's state directory), and :func:`partition_instances` reports which one, with its
GPU-instance/compute-instance ids and placement as discovery read them, so the agent writes HAMi's
``hami.io/vgpu-mig-allocations`` (as HAMi's device plugin does, ``pkg/device-plugin/nvidiadevice/
nvinternal/plugin/server.go``) and the scheduler and agent export ``hami_node_gpu_mig_instance_info``
and ``hami_mig_device_info``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from hami.sdk import BackendError, DeviceRequest, GrantedDevice, PartitionInstance, PhysicalDevice, SchedulableDevice

PROFILE_ATTRIBUTE = "mig_profile"
"""The request attribute naming the MIG profile a request was rounded to ("" when none fits)."""
NO_PROFILE = "MigProfileNotFit"


def instances(device: PhysicalDevice) -> list[Mapping[str, Any]]:
    found = device.attributes.get("mig_devices") or []
    return [i for i in found if isinstance(i, Mapping) and isinstance(i.get("uuid"), str) and isinstance(i.get("memory"), int)]


def _uint(inst: Mapping[str, Any], key: str) -> int | None:
    value = inst.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def partition_instances(devices: Sequence[GrantedDevice], uuids: Sequence[str]) -> list[PartitionInstance]:
    """The instance each grant got (``uuids`` in grant order), as HAMi records them on the pod.

    An instance whose placement discovery could not read is left out: HAMi's annotation requires
    one (its scheduler's reservation), and an entry without it would make HAMi's readers drop the
    whole pod's list. Its ids are ``None`` where the driver did not tell (not realized: no series)."""
    out = []
    for position, (granted, uuid) in enumerate(zip(devices, uuids, strict=True)):
        inst = next((i for i in instances(granted.device) if i["uuid"] == uuid), None)
        if inst is None:
            continue
        start, size = _uint(inst, "placement_start"), _uint(inst, "placement_size")
        if start is None or not size:
            continue
        out.append(
            PartitionInstance(
                device_index=position,
                device=granted.id,
                profile=str(inst.get("profile") or f"{inst['memory']}mb"),
                placement_start=start,
                placement_size=size,
                uuid=uuid,
                instance_id=_uint(inst, "gpu_instance_id"),
                compute_instance_id=_uint(inst, "compute_instance_id"),
            )
        )
    return out


def geometry(device: PhysicalDevice) -> list[dict[str, Any]]:
    """The GPU's current MIG layout grouped by profile, smallest first."""
    grouped: dict[tuple[str, int], int] = {}
    for inst in instances(device):
        key = (str(inst.get("profile") or f"{inst['memory']}mb"), inst["memory"])
        grouped[key] = grouped.get(key, 0) + 1
    return [
        {"name": name, "memory": memory, "count": n} for (name, memory), n in sorted(grouped.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]


def templates(device: SchedulableDevice) -> list[tuple[str, int]]:
    """(profile, MiB) of every template in the device's published geometries, smallest first."""
    found = set()
    for geometry_ in device.partitions:  # profiles as the scheduler decodes them, or layouts (lists of them) as split made them
        for template in (geometry_,) if isinstance(geometry_, Mapping) else geometry_ if isinstance(geometry_, Sequence) else ():
            if isinstance(template, Mapping) and isinstance(template.get("name"), str) and isinstance(template.get("memory"), int):
                found.add((template["name"], template["memory"]))
    return sorted(found, key=lambda t: (t[1], t[0]))


def normalize(request: DeviceRequest, device: SchedulableDevice) -> DeviceRequest:
    """Round the request to the smallest profile holding it; without a memory figure, a share of
    the GPU's MIG memory (100 % when nothing was asked: the largest profile). MIG isolates compute
    in hardware, so the request's cores do not apply."""
    options = templates(device)
    if not options:
        return attrs.evolve(request, attributes={**request.attributes, PROFILE_ATTRIBUTE: ""})
    if request.memory:
        fitting = [t for t in options if t[1] >= request.memory]
    else:
        need = device.memory * (100 if request.memory_percentage is None else request.memory_percentage) // 100
        fitting = [t for t in options if t[1] >= need] or [options[-1]]
    if not fitting:
        return attrs.evolve(request, attributes={**request.attributes, PROFILE_ATTRIBUTE: ""})
    name, memory = fitting[0]
    return attrs.evolve(request, memory=memory, memory_percentage=None, cores=0, attributes={**request.attributes, PROFILE_ATTRIBUTE: name})


class MigLedger:
    """Which MIG instance each container holds on one node, so no two containers share one.

    Kept in ``<node state dir>/mig.json`` (``NodeContext.state_dir``): an agent restart still knows
    who holds what, and each node of a sandbox has its own. :meth:`assign` is idempotent (kubelet
    retries Allocate), :meth:`release` frees a container's instances when its pod is gone.
    """

    _lock = threading.Lock()  # one process may serve several nodes (the sandbox): one lock for all files

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir) / "mig.json"

    def _load(self) -> dict[str, tuple[str, str]]:
        try:
            raw = json.loads(self.path.read_text()) if self.path.exists() else {}
            return {str(uuid): (str(uid), str(name)) for uuid, (uid, name) in raw.items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise BackendError(
                f"MIG ledger {str(self.path)!r} cannot be read ({exc}); expected {{MIG uuid: [pod uid, container]}}"
            ) from None

    def _save(self, held: Mapping[str, tuple[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.with_suffix(".tmp").write_text(json.dumps({k: list(v) for k, v in held.items()}))
        os.replace(self.path.with_suffix(".tmp"), self.path)

    def assign(self, owner: tuple[str, str], gpu: PhysicalDevice, memory: int) -> str:
        with self._lock:
            held = self._load()
            sized = [i for i in instances(gpu) if i["memory"] == memory]
            for inst in sized:
                if held.get(inst["uuid"]) == owner:
                    return str(inst["uuid"])
            for inst in sized:
                if inst["uuid"] not in held:
                    held[inst["uuid"]] = owner
                    self._save(held)
                    return str(inst["uuid"])
        sizes = sorted({i["memory"] for i in instances(gpu)})
        if not sized:
            raise BackendError(f"GPU {gpu.id} has no MIG instance of {memory} MiB (its instances have {sizes} MiB)")
        raise BackendError(
            f"every MIG instance of {memory} MiB on GPU {gpu.id} is taken ({len(sized)} of them); the scheduler's view is stale"
        )

    def release(self, owner: tuple[str, str]) -> list[str]:
        with self._lock:
            held = self._load()
            freed = [uuid for uuid, who in held.items() if who == owner]
            if freed:
                self._save({k: v for k, v in held.items() if v != owner})
        return freed
