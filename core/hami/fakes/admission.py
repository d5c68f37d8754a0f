"""What kube-apiserver sends a mutating webhook for a Pod CREATE: the AdmissionReview the sandbox,
the chaos driver and the benches post in its place."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any


def pod_create_review(pod: Mapping[str, Any], namespace: str, user: str) -> dict[str, Any]:
    """An ``admission.k8s.io/v1`` review of creating ``pod`` in ``namespace`` as ``user``; a fresh uid each."""
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace,
        "operation": "CREATE",
        "object": pod,
        "userInfo": {"username": user},
    }
    name = (pod.get("metadata") or {}).get("name")
    if name:  # kube-apiserver leaves it out when the pod only has a generateName
        request["name"] = name
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
