"""The core's own scoring policies, registered through the same hooks as a third party's."""

from __future__ import annotations

from hami.policies import usage

BUILTIN_PLUGINS = [usage]

__all__ = ["BUILTIN_PLUGINS"]
