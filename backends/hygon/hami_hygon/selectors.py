"""Pod annotations that pick devices: type (case-insensitive substring) and UUID (exact) lists.

Called from ``hami_device_fits`` for every candidate device, so parsing is cached per annotation
value and matching does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1024)
def split_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return ((pod.get("metadata") or {}).get("annotations")) or {}


def type_reason(annos: Mapping[str, str], device_type: str, use_key: str, nouse_key: str) -> str | None:
    kind = device_type.upper()
    wanted = split_list(annos.get(use_key, ""))
    if wanted and not any(w.upper() in kind for w in wanted):
        return "CardTypeMismatch"
    if any(w.upper() in kind for w in split_list(annos.get(nouse_key, ""))):
        return "CardTypeMismatch"
    return None


def uuid_reason(annos: Mapping[str, str], device_id: str, use_key: str, nouse_key: str) -> str | None:
    wanted = split_list(annos.get(use_key, ""))
    if wanted and device_id not in wanted:
        return "CardUUIDMismatch"
    if device_id in split_list(annos.get(nouse_key, "")):
        return "CardUUIDMismatch"
    return None
