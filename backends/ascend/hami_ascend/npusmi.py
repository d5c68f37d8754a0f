"""``npu-smi``: running it (with a timeout) and reading its text output.

npu-smi has no machine-readable mode, so the parsers read the box-drawn ``npu-smi info`` table and
the ``Key : Value`` blocks of ``info -t board`` and ``set -t create-vnpu/destroy-vnpu``. A line they
cannot read is logged with its number and text and skipped: one odd line must not hide a node's
other chips.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from hami.sdk import BackendError, run_tool

log = logging.getLogger(__name__)

HEALTHY = frozenset({"OK", "Warning"})
"""npu-smi health words: OK, Warning, Alarm, Critical, UNKNOWN; a Warning chip still serves work."""
_PAIR = re.compile(r"(\d+)\s*/\s*(\d+)")
_BUS_ID = re.compile(r"^([0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]|NA|-)$")


@attrs.frozen
class ChipRow:
    """One chip of ``npu-smi info``: its name row and the chip row under it."""

    npu_id: int
    """The card (``-i``)."""
    chip_id: int
    """The chip on the card (``-c``)."""
    phy_id: int | None
    """``Phy-ID`` (A3) or ``Device`` (310/310P) column; None where npu-smi prints neither (910A/910B)."""
    name: str
    health: str
    bus_id: str
    memory_total: int
    """MiB: HBM where the table has it, else the Memory-Usage total (310P)."""
    line: int


@attrs.frozen
class UnreadChip:
    """A chip whose name row npu-smi printed but whose chip row could not be read (memory ``NA``, a
    missing row): discovery reports it unadvertised with ``why`` instead of dropping it."""

    npu_id: int
    name: str
    health: str
    line: int
    """The name row's line."""
    why: str
    problem_line: int = 0
    """The line reported in ``InfoTable.problems`` for it."""


@attrs.frozen
class MapRow:
    """One row of ``npu-smi info -m``: card, chip on the card, logic id (None for the card's ``Mcu``,
    printed ``-``) and the chip name as -m prints it (``Ascend 310P3``, where ``info`` says ``310P3``)."""

    npu_id: int
    chip_id: int
    logic_id: int | None
    name: str


@attrs.frozen
class InfoTable:
    chips: tuple[ChipRow, ...]
    problems: tuple[str, ...] = ()
    """``line N: text`` of every line that could not be read."""
    unread: tuple[UnreadChip, ...] = ()
    """Chips named by a name row whose chip row was unreadable or missing."""


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_info(text: str) -> InfoTable:
    """The chips of ``npu-smi info`` (910A/910B, A3 with Phy-ID, 310/310P with Device columns)."""
    chips: list[ChipRow] = []
    problems: list[str] = []
    unread: list[UnreadChip] = []
    pending: tuple[int, str, str, int] | None = None  # npu id, name, health, line of the name row

    def bad(number: int, line: str, why: str) -> None:
        problems.append(f"line {number}: {line.strip()!r} ({why})")

    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("+") or not stripped.startswith("|"):
            if stripped and not stripped.startswith("+"):
                bad(number, line, "not a table row")
            continue
        if "Process id" in stripped or "No running processes" in stripped:
            break  # the process table follows; its rows look like chip rows
        if stripped.startswith("| npu-smi"):
            continue  # version banner
        cells = _cells(stripped)
        if len(cells) < 3:
            bad(number, line, "too few columns")
            continue
        if (cells[0].startswith("NPU") and "Name" in cells[0]) or (cells[0].startswith("Chip") and "Bus-Id" in cells[1]):
            continue  # the two header rows
        first = cells[0].split()
        if pending is None:
            if len(first) < 2 or not first[0].isdecimal():
                bad(number, line, "expected '<npu id> <name>'")
                continue
            pending = (int(first[0]), " ".join(first[1:]), cells[1], number)
            continue
        npu_id, name, health, name_line = pending
        pending = None
        if not first or not all(f.isdecimal() for f in first) or len(first) > 2 or not _BUS_ID.match(cells[1]):
            bad(number, line, f"expected the chip row of NPU {npu_id} '{name}'")
            unread.append(
                UnreadChip(npu_id, name, health, name_line, f"npu-smi line {number} is not its chip row: {stripped[:80]!r}", number)
            )
            if len(first) >= 2 and first[0].isdecimal() and not first[1].isdecimal():
                pending = (int(first[0]), " ".join(first[1:]), cells[1], number)  # the next chip's name row
            continue
        pairs = _PAIR.findall(cells[2])
        if not pairs:
            bad(number, line, "no memory 'used / total' figures")
            unread.append(
                UnreadChip(
                    npu_id,
                    name,
                    health,
                    name_line,
                    f"memory unknown: npu-smi line {number} has no 'used / total' figures ({cells[2][:60]!r})",
                    number,
                )
            )
            continue
        total = int(pairs[-1][1]) or int(pairs[0][1])
        chips.append(ChipRow(npu_id, int(first[0]), int(first[1]) if len(first) == 2 else None, name, health, cells[1], total, name_line))
    if pending is not None:
        bad(pending[3], f"NPU {pending[0]} {pending[1]}", "name row without a chip row")
        unread.append(
            UnreadChip(
                pending[0], pending[1], pending[2], pending[3], f"npu-smi line {pending[3]} names it but no chip row follows", pending[3]
            )
        )
    return InfoTable(tuple(chips), tuple(problems), tuple(unread))


