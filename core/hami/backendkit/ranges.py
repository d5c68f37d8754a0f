"""Disjoint index ranges on a device (compute units, cores) for each container, kept in the node's state dir.

A share of a device is only isolated if no two containers get the same units: the ledger hands each
container (``owner``) the first free run of ``size`` units on a device, gives the same run back when
asked again (Allocate retried, agent restarted) and frees it on release. Backends that pin a share to
numbered units (a compute-unit mask, a list of cores) keep one ledger file per node.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hami.errors import BackendRefused


class RangeLedger:
    """One JSON file ``{device: {owner: [start, size]}}``, rewritten atomically on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, dict[str, list[int]]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise BackendRefused(f"{self.path} is not JSON ({exc}); remove it to start afresh") from None
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, dict[str, list[int]]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, self.path)

    def claim(self, device: str, owner: str, size: int, total: int) -> tuple[int, int]:
        """``(start, size)`` of the owner's run on ``device`` (``total`` units), claiming the first free one."""
        data = self._load()
        runs = data.setdefault(device, {})
        if owner in runs:
            return runs[owner][0], runs[owner][1]
        taken = sorted((start, start + length) for start, length in runs.values())
        start = 0
        for begin, end in taken:
            if begin - start >= size:
                break
            start = max(start, end)
        if start + size > total:
            raise BackendRefused(f"no {size} contiguous free units on {device} ({total} in all, taken: {taken})")
        runs[owner] = [start, size]
        self._save(data)
        return start, size

    def release(self, owner: str) -> None:
        """Free every run the owner holds (on any device); nothing to do when it holds none."""
        data = self._load()
        if any(owner in runs for runs in data.values()):
            self._save({device: {o: r for o, r in runs.items() if o != owner} for device, runs in data.items()})


def owner_key(pod: Mapping[str, Any], container: Mapping[str, Any]) -> str:
    """The ledger owner of one container: ``<pod uid>/<container>`` (``<namespace>/<name>/<container>`` without a uid)."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('uid') or meta.get('namespace', '') + '/' + meta.get('name', '')}/{container.get('name', '')}"
