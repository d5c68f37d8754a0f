"""Reading ``efsmi``'s device table: two rows per card, ``|``-separated cells inside ``|`` or ``*`` borders.

Row one: ``<DEV> <NAME> | <FW VER> | <BUS-ID> <ECC>``; row two: ``<TEMP> ... | <Mem> <GCU Virt> | <DUsed> <SN>``.
Memory is ``<n>MiB`` (efsmi >= 1.2) or ``<n>G`` (V1.20, 2023). Rows that are neither are skipped;
a card whose second row is missing or unreadable keeps ``memory_mib=None``, one whose bus id is not
one (``N/A``) keeps ``bus=""``: every card efsmi lists is returned.
"""

from __future__ import annotations

import re

import attrs

ARGS: tuple[str, ...] = ()
"""``efsmi`` with no arguments prints the table (what Enflame's gcushare device plugin runs, pkg/smi/smi.go)."""
_BUS = re.compile(r"^[0-9a-fA-F]{2,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{1,2}\.[0-7]$")
_CARD = re.compile(r"^(\d+)\s+(\S.*)$")
_MEMORY = re.compile(r"^(\d+)\s*(MiB|G|GiB)\s*(\S*)$")


@attrs.frozen
class Card:
    index: int
    model: str
    bus: str
    memory_mib: int | None = None
    virt: str = ""
    """``GCU Virt``: Disable, SRIOV, DRS, …"""
    serial: str = ""


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|*").split("|")]


def parse(text: str) -> list[Card]:
    cards: list[Card] = []
    for line in text.splitlines():
        cells = _cells(line)
        if len(cells) != 3:
            continue
        first, third = _CARD.match(cells[0]), cells[2].split()
        memory = _MEMORY.match(cells[1])
        if first and not memory:  # row one; a bus id efsmi could not read (N/A) keeps the card, without it
            bus = third[0].lower() if third and _BUS.match(third[0]) else ""
            cards.append(Card(int(first.group(1)), first.group(2).strip(), bus))
            continue
        if memory and cards and cards[-1].memory_mib is None:
            amount = int(memory.group(1)) * (1 if memory.group(2) == "MiB" else 1024)
            cards[-1] = attrs.evolve(cards[-1], memory_mib=amount, virt=memory.group(3), serial=(third or [""])[-1])
    return cards
