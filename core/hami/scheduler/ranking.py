"""Nodes kept in order of a node policy's score, updated only where the cluster changed.

For policies whose score depends on the node alone (``PolicyInfo.per_pod`` false, like binpack and
spread), filtering walks this order and stops at the first node that fits, instead of scoring every
node of a large cluster for every pod.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator

from hami.scheduler.state import ClusterState, NodeState

Scorer = Callable[[NodeState], float]


class NodeRanking:
    def __init__(self, state: ClusterState, score: Scorer) -> None:
        self.state = state
        self.score = score
        self._changed = state.changes()  # every current node starts out "changed"
        self._keys: dict[str, tuple[float, str]] = {}
        self._order: list[tuple[float, str]] = []

    def _sync(self) -> None:
        """Re-score the nodes that changed since the last call (callers hold the state lock)."""
        while self._changed:
            name = self._changed.pop()
            old = self._keys.pop(name, None)
            if old is not None:
                del self._order[bisect.bisect_left(self._order, old)]
            node = self.state.nodes.get(name)
            if node is not None:
                key = (-self.score(node), name)
                self._keys[name] = key
                bisect.insort(self._order, key)

    def best_first(self, wanted: set[str] | None = None) -> Iterator[NodeState]:
        """Nodes (of ``wanted``, when given) from the highest score down, ties by name; call with the
        state lock held. A few wanted nodes are sorted by their keys instead of walking every node."""
        self._sync()
        nodes = self.state.nodes
        if wanted is not None and len(wanted) * 8 < len(self._order):
            order: Iterable[tuple[float, str]] = sorted(self._keys[name] for name in wanted if name in self._keys)
        else:
            order = self._order if wanted is None else (key for key in self._order if key[1] in wanted)
        for _, name in order:
            yield nodes[name]
