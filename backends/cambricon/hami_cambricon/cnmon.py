"""Reading ``cnmon``'s device table (two text lines per card, ``|``-separated cells).

Two layouts are in the wild: newer drivers print ``Bus-Id`` in the second column, older ones
``Inited  Driver``. The parser reads the first line of each card (index, VF, model, firmware, bus id)
and the second (memory usage), stops at the ``Processes:`` table, and logs any line it cannot read
with its content instead of failing. A card whose memory cell holds no figures (``N/A``, redacted)
or whose second line is missing is still returned, memory unknown: discovery lists it unadvertised. :func:`run` is the only place that starts a process.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import attrs

from hami.sdk import run_tool

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
_CARD = re.compile(r"^(\d+)\s+(\S+)\s+(\S+)(?:\s+(\S+))?$")
_BUS = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$")
_MEMORY = re.compile(r"^(\d+)\s*MiB\s*/\s*(\d+)\s*MiB$")


@attrs.frozen
class Card:
    index: int
    vf: str
    model: str
    firmware: str
    pci_bus_id: str | None
    memory_used: int | None = None
    memory_total: int | None = None
    version: str | None = None
    """The ``CNMON vX`` banner, for logs."""
    memory_text: str = ""
    """The Memory-Usage cell as printed when it held no ``used MiB/ total MiB`` figures (``N/A``, a
    redacted ``xxxxx MiB``), or ``""``: the reason a card without a memory total gives."""


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def parse_table(text: str) -> list[Card]:
    cards: list[Card] = []
    version = None
    pending: Card | None = None
    in_table = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        stripped = line.strip()
        if stripped.startswith("| CNMON"):
            version = stripped.strip("|").split()[1] if len(stripped.strip("|").split()) > 1 else None
            continue
        if "Processes:" in stripped:
            break
        if stripped.startswith("|="):
            in_table = True
            continue
        if not in_table or not stripped.startswith("|"):
            continue
        cells = _cells(line)
        first = _CARD.match(cells[0]) if cells else None
        if first and len(cells) >= 2:
            if pending is not None:  # its memory line never came: keep the card, memory unknown
                log.warning("event=cnmon_card_without_memory card=%d line_number=%d", pending.index, number)
                cards.append(pending)
            bus = cells[1] if _BUS.match(cells[1]) else None
            pending = Card(
                int(first.group(1)), first.group(2), first.group(3), first.group(4) or "", bus.lower() if bus else None, version=version
            )
            continue
        if pending is not None and len(cells) >= 2:
            memory = _MEMORY.match(cells[1])
            if memory:
                cards.append(attrs.evolve(pending, memory_used=int(memory.group(1)), memory_total=int(memory.group(2))))
            else:  # the card's second line with N/A or redacted figures: the card stays, memory unknown
                cards.append(attrs.evolve(pending, memory_text=cells[1] or "(empty)"))
            pending = None
            continue
        log.warning("event=cnmon_unparsed_line line_number=%d line=%r", number, line)
    if pending is not None:
        log.warning("event=cnmon_card_without_memory card=%d", pending.index)
        cards.append(pending)
    return cards


def run(argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run the tool and return its stdout; BackendError names the command and why."""
    return run_tool(argv, timeout, missing_hint="is the Cambricon driver installed?")
