"""Best-fit: the node (and device) left with the least free capacity after the task lands.

As in the openb paper's baseline, a node's leftover is ``½·CPU left/CPU scale + ½·GPU left/GPU
scale`` when a host view gives CPU (device capacity alone otherwise); nodes where the task cannot
fit score lowest so the scheduler's walk stops at the first node that does. The device is the
fitting one with the least share left over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hami.plugin import hookimpl
from hami.plugin.model import DeviceRequest, DeviceUsage, NodeUsage, PolicyInfo
from hami.policies.context import PolicyContext, pod_host_request, selector_signature
from hami.policies.devicetable import (
    MILLI,
    Admission,
    DeviceTable,
    free_milli,
    need_milli,
    numpy,
    primary_request,
)

NAME = "bestfit"
INFEASIBLE = -1e18


class BestFitPolicy:
    """The ``bestfit`` node and device policies."""

    def __init__(self) -> None:
        self.attach(PolicyContext())

    def attach(self, context: PolicyContext) -> None:
        self.context = context
        self.tables: dict[str, DeviceTable] = {}
        self.admission = Admission()
        self.admission.manager = context.manager

    def _table(self, vendor: str) -> DeviceTable:
        table = self.tables.get(vendor)
        if table is None:
            table = self.tables[vendor] = DeviceTable(vendor)
            table.set_host(self.context.host)
        return table

    @hookimpl
    def hami_scoring_policies(self) -> list[PolicyInfo]:
        return [
            PolicyInfo(NAME, "node", "best-fit: the node left with the least free CPU and device capacity"),
            PolicyInfo(NAME, "device", "best-fit: the device left with the least free share"),
        ]

    @hookimpl
    def hami_score_nodes(self, policy: str, nodes: Sequence[NodeUsage], requests: Sequence[DeviceRequest], pod: Mapping[str, Any]) -> list[float] | None:
        if policy != NAME:
            return None
        np = numpy()
        request = primary_request(requests)
        vendor = request.vendor if request is not None else next((u.device.vendor for n in nodes for u in n.devices), None)
        if vendor is None:
            return [0.0] * len(nodes)
        table = self._table(vendor)
        rows = table.sync(nodes)
        remaining, usable, present = table.remaining[rows], table.usable[rows], table.present[rows]
        model = table.model[rows]
        gpu_scale = MILLI * table.width
        if request is None:
            taken = np.zeros(len(rows))
            feasible = np.ones(len(rows), dtype=bool)
        else:
            need = table.representative_needs(request)
            allowed = self.admission.allowed(table, request, pod, selector_signature(pod))
            model_c = np.minimum(model, len(need) - 1)
            d = need[model_c]
            fits = present & allowed[np.minimum(model, len(allowed) - 1)] & (usable >= d)
            feasible = fits.sum(axis=1) >= request.count
            taken = np.sort(np.where(fits, d, 0), axis=1)[:, ::-1][:, : request.count].sum(axis=1)
        leftover = 0.5 * (remaining.sum(axis=1) - taken) / gpu_scale
        host = table.host_free(rows)
        if host is not None:
            cpu_t, mem_t = pod_host_request(pod)
            feasible = feasible & (host[0] >= cpu_t) & (host[1] >= mem_t)
            cpu_scale = float(np.max(self.context.host.cpu_total)) or 1.0
            leftover = leftover + 0.5 * (host[0] - cpu_t) / cpu_scale
        return np.round(np.where(feasible, -leftover, INFEASIBLE), 9).tolist()

    @hookimpl
    def hami_score_node(self, policy: str, node: NodeUsage, requests: Sequence[DeviceRequest], pod: Mapping[str, Any]) -> float | None:
        if policy != NAME:
            return None
        return self.hami_score_nodes(policy, [node], requests, pod)[0]

    @hookimpl
    def hami_score_device(self, policy: str, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any]) -> float | None:
        if policy != NAME:
            return None
        return -float(free_milli(device) - need_milli(request, device.device))
