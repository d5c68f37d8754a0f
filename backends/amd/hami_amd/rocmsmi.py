"""Reading ``rocm-smi --showproductname --showmeminfo vram --showbus --json``: one object per ``card<N>``.

rocm-smi spells the product key ``Card series`` or ``Card Series`` depending on the release and
prints memory in bytes as a string; anything else (the ``system`` entry, unknown keys) is ignored.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from hami.sdk import BackendError, tool_json

ARGS = ("--showproductname", "--showmeminfo", "vram", "--showbus", "--json")
_CARD = re.compile(r"^card(\d+)$")


@attrs.frozen
class Card:
    index: int
    model: str
    memory_mib: int | None
    bus: str = ""
    unique_id: str = ""


def _field(card: dict[str, Any], *names: str) -> str:
    lowered = {k.lower(): v for k, v in card.items()}
    for name in names:
        value = lowered.get(name.lower())
        if isinstance(value, (str, int)) and str(value).strip() not in ("", "N/A"):
            return str(value).strip()
    return ""


def parse(text: str) -> list[Card]:
    """Cards by index; a card without a readable memory total (or any fields) gets ``memory_mib=None``."""
    data = tool_json(text, "rocm-smi")
    if not isinstance(data, dict):
        raise BackendError(f"rocm-smi JSON must be an object of cards, got {type(data).__name__}")
    cards = []
    for key, value in data.items():
        match = _CARD.match(key)
        if not match:
            continue
        value = value if isinstance(value, dict) else {}  # a card without fields: listed, not advertised
        total = _field(value, "VRAM Total Memory (B)")
        cards.append(
            Card(
                index=int(match.group(1)),
                model=_field(value, "Card series", "Card SKU", "Card model") or "AMD GPU",
                memory_mib=int(total) // (1 << 20) if re.fullmatch(r"[0-9]+", total) else None,
                bus=_field(value, "PCI Bus").lower(),
                unique_id=_field(value, "Unique ID"),
            )
        )
    return sorted(cards, key=lambda c: c.index)
