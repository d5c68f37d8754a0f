"""The pod annotations users write to steer NVIDIA placement (hami-compat.md), parsed once.

``hami_container_requests`` parses them into the request's attributes, so the hot-path
``hami_device_fits`` only compares strings; a request built elsewhere falls back to the pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from hami.sdk import DeviceRequest, RequestError, SchedulableDevice
from hami_nvidia.settings import MODES

USE_TYPE = "nvidia.com/use-gputype"
NOUSE_TYPE = "nvidia.com/nouse-gputype"
USE_UUID = "nvidia.com/use-gpuuuid"
NOUSE_UUID = "nvidia.com/nouse-gpuuuid"
NUMA_BIND = "nvidia.com/numa-bind"
VGPU_MODE = "nvidia.com/vgpu-mode"
ATTRIBUTE = "nvidia_selectors"
"""The request attribute that carries the parsed :class:`Selectors`."""

DEFAULT_DEVICE_MODE = "hami-core"
"""What a device registered without a mode (an older agent, HAMi's own) runs."""

PARSE_BOOL = {
    "1": True,
    "t": True,
    "T": True,
    "TRUE": True,
    "true": True,
    "True": True,
    "0": False,
    "f": False,
    "F": False,
    "FALSE": False,
    "false": False,
    "False": False,
}
"""Go's ``strconv.ParseBool`` spellings: upstream reads ``numa-bind`` (pkg/device/nvidia/device.go
assertNuma) and ``CUDA_DISABLE_CONTROL`` (server.go Allocate) with it."""


def parse_bool(value: str) -> bool | None:
    """``value`` as Go's ParseBool reads it, or None when Go would return an error."""
    return PARSE_BOOL.get(value)


TYPE_MISMATCH = "CardTypeMismatch"
UUID_MISMATCH = "CardUuidMismatch"
MODE_MISMATCH = "ModeNotFit"


def annotations_of(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((pod.get("metadata") or {}).get("annotations") or {}) if isinstance(pod, Mapping) else {}


def _list(value: Any, key: str, *, lower: bool) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, str):
        raise RequestError(f"pod annotation {key}={value!r:.80}: must be a comma-separated string")
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(v.lower() for v in items) if lower else items


@attrs.frozen
class Selectors:
    use_types: tuple[str, ...] = ()
    nouse_types: tuple[str, ...] = ()
    use_uuids: frozenset[str] = frozenset()
    nouse_uuids: frozenset[str] = frozenset()
    modes: tuple[str, ...] = ()
    """The isolation modes ``nvidia.com/vgpu-mode`` allows (a comma list, as upstream's checkType)."""
    numa_bind: bool = False

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> Selectors:
        """Parse the pod's annotations; a value that means nothing is a :class:`RequestError` naming it."""
        ann = annotations_of(pod)
        modes = _list(ann.get(VGPU_MODE), VGPU_MODE, lower=False)
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            # upstream matches the annotation as a substring of the device's mode, so a typo leaves the pod
            # Pending on every node; we refuse it at admission instead
            raise RequestError(
                f"pod annotation {VGPU_MODE}={ann.get(VGPU_MODE)!r:.80}: {unknown[0]!r} is not an isolation mode; use one or a comma list of {', '.join(MODES)}"
            )
        numa = ann.get(NUMA_BIND, "")
        bound = (parse_bool(numa.strip()) if numa.strip() else False) if isinstance(numa, str) else None
        if bound is None:
            # upstream ignores an unparseable value (no NUMA binding); we refuse it so the pod does not run unbound unnoticed
            raise RequestError(
                f"pod annotation {NUMA_BIND}={numa!r:.80}: not a boolean; write true or false "
                f"(Go's ParseBool spellings: {', '.join(PARSE_BOOL)})"
            )
        return cls(
            use_types=_list(ann.get(USE_TYPE), USE_TYPE, lower=True),
            nouse_types=_list(ann.get(NOUSE_TYPE), NOUSE_TYPE, lower=True),
            use_uuids=frozenset(_list(ann.get(USE_UUID), USE_UUID, lower=False)),
            nouse_uuids=frozenset(_list(ann.get(NOUSE_UUID), NOUSE_UUID, lower=False)),
            modes=modes,
            numa_bind=bool(bound),
        )

    @classmethod
    def of(cls, request: DeviceRequest, pod: Mapping[str, Any]) -> Selectors:
        found = request.attributes.get(ATTRIBUTE)
        return found if isinstance(found, Selectors) else cls.from_pod(pod)

    def reason(self, device: SchedulableDevice) -> str | None:
        """Why ``device`` is not one the pod asked for, or None."""
        kind = device.type.lower()
        if self.use_types and not any(t in kind for t in self.use_types):
            return TYPE_MISMATCH
        if any(t in kind for t in self.nouse_types):
            return TYPE_MISMATCH
        if self.use_uuids and device.id not in self.use_uuids:
            return UUID_MISMATCH
        if device.id in self.nouse_uuids:
            return UUID_MISMATCH
        if self.modes and (device.mode or DEFAULT_DEVICE_MODE) not in self.modes:
            return MODE_MISMATCH
        return None
