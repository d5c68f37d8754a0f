"""ContainerEdits (our model) → ContainerAllocateResponse (kubelet's wire type).

Kept apart from the Allocate logic so the mapping is one small, tested function: a field forgotten
here would silently never reach a container.
"""

from __future__ import annotations

from hami.node.deviceplugin.v1beta1 import api_pb2
from hami.plugin.model import ContainerEdits


def to_response(edits: ContainerEdits) -> api_pb2.ContainerAllocateResponse:
    """Every field of ``edits`` in kubelet's terms (envs, mounts, device nodes, annotations, CDI)."""
    return api_pb2.ContainerAllocateResponse(
        envs=dict(edits.env),
        mounts=[api_pb2.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only) for m in edits.mounts],
        devices=[
            api_pb2.DeviceSpec(container_path=d.container_path, host_path=d.host_path, permissions=d.permissions) for d in edits.devices
        ],
        annotations=dict(edits.annotations),
        cdi_devices=[api_pb2.CDIDevice(name=name) for name in edits.cdi_devices],
    )
