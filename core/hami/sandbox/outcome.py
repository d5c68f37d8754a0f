"""What the sandbox reports about each pod and node (the ``--json`` schema)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

Phase = Literal["Running", "Pending", "Rejected"]
EXPECT_ANNOTATION = "hami.io/expect"
"""On an example pod: ``pending`` or ``rejected`` when it is meant not to run (with why in a comment)."""


@attrs.frozen
class DeviceGrant:
    uuid: str
    type: str
    memory_mib: int
    cores: int


@attrs.frozen
class ContainerOutcome:
    name: str
    devices: tuple[DeviceGrant, ...] = ()
    envs: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    mounts: tuple[Mapping[str, Any], ...] = attrs.field(default=(), hash=False)
    device_nodes: tuple[Mapping[str, Any], ...] = attrs.field(default=(), hash=False)


@attrs.frozen
class PodOutcome:
    namespace: str
    name: str
    phase: Phase
    node: str = ""
    reason: str = ""
    containers: tuple[ContainerOutcome, ...] = ()
    expected: Phase = "Running"
    warnings: tuple[str, ...] = ()
    """The admission webhook's warnings (kubectl prints them on create): how a request was read or rewritten."""

    @property
    def as_expected(self) -> bool:
        return self.phase == self.expected

    def as_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "phase": self.phase,
            "expected": self.expected,
            "node": self.node,
            "reason": self.reason,
            "warnings": list(self.warnings),
            "containers": [
                {
                    "name": c.name,
                    "devices": [attrs.asdict(d) for d in c.devices],
                    "envs": dict(c.envs),
                    "mounts": [dict(m) for m in c.mounts],
                    "device_nodes": [dict(d) for d in c.device_nodes],
                }
                for c in self.containers
            ],
        }


def expected_phase(pod: Mapping[str, Any]) -> Phase:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(EXPECT_ANNOTATION, "running").strip().lower()
    return {"pending": "Pending", "rejected": "Rejected"}.get(value, "Running")  # type: ignore[return-value]
