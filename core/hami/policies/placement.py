"""HAMi's device policies beyond binpack and spread (pkg/util/types.go, pkg/scheduler/policy/gpu_policy.go,
v2.10): ``numa``, ``mutex`` and ``topology-aware``, usable alone or in a comma list.

HAMi sorts a node's devices and its device ``Fit`` walks them from the end, so the last in sort
order is taken first; expressed as "higher is better" scores:

* ``numa``: the highest-numbered NUMA node's devices first (``lessByChain`` sorts NUMA nodes in increasing order), which
  keeps a container's devices together on one NUMA node; in a list it is one sort key among others;
* ``mutex``: only idle devices (``Fit``: ``isMutex && dev.Used > 0`` is an
  ``ExclusiveDeviceAllocateConflict``), ordered by NUMA node like HAMi's sort; in a list it filters only;
* ``topology-aware``: the owning backend chooses the best-connected devices (HAMi's pkg/device/nvidia/device.go
  ``Fit``: ``computeBestCombination`` over its pair scores) through ``hami_select_devices``, for single-device
  requests too (there HAMi's ``computeWorstSingleCard`` takes the worst-connected card, keeping the
  well-connected groups free); the devices it chooses among are scored like ``spread`` (HAMi's
  ``Less`` falls back to spread for it); in a list it selects only.
"""

from __future__ import annotations

from hami.plugin.model import DeviceUsage
from hami.plugin.policy import DevicePolicy, DeviceScoreContext, Policy
from hami.policies.usage import UsageDevicePolicy


class NumaPolicy(DevicePolicy):
    name = "numa"
    description = "devices of one NUMA node together, the highest-numbered node first (HAMi's numa)"

    def score_device(self, device: DeviceUsage, context: DeviceScoreContext) -> float:
        return float(device.device.numa)


class MutexPolicy(DevicePolicy):
    name = "mutex"
    description = "only devices nobody uses (HAMi's mutex)"
    sort_key = False

    def score_device(self, device: DeviceUsage, context: DeviceScoreContext) -> float:
        return float(device.device.numa)

    def refuse(self, device: DeviceUsage, context: DeviceScoreContext) -> str | None:
        return "ExclusiveDeviceAllocateConflict" if device.used > 0 else None


class TopologyAwarePolicy(DevicePolicy):
    name = "topology-aware"
    description = "the best-connected devices, as the owning backend chooses them (HAMi's topology-aware); spread otherwise"
    sort_key = False
    selects = True

    def __init__(self) -> None:
        self._spread = UsageDevicePolicy("spread", -1.0, "")

    def score_device(self, device: DeviceUsage, context: DeviceScoreContext) -> float:
        return self._spread.score_device(device, context)


def placement_policies() -> list[Policy]:
    return [NumaPolicy(), MutexPolicy(), TopologyAwarePolicy()]
