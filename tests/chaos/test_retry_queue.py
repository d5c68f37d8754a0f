"""The chaos drivers' kube-scheduler retries (hami.sandbox.chaos.RetryQueue): backoff 1 s doubling to
10 s (kube-scheduler's podInitialBackoffSeconds / podMaxBackoffSeconds,
pkg/scheduler/backend/queue/scheduling_queue.go) on a compressed clock; an unschedulable pod waits for
a cluster event and stays Pending once nothing else is in flight."""

from __future__ import annotations

import threading

import pytest

from hami.sandbox.chaos import RetryQueue, _verdict


def test_backoff_doubles_from_one_second_to_ten_on_the_compressed_clock():
    queue = RetryQueue(scale=0.5)
    assert [queue.backoff(tries) for tries in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


@pytest.mark.parametrize("bad", [{"scale": 0}, {"initial": -1}, {"maximum": 0.5}, {"deadline": 0}, {"max_tries": 0}])
def test_bad_settings_are_refused_naming_them(bad):
    with pytest.raises(ValueError, match="retry queue: bad settings"):
        RetryQueue(**bad)


def test_a_pod_that_lost_its_bind_is_tried_until_it_runs():
    queue = RetryQueue(scale=0.001)
    outcomes = iter(["bind: node gpu-a is locked by default/x", "bind: node gpu-a is locked by default/y", "Running"])
    undone: list[str] = []
    result = queue.run("p", lambda: next(outcomes), lambda o: "done" if o == "Running" else _verdict(o), undone.append)
    assert result == "Running" and queue.tries["p"] == 3 and len(undone) == 2


def test_an_unschedulable_pod_alone_stays_pending_after_one_try():
    queue = RetryQueue(scale=0.001)
    reason = "0/3 nodes are available: 3 CardInsufficientMemory."
    assert queue.run("p", lambda: reason, lambda o: _verdict(o), lambda o: None) == reason
    assert queue.tries["p"] == 1


def test_an_unschedulable_pod_is_tried_again_when_another_pods_bind_fails():
    """Pod B fits nowhere while pod A holds the capacity; A's bind fails (its reservation is given
    back: a cluster event), so B is tried again and runs."""
    queue = RetryQueue(scale=0.001)
    a_held = threading.Event()
    a_failed = threading.Event()
    b_tried = threading.Event()

    def a_attempt() -> str:
        if not a_failed.is_set():
            a_held.set()
            b_tried.wait(10)
            a_failed.set()
            return "bind: node gpu-a is locked"
        return "0/1 nodes are available: 1 CardInsufficientMemory."  # B runs now: A fits nowhere

    def b_attempt() -> str:
        if a_failed.is_set():
            return "Running"
        b_tried.set()
        return "0/1 nodes are available: 1 CardInsufficientMemory."

    def classify(outcome: str) -> str:
        return "done" if outcome == "Running" else _verdict(outcome)

    results: dict[str, str] = {}
    thread = threading.Thread(target=lambda: results.setdefault("a", queue.run("a", a_attempt, classify, lambda o: None)))
    thread.start()
    assert a_held.wait(10)
    results["b"] = queue.run("b", b_attempt, classify, lambda o: None)
    thread.join(10)
    assert results["b"] == "Running" and queue.tries["b"] == 2
    assert _verdict(results["a"]) == "unschedulable"


def test_the_verdicts_follow_kube_schedulers_queues():
    assert _verdict("0/5 nodes are available: 5 Insufficient nvidia.com/gpu.") == "unschedulable"
    assert _verdict("filter: gpu-a: CardInsufficientMemory") == "unschedulable"
    for reason in ("bind: node gpu-a is locked", "filter error: pod chaos/x is unknown", "kubelet: UnexpectedAdmissionError: x", ""):
        assert _verdict(reason) == "backoff", reason
