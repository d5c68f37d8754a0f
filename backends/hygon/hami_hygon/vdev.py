"""Virtual DCU config files: the only state of the vDCU allocator.

Layout under the configurable root (default ``/etc/vdev``, where DTK's driver and dcu-exporter look):

- ``vdev<N>.conf``: one per vDCU on the node (``device_id`` = the physical DCU index);
- ``containers/<pod uid>_<container>/vdev0.conf``: the same vDCU as the container sees it
  (``device_id: 0``), mounted at ``/etc/vdev/docker/``.

Everything the allocator needs — which CUs, pipes and vdev ids are taken — is read back from the
files, so an agent restart loses nothing. One ``flock`` on ``<root>/.lock`` serialises concurrent
Allocate calls on the node.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import attrs

from hami.sdk import BackendError
from hami_hygon import cumask

log = logging.getLogger(__name__)

CONTAINER_DIR = "containers"
CONTAINER_FILE = "vdev0.conf"
_NAME = re.compile(r"^vdev(\d+)\.conf$")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@attrs.frozen
class VdevConf:
    """One vdev config file (the format of HAMi's dcu-vgpu-device-plugin)."""

    pci_bus_id: str
    cu_mask: int
    cu_count: int
    memory: int
    """MiB."""
    device_id: int
    vdev_id: int
    pipe_id: int
    enable: int = 1

    def render(self) -> str:
        low, high = cumask.to_words(self.cu_mask)
        return (
            f"PciBusId: {self.pci_bus_id}\ncu_mask: {low}\ncu_mask: {high}\ncu_count: {self.cu_count}\n"
            f"mem: {self.memory} MiB\ndevice_id: {self.device_id}\nvdev_id: {self.vdev_id}\n"
            f"pipe_id: {self.pipe_id}\nenable: {self.enable}\n"
        )

    @classmethod
    def parse(cls, text: str, where: str) -> VdevConf:
        fields: dict[str, list[str]] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), []).append(value.strip())
        try:
            return cls(
                pci_bus_id=fields["PciBusId"][0],
                cu_mask=cumask.from_words(fields["cu_mask"]),
                cu_count=int(fields["cu_count"][0]),
                memory=int(fields["mem"][0].split()[0]),
                device_id=int(fields["device_id"][0]),
                vdev_id=int(fields["vdev_id"][0]),
                pipe_id=int(fields["pipe_id"][0]),
                enable=int(fields.get("enable", ["1"])[0]),
            )
        except (KeyError, IndexError, ValueError) as exc:
            raise BackendError(f"vdev config {where} is malformed ({type(exc).__name__}: {exc})") from None


@attrs.frozen
class PhysicalDcu:
    """What a vDCU needs to know about its DCU."""

    index: int
    pci_bus_id: str
    compute_units: int
    memory: int


def container_key(pod_uid: str, container: str) -> str:
    return _SAFE.sub("-", f"{pod_uid}_{container}")


class VdevStore:
    """Create and remove vdev configs under ``root`` without ever overlapping CU masks."""

    def __init__(self, root: str | os.PathLike[str], *, max_vdevs: int = 200, max_pipes: int = 20) -> None:
        self.root = Path(root)
        self.max_vdevs = max_vdevs
        self.max_pipes = max_pipes

    def container_dir(self, key: str) -> Path:
        return self.root / CONTAINER_DIR / key

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(self.root / ".lock", "a+")  # noqa: SIM115 - closed by the ``with`` below, after the error is worded
        except OSError as exc:
            raise BackendError(f"vdev root {str(self.root)!r} is not writable: {exc.strerror or exc}") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def existing(self) -> dict[int, VdevConf]:
        """Every node-wide vdev config, by vdev id; unreadable ones are logged and skipped."""
        found: dict[int, VdevConf] = {}
        if not self.root.is_dir():
            return found
        for path in self.root.iterdir():
            if not _NAME.match(path.name):
                continue
            try:
                conf = VdevConf.parse(path.read_text(), str(path))
            except (OSError, BackendError) as exc:
                log.warning("event=vdev_unreadable path=%s error=%r", path, str(exc))
                continue
            found[conf.vdev_id] = conf
        return found

    def owned(self, key: str) -> VdevConf | None:
        """Container ``key``'s vDCU as the node sees it (its container copy says ``device_id: 0``)."""
        path = self.container_dir(key) / CONTAINER_FILE
        if not path.is_file():
            return None
        mine = VdevConf.parse(path.read_text(), str(path))
        node_file = self.root / f"vdev{mine.vdev_id}.conf"
        if node_file.is_file():
            return VdevConf.parse(node_file.read_text(), str(node_file))
        return mine

    def releasable(self, key: str) -> VdevConf | None:
        """:meth:`owned`, but an unreadable config is logged and treated as absent: a release must
        still clean up what it can."""
        try:
            return self.owned(key)
        except BackendError as exc:
            log.warning("event=vdev_unreadable key=%s error=%r", key, str(exc))
            return None

    def create(self, key: str, device: PhysicalDcu, cores_percent: int, memory: int) -> VdevConf:
        """The vDCU of container ``key`` on ``device``; idempotent (kubelet retries Allocate)."""
        with self._locked():
            mine = self.owned(key)
            if mine is not None:
                return mine
            taken = self.existing()
            on_device = [c for c in taken.values() if c.pci_bus_id == device.pci_bus_id]
            count = cumask.units_for(cores_percent, device.compute_units)
            try:
                mask = cumask.allocate(cumask.used_mask(c.cu_mask for c in on_device), device.compute_units, count)
            except BackendError as exc:
                raise BackendError(f"DCU {device.index} ({device.pci_bus_id}): {exc}") from None
            vdev_id = _lowest_free({c.vdev_id for c in taken.values()}, self.max_vdevs, f"vdev ids on this node (max {self.max_vdevs})")
            pipe_id = _lowest_free({c.pipe_id for c in on_device}, self.max_pipes, f"pipes on DCU {device.index} (max {self.max_pipes})")
            conf = VdevConf(device.pci_bus_id, mask, count, memory, device.index, vdev_id, pipe_id)
            node_file = self.root / f"vdev{vdev_id}.conf"
            folder = self.container_dir(key)
            try:
                _write(folder / CONTAINER_FILE, attrs.evolve(conf, device_id=0).render())
                _write(node_file, conf.render())
            except OSError as exc:
                shutil.rmtree(folder, ignore_errors=True)
                node_file.unlink(missing_ok=True)
                raise BackendError(f"cannot write vdev config for {key} under {str(self.root)!r}: {exc.strerror or exc}") from None
            log.info("event=vdev_created key=%s vdev_id=%d device=%d cu_count=%d mem_mib=%d", key, vdev_id, device.index, count, memory)
            return conf

    def remove(self, key: str) -> VdevConf | None:
        """Remove container ``key``'s vDCU; idempotent."""
        with self._locked():
            folder = self.container_dir(key)
            mine = self.releasable(key)
            if mine is not None:
                (self.root / f"vdev{mine.vdev_id}.conf").unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=True)
            if mine is not None:
                log.info("event=vdev_removed key=%s vdev_id=%d", key, mine.vdev_id)
            return mine


def _lowest_free(taken: set[int], limit: int, what: str) -> int:
    for candidate in range(limit):
        if candidate not in taken:
            return candidate
    raise BackendError(f"no free slot left among {what}")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
