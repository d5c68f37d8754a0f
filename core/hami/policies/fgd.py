"""FGD: fragmentation gradient descent (Weng et al., USENIX ATC '23), as node and device policies.

A device's leftover capacity is *fragmented* for a task class when that class cannot use it: too
little left on the device, a device type the class does not accept, too few devices left for a
multi-device class, or — when the cluster view has one — too little CPU or memory left on the node.
A node's fragmentation is the expected fragmented capacity for a task drawn from the workload's
class distribution, ``F = R − U``: remaining capacity minus the expected *usable* capacity. FGD
places each task where F grows least (``score = −ΔF``, higher is better), device included.

The distribution is learnt online from the requests scored (one observation per pod uid),
so the policy works in a live cluster and not only in replay. ``U`` decomposes per device for
one-device classes: a device with ``r`` left of which ``u`` is usable contributes
``r · P(need ≤ u, class fits the node's CPU and memory, class accepts the type)``, a lookup in a
cumulative table rebuilt when the distribution has moved (every ~3 % more observations). Classes of
several devices add ``(capacity of devices they could use) · P(count ≤ such devices, host fits)``.
So a whole cluster is scored with a few vectorised lookups per pod, and nodes in the same state
are scored once.

Among placements that fragment (almost) equally, the fuller node wins (``fit_weight``): on openb
this best-fit tie-break is worth about +0.9 % of capacity allocated (``docs/simulator.md``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from hami.plugin.model import DeviceRequest, DeviceUsage, NodeUsage
from hami.plugin.policy import ClusterView, DevicePolicy, DeviceScoreContext, NodePolicy, ScoreContext
from hami.policies.context import pod_host_request, pod_uid, selector_signature
from hami.policies.devicetable import Admission, DeviceTable, numpy, primary_request

NAME = "fgd"
_EPOCHS = itertools.count(1)
INFEASIBLE = -1e18
"""Score of a node or device the task cannot use (finite, so every consumer can sort it)."""


@attrs.frozen
class TaskClass:
    """One shape of task: what it asks of one vendor's devices and of the node."""

    vendor: str
    count: int
    memory: int
    memory_percentage: int | None
    cores: int
    signature: tuple[Any, ...] = attrs.field(hash=True)
    cpu: int
    mem: int


