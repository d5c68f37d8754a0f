"""The backend contract: pluggy markers shared by the core and every backend."""

from __future__ import annotations

import pluggy

PROJECT = "hami"
ENTRY_POINT_GROUP = "hami.backends"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["ENTRY_POINT_GROUP", "PROJECT", "hookimpl", "hookspec"]
