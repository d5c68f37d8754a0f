"""Pod annotations that pick devices by type (case-insensitive substring) or id (exact), as HAMi's
``use-gputype`` / ``nouse-gputype`` / ``use-gpuuuid`` / ``nouse-gpuuuid`` do, for every vendor.

Backends call these from ``hami_device_fits`` for every candidate device, so parsing is cached per
annotation value and matching does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

TYPE_MISMATCH = "CardTypeMismatch"
UUID_MISMATCH = "CardUuidMismatch"


@lru_cache(maxsize=1024)
def split_list(value: str) -> tuple[str, ...]:
    """``"A100, V100,"`` → ``("A100", "V100")``."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def pod_annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return ((pod.get("metadata") or {}).get("annotations")) or {}


def type_reason(annotations: Mapping[str, str], device_type: str, use_key: str, nouse_key: str) -> str | None:
    """:data:`TYPE_MISMATCH` when the type is not among ``use_key``'s or is among ``nouse_key``'s."""
    kind = device_type.upper()
    wanted = split_list(annotations.get(use_key, ""))
    if wanted and not any(w.upper() in kind for w in wanted):
        return TYPE_MISMATCH
    if any(w.upper() in kind for w in split_list(annotations.get(nouse_key, ""))):
        return TYPE_MISMATCH
    return None


def uuid_reason(annotations: Mapping[str, str], device_id: str, use_key: str, nouse_key: str) -> str | None:
    """:data:`UUID_MISMATCH` when the id is not among ``use_key``'s or is among ``nouse_key``'s."""
    wanted = split_list(annotations.get(use_key, ""))
    if wanted and device_id not in wanted:
        return UUID_MISMATCH
    if device_id in split_list(annotations.get(nouse_key, "")):
        return UUID_MISMATCH
    return None


def pod_uuid_reason(pod: Mapping[str, Any], device_id: str, *keys: tuple[str, str]) -> str | None:
    """:func:`uuid_reason` over the pod's annotations for each ``(use_key, nouse_key)`` pair (a vendor
    may honour more than one spelling): the first mismatch, or None."""
    annotations = pod_annotations(pod)
    if not annotations:
        return None
    return next((r for use, nouse in keys if (r := uuid_reason(annotations, device_id, use, nouse))), None)