@attrs.define
class ClassBook:
    """Counts of the task classes seen, and one example (request, pod) of each."""

    counts: dict[TaskClass, float] = attrs.field(factory=dict)
    examples: dict[TaskClass, tuple[DeviceRequest, Mapping[str, Any]]] = attrs.field(factory=dict)
    total: float = 0.0
    seen: dict[str, None] = attrs.field(factory=dict)
    memory: int = 65536
    """How many pod uids to remember for de-duplication (filters are retried)."""

    def observe(self, uid: str, request: DeviceRequest, pod: Mapping[str, Any], host: tuple[int, int]) -> None:
        if uid in self.seen:
            return
        self.seen[uid] = None
        if len(self.seen) > self.memory:
            for old in list(self.seen)[: self.memory // 2]:
                del self.seen[old]
        key = TaskClass(
            request.vendor, request.count, request.memory, request.memory_percentage, request.cores, selector_signature(pod), *host
        )
        self.counts[key] = self.counts.get(key, 0.0) + 1.0
        self.examples.setdefault(key, (request, pod))
        self.total += 1.0


@attrs.define
class Group:
    """Multi-device classes sharing a per-type need and admission: one cumulative table over count."""

    need: Any
    allowed: Any
    counts: Any
    table: Any


@attrs.define
class Tables:
    """The distribution of one epoch as cumulative lookup tables (see the module docstring)."""

    needs: Any
    cpus: Any
    mems: Any
    single: Any
    groups: list[Group]
    models: int
    total: float
    epoch: int = 0

    # -------------------------------------------------------- building

    @classmethod
    def build(cls, book: ClassBook, table: DeviceTable, admission: Admission, shapes: dict[TaskClass, tuple[Any, Any]]) -> Tables:
        """``shapes`` caches each class's per-type need and admission (they only change with the types)."""
        np = numpy()
        classes = [c for c in book.counts if c.vendor == table.vendor]
        models = max(len(table.representatives), 1)
        weights = np.array([book.counts[c] for c in classes] or [1.0])
        p = weights / weights.sum()
        need = np.zeros((len(classes), models), dtype=np.int64)
        allowed = np.zeros((len(classes), models), dtype=bool)
        for i, c in enumerate(classes):
            shape = shapes.get(c)
            if shape is None or len(shape[0]) != models:
                request, pod = book.examples[c]
                shape = shapes[c] = (table.representative_needs(request), admission.allowed(table, request, pod, c.signature))
            need[i], allowed[i] = shape
        count = np.array([c.count for c in classes], dtype=np.int64)
        cpu = np.array([c.cpu for c in classes], dtype=np.int64)
        mem = np.array([c.mem for c in classes], dtype=np.int64)
        cpus, mems = np.unique(np.append(cpu, 0)), np.unique(np.append(mem, 0))
        ic, im = np.searchsorted(cpus, cpu) + 1, np.searchsorted(mems, mem) + 1
        host_shape = (len(cpus) + 1, len(mems) + 1)
        single = count == 1
        needs = np.unique(need[single]) if single.any() else np.zeros(0, dtype=np.int64)
        grid = np.zeros((models, len(needs) + 1, *host_shape))
        c_idx, m_idx = np.nonzero(allowed & single[:, None])
        np.add.at(grid, (m_idx, np.searchsorted(needs, need[c_idx, m_idx]) + 1, ic[c_idx], im[c_idx]), p[c_idx])
        grid = grid.cumsum(1).cumsum(2).cumsum(3)
        grouped: dict[tuple[Any, ...], list[int]] = {}
        for i in np.flatnonzero(~single):
            grouped.setdefault((tuple(need[i]), tuple(allowed[i])), []).append(int(i))
        groups = []
        for (group_need, group_allowed), members in grouped.items():
            counts = np.unique(count[members])
            cumulative = np.zeros((len(counts) + 1, *host_shape))
            np.add.at(cumulative, (np.searchsorted(counts, count[members]) + 1, ic[members], im[members]), p[members])
            groups.append(
                Group(
                    np.array(group_need, dtype=np.int64),
                    np.array(group_allowed, dtype=bool),
                    counts,
                    cumulative.cumsum(0).cumsum(1).cumsum(2),
                )
            )
        return cls(needs, cpus, mems, grid, groups, models, book.total, next(_EPOCHS))

    # -------------------------------------------------------- evaluating

    @property
    def strides(self) -> tuple[int, int, int]:
        _, kd, kc, km = self.single.shape
        return kd * kc * km, kc * km, km

    def host_offsets(self, host: tuple[Any, Any] | None, rows: int) -> tuple[Any, Any, Any]:
        """Per row: the flat offset of its (CPU, memory) cell in the single table, and the two indices."""
        np = numpy()
        if host is None:
            ic = np.full(rows, len(self.cpus), dtype=np.int64)
            im = np.full(rows, len(self.mems), dtype=np.int64)
        else:
            ic = np.searchsorted(self.cpus, host[0], side="right")
            im = np.searchsorted(self.mems, host[1], side="right")
        return ic * self.strides[2] + im, ic, im

    def single_lookup(self, model_offset: Any, usable: Any, host_offset: Any) -> Any:
        """P(a one-device class can use ``usable`` on that device and fits the host), per device."""
        np = numpy()
        iu = np.searchsorted(self.needs, usable, side="right")
        return np.take(self.single, model_offset + iu * self.strides[1] + host_offset[:, None])

    @staticmethod
    def group_lookup(group: Group, count: Any, ic: Any, im: Any) -> Any:
        np = numpy()
        return group.table[np.searchsorted(group.counts, count, side="right"), ic, im]


@attrs.define
class Frame:
    """One node set's devices, with what every evaluation of it shares."""

    tables: Tables
    remaining: Any
    usable: Any
    model: Any
    present: Any
    slots: Any
    model_offset: Any = None

    def __attrs_post_init__(self) -> None:
        np = numpy()
        self.model_offset = np.minimum(self.model, self.tables.models - 1) * self.tables.strides[0]

    def usable_total(self, host: tuple[Any, Any, Any], remaining: Any = None, usable: Any = None) -> Any:
        """U per row: the expected capacity a task of the distribution could use."""
        remaining = self.remaining if remaining is None else remaining
        usable = self.usable if usable is None else usable
        offset, ic, im = host
        total = (remaining * self.tables.single_lookup(self.model_offset, usable, offset)).sum(axis=1)
        for group in self.tables.groups:
            ok = self.group_ok(group, usable)
            total = total + (remaining * ok).sum(axis=1) * Tables.group_lookup(group, ok.sum(axis=1), ic, im)
        return total

    def group_ok(self, group: Group, usable: Any) -> Any:
        model = numpy().minimum(self.model, len(group.need) - 1)
        return self.present & group.allowed[model] & (usable >= group.need[model])


def score_placements(
    tables: Tables,
    remaining: Any,
    usable: Any,
    model: Any,
    present: Any,
    slots: Any,
    need: Any,
    allowed: Any,
    count: int,
    host: tuple[Any, Any] | None,
    task_host: tuple[int, int],
) -> tuple[Any, Any]:
    """−ΔF for each row (node) and, per device, for placing one of the task's devices there.

    ``need``/``allowed`` are per device type; ``count`` 0 is a task that uses only CPU and memory.
    Returns (node scores (N,), device scores (N, W)); impossible placements score ``INFEASIBLE``.
    Rows in the same state (devices, and CPU/memory as far as the classes can tell) are scored once:
    a cluster has far fewer distinct node states than nodes.
    """
    np = numpy()
    rows = remaining.shape[0]
    now = tables.host_offsets(host, rows)
    if host is not None:
        cpu_after, mem_after = host[0] - task_host[0], host[1] - task_host[1]
        host_ok = (cpu_after >= 0) & (mem_after >= 0)
        later = tables.host_offsets((cpu_after, mem_after), rows)
    else:
        host_ok = np.ones(rows, dtype=bool)
        later = now
    key = np.concatenate(
        [remaining, usable, model, present, np.minimum(slots, 2), now[0][:, None], later[0][:, None], host_ok[:, None]],
        axis=1,
        dtype=np.int64,
    )
    first, inverse = _distinct(key)
    if len(first) < rows:

        def pick(a: Any) -> Any:
            return a[first]

        node, device = _score(
            tables,
            remaining[first],
            usable[first],
            model[first],
            present[first],
            slots[first],
            need,
            allowed,
            count,
            host_ok[first],
            tuple(map(pick, now)),
            tuple(map(pick, later)),
        )
        return node[inverse], device[inverse]
    return _score(tables, remaining, usable, model, present, slots, need, allowed, count, host_ok, now, later)


_WEIGHTS: dict[int, Any] = {}


def _distinct(key: Any) -> tuple[Any, Any]:
    """Index of one row per distinct row of ``key``, and each row's position among them."""
    np = numpy()
    width = key.shape[1]
    weights = _WEIGHTS.get(width)
    if weights is None:
        weights = _WEIGHTS[width] = np.random.default_rng(width).integers(1, 2**62, size=width, dtype=np.int64) | 1
    with np.errstate(over="ignore"):
        hashed = key @ weights  # wraps around: a hash, checked below
    _, first, inverse = np.unique(hashed, return_index=True, return_inverse=True)
    if not np.array_equal(key[first][inverse], key):  # a collision: score every row
        return np.arange(key.shape[0]), np.arange(key.shape[0])
    return first, inverse


def _score(
    tables: Tables,
    remaining: Any,
    usable: Any,
    model: Any,
    present: Any,
    slots: Any,
    need: Any,
    allowed: Any,
    count: int,
    host_ok: Any,
    now: tuple[Any, Any, Any],
    later: tuple[Any, Any, Any],
) -> tuple[Any, Any]:
    np = numpy()
    frame = Frame(tables, remaining, usable, model, present, slots)
    before = frame.usable_total(now)
    if count == 0:
        node = np.where(host_ok, frame.usable_total(later) - before, INFEASIBLE)
        return node, np.full(remaining.shape, INFEASIBLE)
    model_c = np.minimum(model, len(need) - 1)
    d = need[model_c]
    fits = present & allowed[model_c] & (usable >= d) & host_ok[:, None]
    taken = np.minimum(d, remaining)
    remaining1 = remaining - taken
    usable1 = np.where(slots > 1, np.maximum(usable - d, 0), 0)
    offset, ic, im = later
    single_before = remaining * tables.single_lookup(frame.model_offset, usable, offset)
    single_after = remaining1 * tables.single_lookup(frame.model_offset, usable1, offset)
    after = single_before.sum(axis=1)[:, None] - single_before + single_after
    for group in tables.groups:
        ok, ok1 = frame.group_ok(group, usable), frame.group_ok(group, usable1)
        capacity, capacity1 = remaining * ok, remaining1 * ok1
        n = ok.sum(axis=1)[:, None] - ok + ok1
        s = capacity.sum(axis=1)[:, None] - capacity + capacity1
        after = after + s * Tables.group_lookup(group, n, ic[:, None], im[:, None])
    device = np.where(fits, taken - (before[:, None] - after), INFEASIBLE)
    if count == 1:
        return device.max(axis=1), device
    order = np.argsort(-device, axis=1, kind="stable")[:, :count]
    feasible = fits.sum(axis=1) >= count
    chosen = np.zeros(remaining.shape, dtype=bool)
    np.put_along_axis(chosen, order, True, axis=1)
    after2 = frame.usable_total(later, np.where(chosen, remaining1, remaining), np.where(chosen, usable1, usable))
    node = np.where(feasible, (taken * chosen).sum(axis=1) - (before - after2), INFEASIBLE)
    return node, device


class Fgd:
    """What the ``fgd`` node and device policies share: the learnt distribution and the last node
    scoring's per-device scores, for one cluster view (a new view starts afresh)."""

    refresh_growth = 1 / 32
    """Rebuild the tables when observations grew by this fraction since the last build."""
    fit_weight = 48.0
    """Milli of fragmentation a node's leftover is worth, per unit of (free device share + free CPU
    share) after placement: a best-fit preference among placements that fragment about equally.
    Without it, equal fragmentation deltas are common (identical GPUs, nodes the task cannot
    fragment) and ties go by name; with it, FGD keeps emptier nodes for later (openb: +0.9 %)."""

    def __init__(self) -> None:
        self.cluster = ClusterView()
        self.reset()

    def reset(self) -> None:
        self.book = ClassBook()
        self.tables_by_vendor: dict[str, DeviceTable] = {}
        self.admission = Admission(self.cluster.device_fits)
        self._tables: dict[str, Tables] = {}
        self._shapes: dict[TaskClass, tuple[Any, Any]] = {}
        self._plan: tuple[str, Any, Any, Any] | None = None

    def bind(self, cluster: ClusterView) -> None:
        """Start afresh when called with a new cluster view (a simulator run, the extender's start)."""
        if cluster is not self.cluster:
            self.cluster = cluster
            self.reset()

    # -------------------------------------------------------- state

    def _table(self, vendor: str) -> DeviceTable:
        table = self.tables_by_vendor.get(vendor)
        if table is None:
            table = self.tables_by_vendor[vendor] = DeviceTable(vendor)
            table.set_host(self.cluster.host)
        return table

    def _current(self, table: DeviceTable) -> Tables:
        tables = self._tables.get(table.vendor)
        stale = (
            tables is None
            or tables.models != max(len(table.representatives), 1)
            or self.book.total >= tables.total * (1 + self.refresh_growth) + 1 - 1e-9
        )
        if stale or tables is None:
            tables = self._tables[table.vendor] = Tables.build(self.book, table, self.admission, self._shapes)
        return tables

    def _task(self, table: DeviceTable, request: DeviceRequest | None, pod: Mapping[str, Any]) -> tuple[Any, Any, int]:
        np = numpy()
        if request is None:
            return (
                np.full(max(len(table.representatives), 1), 1000, dtype=np.int64),
                np.ones(max(len(table.representatives), 1), dtype=bool),
                0,
            )
        allowed = self.admission.allowed(table, request, pod, selector_signature(pod))
        return table.representative_needs(request), allowed, request.count

    # -------------------------------------------------------- scoring

    def score_nodes(self, nodes: Sequence[NodeUsage], requests: Sequence[DeviceRequest], pod: Mapping[str, Any]) -> list[float]:
        request = primary_request(requests)
        vendor = request.vendor if request is not None else self._any_vendor(nodes)
        if vendor is None:
            return [0.0] * len(nodes)
        table = self._table(vendor)
        rows = table.sync(nodes)
        task_host = pod_host_request(pod)
        uid = pod_uid(pod)
        if request is not None:
            self.book.observe(uid, request, pod, task_host)
        tables = self._current(table)
        need, allowed, count = self._task(table, request, pod)
        host = table.host_free(rows)
        node_scores, device_scores = score_placements(
            tables,
            table.remaining[rows],
            table.usable[rows],
            table.model[rows],
            table.present[rows],
            table.slots[rows],
            need,
            allowed,
            count,
            host,
            task_host,
        )
        self._plan = (uid, rows, device_scores, None)
        if self.fit_weight:
            node_scores = node_scores - self.fit_weight * self._leftover(table, rows, host)
        return numpy().round(node_scores, 6).tolist()

    def _leftover(self, table: DeviceTable, rows: Any, host: tuple[Any, Any] | None) -> Any:
        """Free device share plus free CPU share of each node (0…2); what the task itself takes is
        the same everywhere and left out."""
        left = table.remaining[rows].sum(axis=1) / (1000.0 * table.width)
        view = self.cluster.host
        # Read per call: a live cluster's nodes (and so the largest CPU) arrive after the policy starts.
        cpu_scale = float(numpy().max(view.cpu_total)) if view is not None and len(view.cpu_total) else 0.0
        if host is not None and cpu_scale:
            left = left + host[0] / cpu_scale
        return left

    def score_device(self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any]) -> float:
        table = self._table(request.vendor)
        uid = pod_uid(pod)
        position = table.positions.get(device.device.id)
        if self._plan is not None and self._plan[0] == uid and position is not None:
            _, rows, scores, index = self._plan
            if index is None:
                index = numpy().full(len(table.names), -1, dtype=numpy().int64)
                index[rows] = numpy().arange(len(rows))
                self._plan = (uid, rows, scores, index)
            i = int(index[position[0]]) if position[0] < len(index) else -1
            if i >= 0:
                return round(float(scores[i, position[1]]), 6)
        return self._score_alone(table, request, device, pod)

    def _score_alone(self, table: DeviceTable, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any]) -> float:
        """A device scored without its node's context (no node scoring preceded it for this pod)."""
        np = numpy()
        task_host = pod_host_request(pod)
        self.book.observe(pod_uid(pod), request, pod, task_host)
        single = DeviceTable(request.vendor, 1)
        single.models, single.representatives = table.models, table.representatives
        rows = single.sync([NodeUsage("device", [device])])
        table.model_index(device.device)
        tables = self._current(table)
        need, allowed, _ = self._task(table, request, pod)
        _, scores = score_placements(
            tables,
            single.remaining[rows],
            single.usable[rows],
            single.model[rows],
            single.present[rows],
            single.slots[rows],
            need,
            allowed,
            1,
            None,
            task_host,
        )
        return round(float(np.max(scores)), 6)

    @staticmethod
    def _any_vendor(nodes: Sequence[NodeUsage]) -> str | None:
        for node in nodes:
            for usage in node.devices:
                return usage.device.vendor
        return None


