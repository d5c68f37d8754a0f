"""Reading the boxed tables vendor tools print, where each device takes a head line (index, name, bus
id) followed, a line or more later, by its memory line (``| 0 MiB / 32768 MiB |``).

Several tools share this layout; each backend gives its own two patterns and keeps the fields it
needs from the two matches. A head line whose memory line never comes still gives its row, with no
memory match and a reason naming the tool and the line: the backend lists that one device unadvertised
(guessing would advertise the wrong memory) and keeps the others (issue 25: one bad row must not
empty a node's discovery).
"""

from __future__ import annotations

import re

import attrs


@attrs.frozen
class TableRow:
    """One device of the table: its head line's match and, when it came, its memory line's."""

    head: re.Match[str]
    memory: re.Match[str] | None
    """None: no memory line came before the next head line or the end of the table (see ``reason``)."""
    reason: str = ""
    """Why ``memory`` is None, naming the tool, the device and its line; "" when it is there."""


def paired_rows(text: str, head: re.Pattern[str], memory: re.Pattern[str], *, tool: str, noun: str = "GPU") -> list[TableRow]:
    """One :class:`TableRow` per head line, in the table's order. ``head`` is matched at the start of a
    line and must capture the index and the name as groups 1 and 2 (they name the device in reasons);
    ``memory`` is searched in the lines between two heads; other lines are skipped."""
    rows: list[TableRow] = []
    pending: tuple[re.Match[str], int] | None = None

    def unpaired(row: re.Match[str], number: int) -> TableRow:
        line = row.string.strip()
        return TableRow(
            row, None, f"memory unknown: {tool} printed no memory line for {noun} {row[1]} ({row[2]}) (line {number}: {line!r})"
        )

    for number, line in enumerate(text.splitlines(), 1):
        found = head.match(line)
        if found:
            if pending:
                rows.append(unpaired(*pending))
            pending = (found, number)
            continue
        size = memory.search(line) if pending else None
        if pending and size:
            rows.append(TableRow(pending[0], size))
            pending = None
    if pending:
        rows.append(unpaired(*pending))
    return rows
