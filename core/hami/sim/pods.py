"""Trace tasks as the pod specs a user would write for the trace's device kind.

``num_gpu`` → the kind's count resource; a share (``gpu_milli`` < 1000) → its cores and
memory-percentage resources of milli/10 each (rounded up); whole devices → cores 100 (exclusive);
``gpu_spec`` → the kind's type selector annotation (``|`` → ``,``); CPU and memory → container
requests. The names come from the installed backend's :class:`DeviceKind`, never from here.
"""

from __future__ import annotations

from typing import Any

import attrs

from hami.plugin.model import DeviceKind
from hami.sim.trace import MILLI, TraceError, TraceTask

NAMESPACE = "sim"


@attrs.frozen
class ShareResources:
    """The names a trace task is written in, checked once per simulation rather than per pod."""

    count: str
    cores: str
    memory_percentage: str
    type_selector: str | None = None

    @classmethod
    def of(cls, kind: DeviceKind) -> ShareResources:
        names = kind.resources
        missing = [what for what, name in (("cores", names.cores), ("memory_percentage", names.memory_percentage)) if name is None]
        if missing:
            what = " or ".join(missing)
            raise TraceError(f"vendor {kind.vendor!r} declares no {what} resource, so a trace's device shares cannot be written for it")
        assert names.cores is not None and names.memory_percentage is not None
        return cls(names.count, names.cores, names.memory_percentage, kind.type_selector)


def share_percent(task: TraceTask) -> int:
    """The task's per-device share in percent (cores and memory), rounded up; 100 for whole devices."""
    return 100 if task.gpu_milli >= MILLI else max(1, -(-task.gpu_milli // 10))


def pod_for(task: TraceTask, uid: str, names: ShareResources) -> dict[str, Any]:
    limits: dict[str, str] = {}
    if task.num_gpu:
        limits[names.count] = str(task.num_gpu)
        percent = share_percent(task)
        limits[names.cores] = str(percent)
        if percent < 100:
            limits[names.memory_percentage] = str(percent)
    if task.gpu_spec and names.type_selector is None:
        models = "|".join(task.gpu_spec)
        raise TraceError(f"task {task.name!r} allows only device models {models}, but its device kind declares no type selector")
    annotations = {names.type_selector: ",".join(task.gpu_spec)} if task.gpu_spec and names.type_selector else {}
    container = {
        "name": "main",
        "resources": {"requests": {"cpu": f"{task.cpu_milli}m", "memory": f"{task.memory_mib}Mi"}, "limits": limits},
    }
    return {
        "metadata": {"name": task.name, "namespace": NAMESPACE, "uid": uid, "annotations": annotations},
        "spec": {"containers": [container], "schedulerName": "hami-scheduler"},
    }
