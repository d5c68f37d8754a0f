"""Issue 19 item 8, across replicas: quota reservations live in the API server (a Lease per namespace,
written with a resourceVersion precondition), so two webhook instances with their own process state
never admit more than a ResourceQuota holds, a restarted webhook keeps what the old one reserved, and
a failure to read or write the record is a clear, fail-closed denial.

Each "replica" below is its own ``WebhookServer`` on 127.0.0.1 with its own API client, quota source
and reservation store, against one in-memory API server (hami.fakes.kubeapi)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.client import CoordinationV1Api, CoreV1Api

from hami.webhook.quota import RESERVATION_ANNOTATION, KubeQuotaSource, QuotaReservations, Reservation, ScopeFacts, settle
from hami.webhook.reservations import (
    RESERVATIONS_ANNOTATION,
    LeaseReservations,
    decode_reservations,
    encode_reservations,
    lease_name,
)

from .conftest import make_review

NS = "team"
HOME = "hami-system"  # where the webhook keeps its Leases
N = 5


def _pod(name: str, mem: str = "1000", **spec: Any) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": mem}
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"containers": [{"name": "c", "image": "cuda", "resources": {"limits": limits}}], **spec},
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def replica(kube_apiserver: Any, clock: Clock) -> Iterator[Callable[..., KubeQuotaSource]]:
    """``replica(**store_kwargs)``: a quota source with its own API client and Lease store (one webhook process)."""
    clients = []

    def make(**kwargs: Any) -> KubeQuotaSource:
        client = kube_apiserver.api_client()
        clients.append(client)
        kwargs.setdefault("clock", clock)
        return KubeQuotaSource(CoreV1Api(client), reservations=LeaseReservations(CoordinationV1Api(client), HOME, **kwargs))

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def quota(core_v1: Any) -> None:
    core_v1.create_namespaced_resource_quota(
        NS, {"metadata": {"name": "gpu-mem"}, "spec": {"hard": {"limits.nvidia.com/gpumem": str(N * 1000)}}}
    )


def _admit(admit: Any, server: Any, pod: dict[str, Any]) -> dict[str, Any]:
    """40 connects at once overflow a listen backlog: a reset before the request was read is retried."""
    for _ in range(20):
        try:
            return admit(server, pod, namespace=NS)
        except (ConnectionResetError, http.client.RemoteDisconnected):
            continue
    raise AssertionError(f"the webhook kept resetting connections for {pod['metadata']['name']}")


def _race(start_webhook: Any, admit: Any, sources: list[Any]) -> list[dict[str, Any]]:
    servers = [start_webhook(quota=source) for source in sources]
    with ThreadPoolExecutor(max_workers=40) as pool:
        return list(pool.map(lambda i: _admit(admit, servers[i % len(servers)], _pod(f"p{i}")), range(40)))


def test_two_replicas_admit_exactly_the_quota_between_them(start_webhook: Any, admit: Any, replica: Any, quota: None, core_v1: Any) -> None:
    a, b = replica(), replica()
    answers = _race(start_webhook, admit, [a, b])
    allowed = [x for x in answers if x["allowed"]]
    assert len(allowed) == N, f"{len(allowed)} of 40 admitted through two replicas against a quota for {N}"
    assert all("exceeded quota: gpu-mem" in x["status"]["message"] for x in answers if not x["allowed"]), answers
    tokens = {jsonpatch.apply_patch(_pod("x"), x["_ops"])["metadata"]["annotations"][RESERVATION_ANNOTATION] for x in allowed}
    lease = json.loads(CoordinationV1Api(core_v1.api_client).read_namespaced_lease(lease_name(NS), HOME, _preload_content=False).data)
    assert set(json.loads(lease["metadata"]["annotations"][RESERVATIONS_ANNOTATION])) == tokens


def test_process_local_reservations_let_two_replicas_exceed_the_quota(start_webhook: Any, admit: Any, core_v1: Any, quota: None) -> None:
    """What the shared record fixes: each replica alone reserves its own 5 (10 of a quota for 5)."""
    sources = [KubeQuotaSource(core_v1, reservations=QuotaReservations()) for _ in range(2)]
    allowed = sum(x["allowed"] for x in _race(start_webhook, admit, sources))
    assert allowed == 2 * N


def test_a_restart_between_admission_and_creation_keeps_the_reservation(
    start_webhook: Any, admit: Any, replica: Any, quota: None, core_v1: Any, clock: Clock
) -> None:
    old = start_webhook(quota=replica())
    answers = [admit(old, _pod(f"early{i}"), namespace=NS) for i in range(N)]
    assert all(x["allowed"] for x in answers)
    old.stop()  # the webhook restarts before the API server creates any of the pods
    new = start_webhook(quota=replica())
    late = admit(new, _pod("late"), namespace=NS)
    assert not late["allowed"] and "used: limits.nvidia.com/gpumem=5000" in late["status"]["message"], late
    for i, answer in enumerate(answers):  # the pods arrive carrying their tokens: counted once, by the list
        core_v1.create_namespaced_pod(NS, jsonpatch.apply_patch(_pod(f"early{i}"), answer["_ops"]))
    again = admit(new, _pod("again"), namespace=NS)
    assert not again["allowed"] and "used: limits.nvidia.com/gpumem=5000" in again["status"]["message"], again
    core_v1.delete_namespaced_pod("early0", NS, grace_period_seconds=0)
    freed = admit(new, _pod("after-delete"), namespace=NS)
    assert freed["allowed"], freed


def test_an_expired_reservation_frees_its_share_for_every_replica(
    start_webhook: Any, admit: Any, replica: Any, quota: None, clock: Clock
) -> None:
    a, b = start_webhook(quota=replica()), start_webhook(quota=replica())
    assert all(admit(a, _pod(f"never{i}"), namespace=NS)["allowed"] for i in range(N))  # refused after us: never created
    assert not admit(b, _pod("blocked"), namespace=NS)["allowed"]
    clock.now += 59.0
    assert not admit(b, _pod("still-blocked"), namespace=NS)["allowed"]
    clock.now += 2.0  # past the 60 s TTL
    assert admit(b, _pod("freed"), namespace=NS)["allowed"]
    source = replica()
    assert source.reservations.count(NS) == 1, "the expired entries were pruned by the write"


def test_conflicts_are_retried_then_a_storm_is_a_clear_denial(
    start_webhook: Any, admit: Any, replica: Any, quota: None, kube_apiserver: Any
) -> None:
    source = replica(attempts=4)
    server = start_webhook(quota=source)
    assert admit(server, _pod("first"), namespace=NS)["allowed"]  # creates the Lease
    lease_path = rf"/leases/{lease_name(NS)}$"
    lists = []
    source_pods = source.pods
    source.pods = lambda namespace: lists.append(namespace) or source_pods(namespace)  # type: ignore[method-assign]
    kube_apiserver.faults.fail(409, count=3, path=lease_path, method="PUT")
    assert admit(server, _pod("second"), namespace=NS)["allowed"], "three 409s are retried within four attempts"
    assert source.reservations.conflicts == 3 and source.reservations.worst_streak == 3
    assert lists == [NS], "the retries re-read the record but reuse the young pod list"
    kube_apiserver.faults.fail(409, count=4, path=lease_path, method="PUT")
    denied = admit(server, _pod("third"), namespace=NS)
    assert not denied["allowed"] and denied["status"]["code"] == 500
    assert "reservation record changed under 4 attempts in a row" in denied["status"]["message"], denied
    kube_apiserver.faults.clear()
    assert replica().reservations.count(NS) == 2, "the denied admission reserved nothing"


@pytest.mark.parametrize(("method", "verb"), [("GET", "read"), ("PUT", "write")])
def test_forbidden_on_the_lease_is_a_clear_fail_closed_denial(
    start_webhook: Any, admit: Any, replica: Any, quota: None, kube_apiserver: Any, method: str, verb: str
) -> None:
    server = start_webhook(quota=replica())
    assert admit(server, _pod("first"), namespace=NS)["allowed"]
    kube_apiserver.faults.fail(403, path=rf"/leases/{lease_name(NS)}$", method=method, message="leases is forbidden: RBAC")
    fresh = start_webhook(quota=replica()) if method == "GET" else server  # a fresh process must read; a warm one writes
    denied = admit(fresh, _pod("second"), namespace=NS)
    assert not denied["allowed"] and denied["status"]["code"] == 500
    message = denied["status"]["message"]
    assert f"cannot {verb} the quota reservations of namespace 'team' (Lease hami-system/hami-quota-team): 403" in message, message
    assert "needs get, create and update on coordination.k8s.io leases in namespace 'hami-system'" in message


def test_a_reservation_counts_only_against_the_quotas_whose_scope_selects_its_pod(
    start_webhook: Any, admit: Any, replica: Any, core_v1: Any
) -> None:
    """The shared record keeps the pod's scope facts, not the pod: a reserved high-priority pod charges
    the quota scoped to its priority class and not one scoped to another."""
    for name, klass in (("high", "high"), ("low", "low")):
        selector = {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": [klass]}]}
        core_v1.create_namespaced_resource_quota(
            NS, {"metadata": {"name": name}, "spec": {"hard": {"limits.nvidia.com/gpumem": "1000"}, "scopeSelector": selector}}
        )
    a, b = start_webhook(quota=replica()), start_webhook(quota=replica())
    assert admit(a, _pod("h1", priorityClassName="high"), namespace=NS)["allowed"]
    refused = admit(b, _pod("h2", priorityClassName="high"), namespace=NS)
    assert not refused["allowed"] and "exceeded quota: high" in refused["status"]["message"]
    assert admit(b, _pod("l1", priorityClassName="low"), namespace=NS)["allowed"]


def _entry(seen: float | None = None, expires: float = 100.0) -> Reservation:
    return Reservation("p", {"limits.nvidia.com/gpumem": Decimal(1000)}, ScopeFacts(), expires, seen)


def _listed(token: str) -> dict[str, Any]:
    return {"metadata": {"name": "p", "annotations": {RESERVATION_ANNOTATION: token}}}


def test_settle_marks_listed_pods_and_counts_a_marked_entry_only_on_a_list_that_may_predate_the_mark() -> None:
    counted, kept = settle({"t": _entry()}, [_listed("t")], now=50.0, grace=10.0, list_after_read=True)
    assert counted == {} and kept == {"t": _entry(seen=50.0)}, "listed: the list counts it, the record keeps it marked"
    # the pod is no longer listed: a list taken after the read is right (the pod is gone); a reused
    # list may be older than the pod, so the entry counts
    assert settle(kept, [], now=55.0, grace=10.0, list_after_read=True)[0] == {}
    assert settle(kept, [], now=55.0, grace=10.0, list_after_read=False)[0] == kept
    assert settle(kept, [], now=60.0, grace=10.0, list_after_read=False) == ({}, {}), "dropped grace after the mark"
    assert settle({"t": _entry()}, [], now=100.0, grace=10.0, list_after_read=True) == ({}, {}), "expired"
    assert settle({"t": _entry()}, [_listed("t")], now=50.0, grace=0.0, list_after_read=True) == ({}, {}), "no grace: dropped"


# ------------------------------------------------------------------ the record's codec

_facts = st.builds(ScopeFacts, st.booleans(), st.booleans(), st.none() | st.text(min_size=1, max_size=8), st.booleans())
_amounts = st.dictionaries(
    st.sampled_from(["limits.nvidia.com/gpumem", "limits.nvidia.com/gpu", "limits.nvidia.com/gpucores"]),
    st.decimals(min_value=Decimal("0.001"), max_value=Decimal(10**12), places=3),
    max_size=3,
)
_entries = st.dictionaries(
    st.text("0123456789abcdef", min_size=1, max_size=32),
    st.builds(
        Reservation,
        st.text(max_size=12),
        _amounts,
        _facts,
        st.floats(min_value=0, max_value=4e9),
        st.none() | st.floats(min_value=0, max_value=4e9),
    ),
    max_size=5,
)


@given(_entries)
@settings(max_examples=100, deadline=None)
def test_the_record_reads_back_what_was_written(entries: dict[str, Reservation]) -> None:
    assert decode_reservations(encode_reservations(entries)) == entries


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


@given(st.one_of(_json.map(json.dumps), st.text(max_size=40)))
@settings(max_examples=100, deadline=None)
def test_a_damaged_record_never_raises_and_keeps_only_readable_entries(text: str) -> None:
    for token, entry in decode_reservations(text).items():
        assert isinstance(token, str) and isinstance(entry, Reservation)
        assert all(isinstance(v, Decimal) for v in entry.charge.values())


def test_a_damaged_entry_is_dropped_and_its_neighbours_kept() -> None:
    good = Reservation("p", {"limits.nvidia.com/gpumem": Decimal(1000)}, ScopeFacts(), 5.0)
    record = json.loads(encode_reservations({"a": good}))
    record["b"] = {"pod": "q", "charge": {"limits.nvidia.com/gpumem": "lots"}, "scope": {}, "expires": 5}
    record["c"] = {"pod": "r", "charge": {}, "scope": {}, "expires": "soon"}
    assert decode_reservations(json.dumps(record)) == {"a": good}


def test_both_command_lines_reserve_in_leases_of_the_namespace_they_are_given(
    kube_apiserver: Any, tmp_path: Any, core_v1: Any, manager: Any
) -> None:
    """`hami webhook --reservation-namespace` and the scheduler's webhook (the chart passes the release
    namespace) build a Lease store there, so their replicas share it."""
    from hami.scheduler.cli import _webhook_handler
    from hami.webhook.cli import _quota_source

    kubeconfig = str(kube_apiserver.write_kubeconfig(tmp_path / "kubeconfig"))
    source = _quota_source(kubeconfig, HOME)
    assert isinstance(source.reservations, LeaseReservations) and source.reservations.namespace == HOME
    core_v1.create_namespaced_resource_quota(NS, {"metadata": {"name": "q"}, "spec": {"hard": {"limits.nvidia.com/gpumem": "1000"}}})
    handler = _webhook_handler(manager, "hami-scheduler", kubeconfig, HOME)
    first = json.loads(handler(json.dumps(make_review(_pod("a"), namespace=NS)).encode())[1])["response"]
    assert first["allowed"], first
    second = json.loads(handler(json.dumps(make_review(_pod("b"), namespace=NS)).encode())[1])["response"]
    assert not second["allowed"] and "exceeded quota: q" in second["status"]["message"]
    assert source.reservations.count(NS) == 1, "the other command line's store sees the scheduler's reservation"
