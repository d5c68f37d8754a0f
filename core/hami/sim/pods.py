"""Trace tasks as the pod specs a user would write for hami's NVIDIA backend.

``num_gpu`` → ``nvidia.com/gpu``; a share (``gpu_milli`` < 1000) → ``nvidia.com/gpucores`` and
``nvidia.com/gpumem-percentage`` of milli/10 each (rounded up); whole GPUs → ``gpucores: 100`` (exclusive);
``gpu_spec`` → ``nvidia.com/use-gputype`` (``|`` → ``,``); CPU and memory → container requests.
"""

from __future__ import annotations

from typing import Any

from hami.sim.trace import MILLI, TraceTask

TYPE_SELECTOR = "nvidia.com/use-gputype"
NAMESPACE = "sim"


def share_percent(task: TraceTask) -> int:
    """The task's per-device share in percent (cores and memory), rounded up; 100 for whole GPUs."""
    return 100 if task.gpu_milli >= MILLI else max(1, -(-task.gpu_milli // 10))


def pod_for(task: TraceTask, uid: str) -> dict[str, Any]:
    limits: dict[str, str] = {}
    if task.num_gpu:
        limits["nvidia.com/gpu"] = str(task.num_gpu)
        percent = share_percent(task)
        limits["nvidia.com/gpucores"] = str(percent)
        if percent < 100:
            limits["nvidia.com/gpumem-percentage"] = str(percent)
    annotations = {TYPE_SELECTOR: ",".join(task.gpu_spec)} if task.gpu_spec else {}
    container = {
        "name": "main",
        "resources": {"requests": {"cpu": f"{task.cpu_milli}m", "memory": f"{task.memory_mib}Mi"}, "limits": limits},
    }
    return {
        "metadata": {"name": task.name, "namespace": NAMESPACE, "uid": uid, "annotations": annotations},
        "spec": {"containers": [container], "schedulerName": "hami-scheduler"},
    }
