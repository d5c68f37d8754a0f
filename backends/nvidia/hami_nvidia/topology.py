"""NVLink/PCIe pair scores: published as HAMi's ``hami.io/node-nvidia-score`` and used to choose
GPUs that go together.

The annotation is HAMi's ``DevicePairScores`` JSON, so HAMi's scheduler reads ours and ours reads
HAMi's: ``[{"uuid": "GPU-a", "score": {"GPU-b": 220, ...}}, ...]``; a higher score means more
bandwidth (100 per NVLink plus 10–60 for the PCIe path).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from math import comb

from hami.sdk import PhysicalDevice

SCORE_ANNOTATION = "hami.io/node-nvidia-score"
EXHAUSTIVE_LIMIT = 5000
"""Above this many candidate sets the choice is greedy instead of exhaustive (stays cheap)."""

Scores = Mapping[str, Mapping[str, int]]


def encode_scores(devices: Iterable[PhysicalDevice]) -> str | None:
    """The annotation value for these devices, or None when none of them knows its peers."""
    devices = list(devices)
    listed = [d for d in devices if d.attributes.get("pair_scores")]
    if not listed:
        return None
    ids = {d.id for d in devices}
    entries = [
        {"uuid": d.id, "score": {peer: int(score) for peer, score in sorted(d.attributes["pair_scores"].items()) if peer in ids}}
        for d in listed
    ]
    return json.dumps(entries, separators=(",", ":"))


@lru_cache(maxsize=256)
def decode_scores(text: str) -> Scores:
    """Pair scores from the annotation; anything malformed reads as "no scores" (never a crash)."""
    try:
        entries = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    scores: dict[str, dict[str, int]] = {}
    if not isinstance(entries, list):
        return {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("uuid"), str) or not isinstance(entry.get("score", {}), dict):
            return {}
        scores[entry["uuid"]] = {k: v for k, v in entry.get("score", {}).items() if isinstance(v, int) and not isinstance(v, bool)}
    return scores


def _pair(scores: Scores, a: str, b: str) -> int:
    return max(scores.get(a, {}).get(b, 0), scores.get(b, {}).get(a, 0))


def set_score(scores: Scores, ids: Sequence[str]) -> int:
    return sum(_pair(scores, a, b) for a, b in itertools.combinations(ids, 2))


def best_set(ids: Sequence[str], count: int, scores: Scores) -> list[str] | None:
    """The ``count`` ids (from ``ids``, best-ranked first) with the highest total pair score.

    Ties keep the caller's ranking (the device policy's order). None when fewer than ``count``.
    """
    if count > len(ids):
        return None
    if count <= 1:
        return list(ids[:count])
    if comb(len(ids), count) <= EXHAUSTIVE_LIMIT:
        best = max(
            itertools.combinations(range(len(ids)), count),
            key=lambda combo: (set_score(scores, [ids[i] for i in combo]), [-i for i in combo]),
        )
        return [ids[i] for i in best]
    return _greedy(ids, count, scores)


def _greedy(ids: Sequence[str], count: int, scores: Scores) -> list[str]:
    """From each seed, add the GPU best connected to those already chosen; keep the best result."""
    best: tuple[int, list[str]] | None = None
    for seed in ids:
        chosen = [seed]
        rest = [i for i in ids if i != seed]
        while len(chosen) < count:
            nxt = max(rest, key=lambda c: (sum(_pair(scores, c, x) for x in chosen), -ids.index(c)))
            chosen.append(nxt)
            rest.remove(nxt)
        total = set_score(scores, chosen)
        if best is None or total > best[0]:
            best = (total, chosen)
    assert best is not None
    return best[1]


def worst_single(ids: Sequence[str], scores: Scores) -> str | None:
    """HAMi's ``computeWorstSingleCard`` (pkg/device/nvidia/device.go, v2.10.0): for one GPU, the
    candidate with the lowest total pair score to the other candidates, which keeps the
    well-connected groups free for multi-GPU pods. Ties keep the caller's ranking. None when empty."""
    if not ids:
        return None
    return min(ids, key=lambda a: sum(_pair(scores, a, b) for b in ids if b != a))


def scores_differ(scores: Scores, ids: Iterable[str]) -> bool:
    """Whether the pair scores say anything about these ids (all known and not all equal)."""
    ids = list(ids)
    values = {_pair(scores, a, b) for a, b in itertools.combinations(ids, 2)}
    return any(i in scores for i in ids) and len(values) > 1
