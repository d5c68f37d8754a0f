"""Why a pod is Pending, in plain words: kube-scheduler's and hami's extender's messages taken apart.

kube-scheduler writes one message per scheduling attempt (``FitError.Error()``, on the pod's
``PodScheduled`` condition and in a ``FailedScheduling`` event)::

    0/5 nodes are available: 1 CardInsufficientMemory: 4096 MiB needed, at most 2048 MiB free on one acme device, 4 Insufficient cpu.

hami's extender writes a ``FilteringFailed`` event naming each node (``no node fits: node-a: …; node-b: …``).
:func:`explain` turns either into a headline and one line per reason with what it means and what to do
(the table in docs/user-guide.md, "Why a pod is Pending").
"""

from __future__ import annotations

import re

import attrs

# kube-scheduler's reasons start with a capital letter or "node(s)", the extender's also with a device
# tally ("2/8 CardInsufficientMemory"); a count before anything else (", 1 needed" inside an
# extender's message) is part of the reason, not the next one.
_SPLIT = re.compile(r", (?=\d+ (?:[A-Z]|node\(s\)|\d+/\d+ ))")
_FIT_ERROR = re.compile(r"^0/(?P<total>\d+) nodes are available(?::\s*(?P<rest>.*))?$", re.DOTALL)
_COUNTED = re.compile(r"^(?P<count>\d+) (?P<reason>.+)$", re.DOTALL)

# (text the reason contains, what it means and what to do); the first match wins
MEANINGS: tuple[tuple[str, str], ...] = (
    ("NodeInsufficientDevice", "The node has no device of the kind asked for, or fewer than the count asked for."),
    ("CardInsufficientMemory", "No device on the node has that much memory left: ask for less, or wait for pods to finish."),
    ("CardInsufficientCore", "No device on the node has that much compute left: ask for fewer cores, or wait."),
    ("CardTypeMismatch", "The pod's device-type annotation (use-…type / nouse-…type) excludes these devices."),
    ("CardUuidMismatch", "The pod's device-id annotation (use-…uuid / nouse-…uuid) excludes these devices."),
    ("LimitReached", "The device already holds its maximum number of virtual devices."),
    ("CardNotHealth", "The device is reported unhealthy by the node agent."),
    ("CardCordoned", "The device is cordoned (taken out of scheduling by the node agent)."),
    ("ModeNotFit", "The device runs in a sharing mode other than the one the pod asks for."),
    ("CardTimeSlicingExhausted", "Every time slice of the device is taken."),
    ("CardComputeUnitsExhausted", "Every compute unit of the device is taken."),
    ("Insufficient cpu", "The node's allocatable CPU minus what its pods request is less than this pod's CPU request."),
    ("Insufficient memory", "The node's allocatable memory minus what its pods request is less than this pod's memory request."),
    (
        "Insufficient ",
        "No node advertises enough of this resource: a misspelled or unknown resource name, "
        "or the pod's schedulerName is not hami's (the admission webhook sets it).",
    ),
    ("Too many pods", "The node runs its maximum number of pods."),
    ("didn't match Pod's node affinity/selector", "The pod's nodeSelector or required node affinity excludes the node."),
    ("untolerated taint", "The node has a taint the pod does not tolerate."),
    ("were unschedulable", "The node is cordoned (kubectl cordon)."),
    ("no scheduler named", "No scheduler with the pod's schedulerName is running, so nothing will place it."),
    ("could not record the allocation", "The scheduler chose a node but could not write the allocation to the pod; it retries."),
    ("bind: ", "Binding the pod to the chosen node failed; the scheduler tries again."),
)


@attrs.frozen
class Reason:
    """One reason: how many nodes gave it (None where the message does not count), its text, its meaning."""

    text: str
    meaning: str
    count: int | None = None
    node: str = ""


@attrs.frozen
class Explanation:
    """A scheduler message taken apart; ``reasons`` is empty when the message has no known form."""

    headline: str
    reasons: tuple[Reason, ...] = ()
    message: str = ""


def meaning(text: str) -> str:
    """What a reason means, or '' when it is not one we know."""
    for needle, words in MEANINGS:
        if needle in text:
            return words
    return ""


def split_fit_error(message: str) -> tuple[int, list[tuple[int, str]]] | None:
    """``0/N nodes are available: c1 r1, c2 r2.`` → ``(N, [(c1, r1), (c2, r2)])``; None for any other text.

    A real cluster's message may go on with `` preemption: …``: that part is left out."""
    matched = _FIT_ERROR.match(message.strip())
    if matched is None:
        return None
    total = int(matched["total"])
    rest = (matched["rest"] or "").split(" preemption: ")[0].strip()
    if rest.endswith("."):
        rest = rest[:-1]
    items: list[tuple[int, str]] = []
    for part in _SPLIT.split(rest) if rest else []:
        counted = _COUNTED.match(part)
        if counted is None:
            return None
        items.append((int(counted["count"]), counted["reason"]))
    return total, items


def explain(message: str) -> Explanation:
    """Headline and reasons of a ``FailedScheduling``/``FilteringFailed`` message or a condition's message."""
    text = message.strip()
    fit = split_fit_error(text)
    if fit is not None:
        total, items = fit
        headline = f"None of the {total} nodes can take this pod." if total != 1 else "The only node cannot take this pod."
        if total == 0:
            headline = "The cluster has no node."
        return Explanation(headline, tuple(Reason(r, meaning(r), c) for c, r in items), text)
    if text.startswith("no node fits: "):
        nodes_by_reason: dict[str, list[str]] = {}
        for part in text.removeprefix("no node fits: ").split("; "):
            node, colon, why = part.partition(": ")
            if not colon:
                node, why = "", part
            nodes_by_reason.setdefault(why, []).append(node)
        reasons = tuple(Reason(why, meaning(why), len(nodes), ", ".join(n for n in nodes if n)) for why, nodes in nodes_by_reason.items())
        return Explanation("hami's scheduler found no node with devices to fit this pod.", reasons, text)
    return Explanation(text or "Not scheduled yet.", (Reason(text, meaning(text)),) if meaning(text) else (), text)
