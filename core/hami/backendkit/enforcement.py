"""Helpers for ``hami_enforcement``: is a shared library loadable-looking on this host, and what a
simulated node reports.

A share limit is only as real as whatever enforces it (a preloaded library, a daemon, a driver
feature). The checks here are cheap and read only a file's header: the agent runs them at every
registration on every node.
"""

from __future__ import annotations

import platform
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from hami.plugin.model import Enforcement, NodeContext, PhysicalDevice

ELF_MAGIC = b"\x7fELF"
ISOLATION_MISSING = "isolation_missing"
"""The inventory device attribute that tells a simulated node its isolation mechanism is missing
(the value is the reason shown); simulated devices without it are enforced by definition."""

# ELF e_machine numbers (the System V ABI's registry) of the architectures Kubernetes nodes run.
MACHINES = {"x86_64": 62, "amd64": 62, "aarch64": 183, "arm64": 183, "ppc64le": 21, "s390x": 22, "riscv64": 243}
MACHINE_NAMES = {62: "x86-64", 183: "aarch64", 21: "ppc64", 22: "s390x", 243: "riscv", 3: "i386", 40: "arm"}


def host_machine(machine: str | None = None) -> int | None:
    """This host's ELF machine number (None when the architecture is not one we know)."""
    return MACHINES.get((machine or platform.machine()).lower())


def library_problem(path: Path, machine: int | None = None) -> str | None:
    """Why ``path`` cannot be a shared library the dynamic loader of this host would load (None: it
    looks loadable): missing, not a regular file, unreadable, not ELF, not 64-bit little-endian, not
    a shared object, or built for another architecture."""
    try:
        if not path.exists():
            return f"{path} is missing"
        if not path.is_file():
            return f"{path} is not a regular file"
        with path.open("rb") as f:
            header = f.read(20)
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    if header[:4] != ELF_MAGIC:
        return f"{path} is not an ELF file (it starts with {header[:4]!r})"
    if len(header) < 20:
        return f"{path} is a truncated ELF file ({len(header)} bytes of header)"
    if header[4] != 2 or header[5] != 1:
        return f"{path} is not a 64-bit little-endian ELF file (class {header[4]}, data {header[5]})"
    kind = int.from_bytes(header[16:18], "little")
    if kind != 3:  # ET_DYN
        return f"{path} is not a shared object (ELF type {kind})"
    found = int.from_bytes(header[18:20], "little")
    wanted = host_machine() if machine is None else machine
    if wanted is not None and found != wanted:
        return (
            f"{path} is built for {MACHINE_NAMES.get(found, f'machine {found}')}, "
            f"this node is {MACHINE_NAMES.get(wanted, f'machine {wanted}')}"
        )
    return None


def simulated_enforcement(devices: Sequence[PhysicalDevice], vendor: str, modes: Iterable[str], mechanism: str) -> list[Enforcement]:
    """What a simulated node reports for ``vendor``'s ``modes``: enforced (by ``mechanism``), except
    for the devices whose inventory attributes say ``isolation_missing: <why>``."""
    missing = {d.id: str(d.attributes[ISOLATION_MISSING]) for d in devices if d.vendor == vendor and d.attributes.get(ISOLATION_MISSING)}
    out = []
    for mode in modes:
        out.append(Enforcement(vendor, mode, ready=True, mechanism=f"{mechanism} (simulated)"))
        for device_id, why in sorted(missing.items()):
            out.append(Enforcement(vendor, mode, ready=False, mechanism=mechanism, reason=f"{why} (simulated)", device_ids=(device_id,)))
    return out


WHOLE_DEVICE = "whole device (one container per device, nothing shared)"
ADVISORY_HINT = "or set advisory_limits: true in this backend's config to offer shares unenforced"


def whole_device_enforcement(devices: Sequence[PhysicalDevice], vendors: Iterable[str], node: NodeContext) -> list[Enforcement]:
    """What a whole-device kind reports: ready, since a device that is never shared has no share
    limit to enforce (simulated nodes as :func:`simulated_enforcement` says)."""
    present = [v for v in vendors if any(d.vendor == v for d in devices)]
    if node.simulated:
        return [e for v in present for e in simulated_enforcement(devices, v, [""], WHOLE_DEVICE)]
    return [Enforcement(v, "", ready=True, mechanism=WHOLE_DEVICE) for v in present]


def vendor_stack_enforcement(
    devices: Sequence[PhysicalDevice], vendor: str, node: NodeContext, *, mechanism: str, tool: str, install: str
) -> list[Enforcement]:
    """What a kind whose share limits the vendor's own stack enforces reports: ready when the
    vendor's management ``tool`` (a name on PATH or a path) is on this node, else missing, saying
    what to ``install``. Nothing for a vendor without devices here."""
    if not any(d.vendor == vendor for d in devices):
        return []
    if node.simulated:
        return simulated_enforcement(devices, vendor, [""], mechanism)
    found = shutil.which(tool)
    if found:
        return [Enforcement(vendor, "", ready=True, mechanism=f"{mechanism} ({found})")]
    reason = f"{tool} is not on this node, so {mechanism} is not there: {install}, {ADVISORY_HINT}"
    return [Enforcement(vendor, "", ready=False, mechanism=mechanism, reason=reason)]


def unenforced(devices: Sequence[PhysicalDevice], vendor: str, node: NodeContext, *, why: str) -> list[Enforcement]:
    """What a kind reports whose share limits nothing on a real node enforces: not ready, ``why``
    (so its devices are offered whole unless the operator opts into advisory limits)."""
    if not any(d.vendor == vendor for d in devices):
        return []
    if node.simulated:
        return simulated_enforcement(devices, vendor, [""], "simulated limits")
    return [Enforcement(vendor, "", ready=False, mechanism="nothing", reason=f"{why}; {ADVISORY_HINT}")]
