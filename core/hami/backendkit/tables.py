"""Reading the boxed tables vendor tools print, where each device takes a head line (index, name, bus
id) followed, a line or more later, by its memory line (``| 0 MiB / 32768 MiB |``).

Several tools share this layout; each backend gives its own two patterns and keeps the fields it
needs from the two matches. A head line whose memory line never comes is an error naming the device:
the table was cut short or its layout changed, and guessing would advertise the wrong memory.
"""

from __future__ import annotations

import re

from hami.errors import BackendError

Pair = tuple[re.Match[str], re.Match[str]]


def paired_rows(text: str, head: re.Pattern[str], memory: re.Pattern[str], *, tool: str, noun: str = "GPU") -> list[Pair]:
    """``(head match, memory match)`` per device, in the table's order. ``head`` is matched at the start of
    a line and must capture the index and the name as groups 1 and 2 (they name the device in errors);
    ``memory`` is searched in the lines between two heads; other lines are skipped."""
    pairs: list[Pair] = []
    pending: re.Match[str] | None = None
    for line in text.splitlines():
        row = head.match(line)
        if row:
            if pending:
                raise BackendError(f"{tool}: {noun} {pending[1]} ({pending[2]}) has no memory line")
            pending = row
            continue
        found = memory.search(line) if pending else None
        if pending and found:
            pairs.append((pending, found))
            pending = None
    if pending:
        raise BackendError(f"{tool}: {noun} {pending[1]} ({pending[2]}) has no memory line")
    return pairs
