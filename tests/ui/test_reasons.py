"""Pending reasons in plain words: kube-scheduler's FitError message and the extender's FilteringFailed text."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from hami.sandbox.kubescheduler import fit_error
from hami.ui.reasons import explain, meaning, split_fit_error

# reasons as kube-scheduler and hami's extender word them, some with commas and counts inside
VOCABULARY = [
    "Insufficient cpu",
    "Insufficient memory",
    "Insufficient acme.com/xpu",
    "Too many pods",
    "node(s) didn't match Pod's node affinity/selector",
    "node(s) had untolerated taint {gpu: true}",
    "node(s) were unschedulable",
    "NodeInsufficientDevice: 0 usable acme device(s), 1 needed",
    "CardInsufficientMemory: 200000 MiB needed, at most 79920 MiB free on one acme device",
    "2/8 CardInsufficientMemory, 6/8 CardTypeMismatch",
    "CardUuidMismatch",
]


def test_kube_scheduler_message_is_taken_apart():
    explanation = explain(
        "0/5 nodes are available: 1 CardInsufficientMemory: 4096 MiB needed, at most 2048 MiB free on one acme device, "
        "4 node(s) didn't match Pod's node affinity/selector. "
        "preemption: 0/5 nodes are available: 5 No preemption victims."
    )
    assert explanation.headline == "None of the 5 nodes can take this pod."
    assert [(r.count, r.text) for r in explanation.reasons] == [
        (1, "CardInsufficientMemory: 4096 MiB needed, at most 2048 MiB free on one acme device"),
        (4, "node(s) didn't match Pod's node affinity/selector"),
    ]
    assert "memory left" in explanation.reasons[0].meaning
    assert "nodeSelector" in explanation.reasons[1].meaning


def test_extender_message_groups_nodes_by_reason():
    explanation = explain(
        "no node fits: a: NodeInsufficientDevice: no acme devices registered on this node; "
        "b: CardInsufficientCore: 90 % needed; c: NodeInsufficientDevice: no acme devices registered on this node"
    )
    assert [(r.count, r.node, r.text) for r in explanation.reasons] == [
        (2, "a, c", "NodeInsufficientDevice: no acme devices registered on this node"),
        (1, "b", "CardInsufficientCore: 90 % needed"),
    ]
    assert "compute" in explanation.reasons[1].meaning


def test_other_messages_are_kept_whole():
    explanation = explain("no scheduler named 'x' runs in the sandbox")
    assert explanation.headline == "no scheduler named 'x' runs in the sandbox"
    assert explanation.reasons[0].meaning.startswith("No scheduler")
    assert explain("something new").reasons == ()
    assert meaning("numa-bind is set") == ""
    assert split_fit_error("0/3 nodes are available: oops") is None


@settings(deadline=None)  # the machine is shared: timing is not what this checks
@given(
    st.integers(min_value=1, max_value=5000),
    st.dictionaries(st.sampled_from(VOCABULARY), st.integers(min_value=1, max_value=5000), min_size=1, max_size=len(VOCABULARY)),
)
def test_any_fit_error_reads_back_as_written(total, histogram):
    """Whatever kube-scheduler's formatter (the sandbox's copy of FitError.Error()) writes, the counts and reasons read back."""
    statuses = {f"n{i}-{reason}": [reason] for reason, count in histogram.items() for i in range(count)}
    parsed = split_fit_error(fit_error(total, statuses))
    assert parsed is not None
    assert parsed[0] == total
    assert Counter(dict((r, c) for c, r in parsed[1])) == Counter(histogram)


@settings(deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_explained_without_error(text):
    explanation = explain(text)
    assert explanation.message == text.strip()
