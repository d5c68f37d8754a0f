"""vNPU lifecycle for the hard split: create on prepare, destroy on release, roll back on failure.

A ledger maps each container (pod UID + container name) to the vNPUs made for it, so that kubelet's
Allocate retries do not create twice, release destroys exactly what prepare made, and container
edits can name ``/dev/vdavinci<id>``. It lives in memory and in ``vnpus.json`` in the node's state
directory (``NodeContext.state_dir``), so that an agent restart still releases what it created.

vNPU ids are chosen, not left to npu-smi, so the ledger knows them before the call returns:
``phy_id*16+100`` upward within the chip's span (MindCluster guide: 16 ids per training chip, 8 per
inference chip), skipping ids the ledger already holds.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from hami.sdk import BackendError, Grant, NodeContext
from hami_ascend.chips import Chip
from hami_ascend.npusmi import NpuSmi

log = logging.getLogger(__name__)


@attrs.frozen
class VNpu:
    device: str
    card: int
    chip: int
    vnpu_id: int
    template: str
    simulated: bool = False


def container_key(pod: Mapping[str, Any], container: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    uid = meta.get("uid") or f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
    return f"{uid}/{container.get('name')}"


class Ledger:
    """vNPUs by container key; thread-safe; persisted when given a directory."""

    def __init__(self, state_dir: str | None = None) -> None:
        self.lock = threading.RLock()
        self.path = Path(state_dir) / "vnpus.json" if state_dir else None
        self.entries: dict[str, tuple[VNpu, ...]] = {}
        if self.path is not None and self.path.exists():
            try:
                raw = json.loads(self.path.read_text())
                self.entries = {k: tuple(VNpu(**v) for v in vs) for k, vs in raw.items()}
            except (OSError, ValueError, TypeError) as exc:
                raise BackendError(f"vNPU ledger {str(self.path)!r} cannot be read: {exc}") from None

    def get(self, key: str) -> tuple[VNpu, ...]:
        with self.lock:
            return self.entries.get(key, ())

    def used_ids(self) -> set[int]:
        with self.lock:
            return {v.vnpu_id for vs in self.entries.values() for v in vs}

    def put(self, key: str, vnpus: Sequence[VNpu]) -> None:
        with self.lock:
            if vnpus:
                self.entries[key] = tuple(vnpus)
            else:
                self.entries.pop(key, None)
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({k: [attrs.asdict(v) for v in vs] for k, vs in self.entries.items()}, indent=1))
            os.replace(tmp, self.path)
        except OSError as exc:
            raise BackendError(f"vNPU ledger {str(self.path)!r} cannot be written: {exc.strerror or exc}") from None


_LEDGERS: dict[str, Ledger] = {}
_LEDGERS_LOCK = threading.Lock()


def ledger_for(node: NodeContext) -> Ledger:
    """The node's ledger: one per state directory (a sandbox runs several nodes in one process)."""
    with _LEDGERS_LOCK:
        if str(node.state_dir) not in _LEDGERS:
            _LEDGERS[str(node.state_dir)] = Ledger(str(node.state_dir))
        return _LEDGERS[str(node.state_dir)]


def _free_id(chip: Chip, phy_id: int, taken: set[int], device: str) -> int:
    for candidate in chip.vnpu_ids(phy_id):
        if candidate not in taken:
            return candidate
    raise BackendError(f"device {device!r}: all vNPU ids {chip.vnpu_ids(phy_id).start}-{chip.vnpu_ids(phy_id).stop - 1} are in use")


def create(
    key: str, plan: Sequence[tuple[Grant, Chip, Mapping[str, Any], str]], ledger: Ledger, smi: NpuSmi, *, simulated: bool = False
) -> tuple[VNpu, ...]:
    """Create one vNPU per planned (grant, chip, facts, template); all or nothing; idempotent per key.
    On a simulated node only the ledger records them (npu-smi is never run for them)."""
    with ledger.lock:
        existing = ledger.get(key)
        if existing:
            if sorted(v.device for v in existing) == sorted(g.id for g, *_ in plan):
                log.info("event=vnpu_reused container=%s vnpus=%s", key, ",".join(str(v.vnpu_id) for v in existing))
                return existing
            raise BackendError(
                f"container {key} already holds vNPUs on {sorted(v.device for v in existing)}, not on {sorted(g.id for g, *_ in plan)}; release it first"
            )
        taken = ledger.used_ids()
        made: list[VNpu] = []
        for grant, chip, found, template in plan:
            phy = int(found["phy_id"])
            vnpu = VNpu(grant.id, int(found["card"]), int(found["chip"]), _free_id(chip, phy, taken, grant.id), template, simulated)
            try:
                if not vnpu.simulated:
                    smi.create_vnpu(vnpu.card, vnpu.chip, template, vnpu.vnpu_id)
            except BackendError as exc:
                undone = _destroy_all(made, smi)
                raise BackendError(
                    f"creating vNPU {vnpu.vnpu_id} ({template}) on {grant.id} for container {key} failed: {exc}{undone}"
                ) from None
            taken.add(vnpu.vnpu_id)
            made.append(vnpu)
            log.info(
                "event=vnpu_created container=%s device=%s card=%d chip=%d vnpu=%d template=%s simulated=%s",
                key,
                grant.id,
                vnpu.card,
                vnpu.chip,
                vnpu.vnpu_id,
                template,
                vnpu.simulated,
            )
        ledger.put(key, made)
        return tuple(made)


def _destroy_all(vnpus: Sequence[VNpu], smi: NpuSmi) -> str:
    """Destroy ``vnpus`` newest first; a note on what could not be undone (empty when all were)."""
    failed = []
    for vnpu in reversed(vnpus):
        try:
            if not vnpu.simulated:
                smi.destroy_vnpu(vnpu.card, vnpu.chip, vnpu.vnpu_id)
            log.info("event=vnpu_rolled_back device=%s vnpu=%d", vnpu.device, vnpu.vnpu_id)
        except BackendError as exc:
            failed.append(f"{vnpu.vnpu_id} ({exc})")
    return f"; rollback could not destroy vNPU(s) {', '.join(failed)}" if failed else "; rolled back the vNPUs created before it"


def destroy(key: str, ledger: Ledger, smi: NpuSmi) -> None:
    """Destroy the container's vNPUs; what cannot be destroyed stays in the ledger for the next try."""
    with ledger.lock:
        left = []
        errors = []
        for vnpu in ledger.get(key):
            try:
                if not vnpu.simulated:
                    smi.destroy_vnpu(vnpu.card, vnpu.chip, vnpu.vnpu_id)
                log.info("event=vnpu_destroyed container=%s device=%s vnpu=%d", key, vnpu.device, vnpu.vnpu_id)
            except BackendError as exc:
                left.append(vnpu)
                errors.append(str(exc))
        ledger.put(key, left)
        if errors:
            raise BackendError(f"releasing container {key}: {'; '.join(errors)}")
