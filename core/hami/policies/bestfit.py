"""Best-fit: the node (and device) left with the least free capacity after the task lands.

As in the openb paper's baseline, a node's leftover is ``½·CPU left/CPU scale + ½·GPU left/GPU
scale`` when a host view gives CPU (device capacity alone otherwise); nodes where the task cannot
fit score lowest so the scheduler's walk stops at the first node that does. The device is the
fitting one with the least share left over.
"""

from __future__ import annotations

from collections.abc import Sequence

from hami.plugin.model import DeviceUsage, NodeUsage
from hami.plugin.policy import ClusterView, DevicePolicy, DeviceScoreContext, NodePolicy, ScoreContext
from hami.policies.context import pod_host_request, selector_signature
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


class BestFitNodePolicy(NodePolicy):
    """The ``bestfit`` node policy; its device tables and admission cache belong to one cluster view."""

    name = NAME
    description = "best-fit: the node left with the least free CPU and device capacity"

    def __init__(self) -> None:
        self._bind(ClusterView())

    def _bind(self, cluster: ClusterView) -> None:
        self.cluster = cluster
        self.tables: dict[str, DeviceTable] = {}
        self.admission = Admission(cluster.device_fits)

    def _table(self, vendor: str) -> DeviceTable:
        table = self.tables.get(vendor)
        if table is None:
            table = self.tables[vendor] = DeviceTable(vendor)
            table.set_host(self.cluster.host)
        return table

    def score_nodes(self, nodes: Sequence[NodeUsage], context: ScoreContext) -> list[float]:
        if context.cluster is not self.cluster:
            self._bind(context.cluster)
        np = numpy()
        pod = context.pod
        request = primary_request(context.requests)
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
        if host is not None and self.cluster.host is not None:
            cpu_t, mem_t = pod_host_request(pod)
            feasible = feasible & (host[0] >= cpu_t) & (host[1] >= mem_t)
            cpu_scale = float(np.max(self.cluster.host.cpu_total)) or 1.0
            leftover = leftover + 0.5 * (host[0] - cpu_t) / cpu_scale
        return np.round(np.where(feasible, -leftover, INFEASIBLE), 9).tolist()

    def score_node(self, node: NodeUsage, context: ScoreContext) -> float:
        return self.score_nodes([node], context)[0]


class BestFitDevicePolicy(DevicePolicy):
    name = NAME
    description = "best-fit: the device left with the least free share"

    def score_device(self, device: DeviceUsage, context: DeviceScoreContext) -> float:
        return -float(free_milli(device) - need_milli(context.request, device.device))


def bestfit_policies() -> list[NodePolicy | DevicePolicy]:
    return [BestFitNodePolicy(), BestFitDevicePolicy()]
