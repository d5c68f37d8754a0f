"""Reading ``hy-smi``: the device table, ``--showbus``, ``virtual -show-device-info``, the memory
queries (``--showmeminfo vram``, ``--showmemavailable``) and the ``Card Series`` lines.

hy-smi prints fixed-width text tables meant for people; newer drivers call the device ``HCU``
instead of ``DCU``. The parsers are pure functions over that text so they are tested against
recorded samples (tests/fixtures); :func:`run` is the only place that starts a process. A line the
parsers do not understand is logged with its content and skipped, never fatal: a driver update
must cost one field, not the node's whole registration.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import attrs

from hami.sdk import run_tool

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
_RULE = re.compile(r"^=+")
_TABLE_HEAD = re.compile(r"^\s*(DCU|HCU)\s+Temp\b")
_TABLE_ROW = re.compile(r"^\s*(\d+)\s+\S")
_INDEXED = re.compile(r"^\s*(?:DCU|HCU)\[(\d+)\]\s*:\s*(.*?)\s*$")
_BUS = re.compile(r"PCI Bus:\s*(\S+)")
_SERIAL = re.compile(r"SN:\s*(\S+)")
_VDEV_HEAD = re.compile(r"^\s*Device\s+(\d+)\s*:\s*$")
_VDEV_FIELD = re.compile(r"^\s+([A-Za-z][A-Za-z ]*?)\s*:\s*(.*?)\s*$")
_BYTES = re.compile(r"^(\d+)\s*bytes$")
_MEMORY_KEY = re.compile(r"^(.*?)\s*\((MiB|B)\)$", re.IGNORECASE)
_SEPARATORS = re.compile(r"\s*[,:;]\s*")
MEMINFO_TOTAL = "vram Total Memory"
"""``hy-smi --showmeminfo vram``: ``HCU[0] : vram Total Memory (MiB): 65520`` (total capacity)."""
MEM_AVAILABLE = "Available memory size"
"""``hy-smi --showmemavailable``: ``HCU[0] : Available memory size (MiB): 65438``."""


@attrs.frozen
class TableRow:
    """One device line of the default table: its index and the columns by header name."""

    index: int
    columns: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        return dict(self.columns).get(name)


@attrs.frozen
class BusInfo:
    index: int
    pci_bus_id: str
    serial: str | None
    """None when hy-smi prints ``N/A``."""


@attrs.frozen
class VirtualInfo:
    """A block of ``-show-device-info``: a (virtual or physical) device's compute units and memory."""

    index: int
    actual_device: int | None
    compute_units: int | None
    memory_bytes: int | None


def _skippable(line: str) -> bool:
    stripped = line.strip()
    return not stripped or bool(_RULE.match(stripped)) or "System Management Interface" in stripped or "End of SMI Log" in stripped


def parse_table(text: str) -> list[TableRow]:
    """The device rows of plain ``hy-smi`` (``DCU Temp AvgPwr … Mode`` or the ``HCU …`` variant)."""
    header: list[str] | None = None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if _skippable(line):
            continue
        if _TABLE_HEAD.match(line):
            header = line.split()
            continue
        match = _TABLE_ROW.match(line)
        if header is None or not match:
            log.warning("event=hysmi_unparsed_line tool=hy-smi line_number=%d line=%r", number, line)
            continue
        cells = line.split()
        rows.append(TableRow(int(match.group(1)), tuple(zip(header, cells, strict=False))))
    return rows


def parse_showbus(text: str) -> list[BusInfo]:
    """``hy-smi --showbus``: ``HCU[0] : PCI Bus: 0000:05:00.0 --> SN: 2500238601000586``."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if _skippable(line):
            continue
        match = _INDEXED.match(line)
        bus = _BUS.search(line)
        if not match or not bus:
            log.warning("event=hysmi_unparsed_line tool=hy-smi args=--showbus line_number=%d line=%r", number, line)
            continue
        serial = _SERIAL.search(line)
        value = serial.group(1) if serial else None
        found.append(BusInfo(int(match.group(1)), bus.group(1), None if value in (None, "N/A") else value))
    return found


def parse_indexed_values(text: str, key: str) -> dict[int, str]:
    """Lines ``DCU[i] : <key>: <value>`` (``--showproductname`` and similar), by device index."""
    found: dict[int, str] = {}
    prefix = key.lower() + ":"
    for line in text.splitlines():
        if _skippable(line):
            continue
        match = _INDEXED.match(line)
        if match and match.group(2).lower().startswith(prefix):
            found[int(match.group(1))] = match.group(2)[len(prefix) :].strip()
    return found


def parse_memory_mib(text: str, key: str) -> dict[int, int]:
    """Lines ``HCU[i] : <key> (MiB): <n>`` (or ``(B)``, converted) as MiB by device index; a value
    that is not a whole number (``N/A``) is left out with a warning naming it."""
    found: dict[int, int] = {}
    wanted = key.lower()
    for line in text.splitlines():
        match = _INDEXED.match(line)
        if not match:
            continue
        label, sep, value = match.group(2).rpartition(":")
        unit = _MEMORY_KEY.match(label.strip())
        if not sep or not unit or unit.group(1).lower() != wanted:
            continue
        value = value.strip()
        if not value.isdecimal():
            log.warning("event=hysmi_unparsed_value tool=hy-smi key=%r index=%s value=%r", key, match.group(1), value)
            continue
        found[int(match.group(1))] = int(value) if unit.group(2).lower() == "mib" else int(value) >> 20
    return found


def model_name(series: str) -> str:
    """A ``Card Series`` value fit for a device type: separators of HAMi's CSV node annotation
    (``,`` ``:``) and ``;`` become spaces (``BW200, UBB BW1000`` -> ``BW200 UBB BW1000``)."""
    return _SEPARATORS.sub(" ", series).strip()


def parse_virtual_info(text: str) -> list[VirtualInfo]:
    """``hy-smi virtual -show-device-info`` / ``hy-virtual -show-device-info`` blocks."""
    blocks: list[dict[str, str]] = []
    indexes: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        if _skippable(line):
            continue
        head = _VDEV_HEAD.match(line)
        if head:
            indexes.append(int(head.group(1)))
            blocks.append({})
            continue
        field = _VDEV_FIELD.match(line)
        if field and blocks:
            blocks[-1][field.group(1).lower()] = field.group(2)
            continue
        log.warning("event=hysmi_unparsed_line tool=hy-virtual line_number=%d line=%r", number, line)
    result = []
    for index, fields in zip(indexes, blocks, strict=False):
        memory = _BYTES.match(fields.get("global memory", ""))
        result.append(
            VirtualInfo(
                index=index,
                actual_device=_int(fields.get("actual device")),
                compute_units=_int(fields.get("compute units")),
                memory_bytes=int(memory.group(1)) if memory else None,
            )
        )
    return result


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdecimal() else None


def run(argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run the tool and return its stdout; BackendError names the command and why."""
    return run_tool(argv, timeout, missing_hint="is the Hygon driver/DTK installed?")
