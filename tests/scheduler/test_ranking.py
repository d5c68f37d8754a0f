"""The node ranking: incremental re-scoring and the same order for any subset of candidates."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hami.plugin.model import SchedulableDevice
from hami.scheduler.ranking import NodeRanking
from hami.scheduler.state import ClusterState
from hami.wire.codec import encode_node_devices
from hami_nvidia.plugin import KIND


def node(name, memory):
    devices = [SchedulableDevice(id=f"{name}-0", vendor="NVIDIA", type="A100", count=4, memory=memory)]
    return {"metadata": {"name": name, "annotations": {KIND.annotations.node_register: encode_node_devices(devices, "json")}}}


@settings(max_examples=30, deadline=None)
@given(memories=st.lists(st.integers(1, 50), min_size=1, max_size=40), picks=st.data())
def test_subset_order_matches_the_full_order(memories, picks):
    state = ClusterState({"NVIDIA": KIND})
    for i, memory in enumerate(memories):
        state.apply_node(node(f"n{i:02d}", memory))
    ranking = NodeRanking(state, lambda n: float(sum(d.memory for d in n.devices.values())))
    full = [n.name for n in ranking.best_first()]
    assert full == [name for _, name in sorted((-m, f"n{i:02d}") for i, m in enumerate(memories))]
    wanted = set(picks.draw(st.lists(st.sampled_from(sorted(state.nodes)), unique=True)))
    assert [n.name for n in ranking.best_first(wanted)] == [name for name in full if name in wanted]
    # a change re-scores only that node, and the order follows
    state.apply_node(node("n00", 1000))
    assert next(iter(ranking.best_first())).name == "n00"
