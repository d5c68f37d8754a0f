"""Discovery through a vendor tool, the way every tool-reading backend does it.

A simulated node reads the inventory and runs nothing. On a real node the tool is asked; an absent
tool (:class:`ToolNotFound`) is the normal case on a node without the vendor's cards and is logged
at INFO, a tool that is there and fails (any :class:`BackendError`, a parser's included) at WARNING.
Both give no devices, so the node's other vendors are still discovered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hami.backendkit.inventory import inventory_devices
from hami.backendkit.tools import ToolNotFound
from hami.errors import BackendError
from hami.plugin.model import NodeContext, PhysicalDevice


def tool_devices(
    node: NodeContext,
    config: Mapping[str, Any],
    vendors: Iterable[str],
    read: Callable[[], list[PhysicalDevice]],
    *,
    tool: str,
    log: logging.Logger,
) -> list[PhysicalDevice]:
    """The inventory's devices of ``vendors`` on a simulated node, else ``read()`` (which runs the tool
    and parses it); log events are ``<tool>_absent`` and ``<tool>_failed`` (``-`` read as ``_``)."""
    if node.simulated:
        return inventory_devices(config, node.name, vendors)
    event = tool.replace("-", "_")
    try:
        return read()
    except ToolNotFound as exc:
        log.info("event=%s_absent detail=%r", event, str(exc))
    except BackendError as exc:
        log.warning("event=%s_failed error=%r", event, str(exc))
    return []


def tool_json(text: str, tool: str) -> Any:
    """A tool's JSON output; output that is not JSON (an error message printed instead, a truncated
    document) is a :class:`BackendError` naming the tool and showing the start of what it printed."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BackendError(f"{tool} printed no JSON ({exc}): {text[:120]!r}") from None