def parse_chip_map(text: str) -> list[MapRow]:
    """``npu-smi info -m``: whitespace columns ``NPU ID  Chip ID  Chip Logic ID  Chip Name``; the
    header and lines that are not ``<int> <int> <int|-> <name…>`` are skipped (the name may hold spaces)."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or not (parts[0].isdecimal() and parts[1].isdecimal()) or not (parts[2].isdecimal() or parts[2] == "-"):
            continue
        rows.append(MapRow(int(parts[0]), int(parts[1]), int(parts[2]) if parts[2].isdecimal() else None, " ".join(parts[3:])))
    return rows


def parse_fields(text: str) -> dict[str, str]:
    """``Key : Value`` lines (``info -t board``, create/destroy results); the first value of a key wins."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        for key, value in re.findall(
            r"([A-Za-z][A-Za-z0-9 ()%/_-]*?)\s+:\s+(.*?)(?=\s{2,}[A-Za-z][A-Za-z0-9 ()%/_-]*?\s+:\s|$)", line.strip()
        ):
            fields.setdefault(key.strip(), value.strip())
    return fields


def succeeded(text: str) -> bool:
    """Whether a ``npu-smi set`` printed ``Status : OK``."""
    return parse_fields(text).get("Status", "").upper() == "OK"


class NpuSmi:
    """Runs npu-smi with a timeout; ``BackendError`` names the command and what it printed."""

    def __init__(self, executable: str = "npu-smi", timeout: float = 10.0) -> None:
        self.executable = executable
        self.timeout = timeout

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> NpuSmi:
        return cls(str(config.get("npu_smi") or "npu-smi"), float(config.get("npu_smi_timeout", 10)))

    def available(self) -> bool:
        return shutil.which(self.executable) is not None

    def run(self, args: Sequence[str]) -> str:
        """npu-smi prints its errors (a failed create-vnpu, a driver fault) on stdout, so errors show it."""
        return run_tool([self.executable, *args], self.timeout, missing_hint="is the Ascend driver installed?", output_in_errors=True)

    def info(self) -> InfoTable:
        return parse_info(self.run(["info"]))

    def board(self, card: int) -> dict[str, str]:
        return parse_fields(self.run(["info", "-t", "board", "-i", str(card)]))

    def create_vnpu(self, card: int, chip: int, template: str, vnpu_id: int) -> None:
        self._set(["set", "-t", "create-vnpu", "-i", str(card), "-c", str(chip), "-f", template, "-v", str(vnpu_id)])

    def destroy_vnpu(self, card: int, chip: int, vnpu_id: int) -> None:
        self._set(["set", "-t", "destroy-vnpu", "-i", str(card), "-c", str(chip), "-v", str(vnpu_id)])

    def _set(self, args: list[str]) -> None:
        output = self.run(args)
        if not succeeded(output):
            raise BackendError(f"{self.executable} {' '.join(args)} did not report 'Status : OK': {output.strip()[:300]!r}")
