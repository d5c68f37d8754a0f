"""Reading ``neuron-ls``'s device table (the form AWS publishes; its ``--json-output`` is announced
to end with Neuron 2.34). Columns are found by their two-line header, so tables with and without
``LOGICAL NC``, ``PID`` or ``CPU AFFINITY`` read the same; process continuation rows are skipped and
an ``instance-type:`` line (newer releases) is kept.
"""

from __future__ import annotations

import re

import attrs

from hami.sdk import BackendError

_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*(GB|MB|GiB|MiB)$")


@attrs.frozen
class Device:
    index: int
    cores: int
    memory_mib: int
    connected: tuple[int, ...]
    bdf: str


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse(text: str) -> tuple[list[Device], str]:
    """The devices and the instance type ('' when not printed). A table without the ``NEURON DEVICE``
    column (Neuron 1.x's ``PCI BDF | LOGICAL ID | ...``) is an error naming its header, not "no devices"."""
    instance = ""
    header: list[list[str]] = []
    devices: list[Device] = []
    first_row: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("instance-type:"):
            instance = stripped.split(":", 1)[1].strip()
        if not stripped.startswith("|"):
            continue
        cells = _cells(stripped)
        first_row = first_row or cells
        if not cells[0].isdecimal():
            if not devices and cells[0] in ("NEURON", "DEVICE"):
                header.append(cells)
            continue
        names = [" ".join(parts).strip() for parts in zip(*header, strict=False)] if header else []
        row = dict(zip(names, cells, strict=False))
        memory = _MEMORY.match(row.get("NEURON MEMORY", ""))
        factor = {"GB": 1024, "GiB": 1024, "MB": 1, "MiB": 1}
        cores = row.get("LOGICAL NC") or row.get("NEURON CORES", "")
        devices.append(
            Device(
                index=int(cells[0]),
                cores=int(cores) if cores.isdecimal() else 0,
                memory_mib=int(float(memory.group(1)) * factor[memory.group(2)]) if memory else 0,
                connected=tuple(int(p) for p in re.findall(r"\d+", row.get("CONNECTED DEVICES", ""))),
                bdf=row.get("PCI BDF", ""),
            )
        )
    if first_row and not header:
        raise BackendError(
            f"neuron-ls printed a table without a NEURON DEVICE column (header {' | '.join(first_row)}): a layout this backend does not read"
        )
    return devices, instance
