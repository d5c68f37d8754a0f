"""hami: share heterogeneous AI accelerators between Kubernetes pods.

The core is vendor-neutral; device support comes from backends found through the
``hami.backends`` entry-point group (see :mod:`hami.plugin.hookspecs`).
"""

from __future__ import annotations

from hami.plugin import hookimpl

__all__ = ["__version__", "hookimpl"]
__version__ = "0.1.0"