class FgdNodePolicy(NodePolicy):
    name = NAME
    description = "fragmentation gradient descent: the node whose expected unusable capacity grows least"

    def __init__(self, fgd: Fgd | None = None) -> None:
        self.fgd = fgd or Fgd()

    def score_nodes(self, nodes: Sequence[NodeUsage], context: ScoreContext) -> list[float]:
        self.fgd.bind(context.cluster)
        return self.fgd.score_nodes(nodes, context.requests, context.pod)

    def score_node(self, node: NodeUsage, context: ScoreContext) -> float:
        return self.score_nodes([node], context)[0]


class FgdDevicePolicy(DevicePolicy):
    name = NAME
    description = "fragmentation gradient descent: the device whose use fragments least"

    def __init__(self, fgd: Fgd | None = None) -> None:
        self.fgd = fgd or Fgd()

    def score_device(self, device: DeviceUsage, context: DeviceScoreContext) -> float:
        self.fgd.bind(context.cluster)
        return self.fgd.score_device(context.request, device, context.pod)


def fgd_policies() -> list[NodePolicy | DevicePolicy]:
    """The node and device policies, sharing one learner (device scores reuse the node scoring's)."""
    fgd = Fgd()
    return [FgdNodePolicy(fgd), FgdDevicePolicy(fgd)]
