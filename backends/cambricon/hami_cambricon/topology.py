"""MLULink rings: which cards to give a multi-card container.

The node agent publishes each card's MLULink peers (ids, one entry per link) in a node annotation;
the scheduler picks ``count`` cards that form a ring, mirroring Cambricon's device-plugin policies
for 2/4/8 cards:

- ``best-effort``: the best ring available, else let the core choose;
- ``guaranteed``: the cards must form at least one ring, else the node does not fit;
- ``restricted``: the cards must form a ring as good as the best one the node's topology allows
  (most MLULinks among the chosen cards), else the node does not fit.

A ring is a cycle through every chosen card over MLULinks (for two cards: a link between them).
Rings are searched by brute force over at most :data:`MAX_COMBINATIONS` card sets, which is
exhaustive for the 8- and 16-card boards MLULink exists on, and cheap (no I/O).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence

from hami.sdk import AnnotationError

POLICIES = ("best-effort", "guaranteed", "restricted")
RING_SIZES = (2, 4, 8)
MAX_COMBINATIONS = 20000

Links = Mapping[str, Sequence[str]]


def encode(links: Links) -> str:
    return json.dumps({k: list(v) for k, v in sorted(links.items())}, separators=(",", ":"))


def decode(text: str) -> dict[str, tuple[str, ...]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AnnotationError(f"MLULink annotation is not JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(p, str) for p in v) for v in data.values()):
        raise AnnotationError(f"MLULink annotation must map device ids to lists of peer ids, got {text[:80]!r}")
    return {k: tuple(v) for k, v in data.items()}


def links_within(cards: Sequence[str], links: Links) -> int:
    chosen = set(cards)
    return sum(1 for card in cards for peer in links.get(card, ()) if peer in chosen) // 2


def is_ring(cards: Sequence[str], links: Links) -> bool:
    if len(cards) < 2:
        return False
    if len(cards) == 2:
        return cards[1] in links.get(cards[0], ())
    first, rest = cards[0], cards[1:]
    for order in itertools.permutations(rest):
        if order[0] > order[-1]:
            continue  # each cycle once, not in both directions
        path = (first, *order, first)
        if all(b in links.get(a, ()) for a, b in itertools.pairwise(path)):
            return True
    return False


def best_ring(candidates: Sequence[str], count: int, links: Links) -> tuple[tuple[str, ...], int] | None:
    """The ring of ``count`` cards among ``candidates`` with the most links (ties: candidate order)."""
    best: tuple[tuple[str, ...], int] | None = None
    for n, cards in enumerate(itertools.combinations(candidates, count)):
        if n >= MAX_COMBINATIONS:
            break
        if is_ring(cards, links):
            quality = links_within(cards, links)
            if best is None or quality > best[1]:
                best = (cards, quality)
    return best


def choose(candidates: Sequence[str], count: int, links: Links, policy: str) -> list[str] | None:
    """Card ids for ``count`` (a ring), ``[]`` when the policy rejects the node, None to let the core choose."""
    if count not in RING_SIZES or not links:
        return None
    found = best_ring(candidates, count, links)
    if policy == "best-effort":
        return list(found[0]) if found else None
    if found is None:
        return []
    if policy == "restricted":
        ideal = best_ring(sorted(links), count, links)
        if ideal is not None and found[1] < ideal[1]:
            return []
    return list(found[0])
