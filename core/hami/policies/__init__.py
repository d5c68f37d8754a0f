"""The core's own scoring policies, registered through the same hooks as a third party's.

Modules are shared by every manager; classes are instantiated per manager (they keep state: a
learnt task distribution, a random generator).
"""

from __future__ import annotations

from hami.policies import usage
from hami.policies.bestfit import BestFitPolicy
from hami.policies.fgd import FgdPolicy
from hami.policies.randomfit import RandomPolicy

BUILTIN_PLUGINS = [usage, RandomPolicy, BestFitPolicy, FgdPolicy]

__all__ = ["BUILTIN_PLUGINS"]
