"""The core's own scoring policies, offered through ``hami_policies`` like a third party's.

One :class:`BuiltinPolicies` plugin is instantiated per manager, and with it one object per policy:
some keep state (a learnt task distribution, a random generator), which must not leak between
managers. Nothing here imports the scheduler or the simulator: policies see model values and the
:class:`hami.plugin.policy.ClusterView` they are called with.
"""

from __future__ import annotations

from hami.plugin import hookimpl
from hami.plugin.policy import Policy
from hami.policies.bestfit import bestfit_policies
from hami.policies.fgd import fgd_policies
from hami.policies.placement import placement_policies
from hami.policies.randomfit import random_policies
from hami.policies.usage import usage_policies


class BuiltinPolicies:
    """binpack, spread (HAMi's), random, bestfit and fgd, at node and device level; HAMi's numa,
    mutex and topology-aware at device level."""

    def __init__(self) -> None:
        self.policies: list[Policy] = [*usage_policies(), *placement_policies(), *random_policies(), *bestfit_policies(), *fgd_policies()]

    @hookimpl
    def hami_policies(self) -> list[Policy]:
        return list(self.policies)


BUILTIN_PLUGINS: dict[str, type] = {"hami.policies": BuiltinPolicies}
"""Registered by every :class:`hami.plugin.manager.BackendManager` (``builtins=True``), by name."""

__all__ = ["BUILTIN_PLUGINS", "BuiltinPolicies"]
