"""HAMi's older Ascend resource names, accepted as aliases of the per-chip names.

Before resource names became per chip, HAMi's README asked for a 910B share as
``huawei.com/Ascend910: 1`` + ``huawei.com/Ascend910-memory: 2000`` (HAMi v2.3,
``pkg/device/ascend/device.go`` flags ``--ascend-name``/``--ascend-memory``), and v2.4-v2.6 called the
910B3 chip ``huawei.com/Ascend910B`` (``charts/hami/templates/scheduler/device-configmap.yaml``,
``commonWord: Ascend910B``); v2.7 and later (v2.10: what we follow) name every chip
(``huawei.com/Ascend910B3``, ``-memory``, ``-core``).

The device plugin advertises only the per-chip name, and kubelet hands a container to a device plugin
only for the resources it advertises (any other extended resource is skipped: the container would
start without an NPU). So the webhook **rewrites** an alias to the per-chip names of the one chip
family it can mean in this cluster, with a warning, and the rest of the system sees an ordinary
per-chip request (same memory and template rules). Which families an alias may mean is the
``resource_aliases`` setting (``{}`` turns aliases off: a pod using one is then refused, naming the
per-chip names); which families the cluster has is ``cluster_chips``, else the node inventory of a
simulated cluster (the sandbox), else every family the alias may mean. More than one candidate left
is refused with the names to choose from: the webhook cannot see which nodes have free chips.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import attrs

from hami.sdk import RequestError, ValidationError, container_resources, load_inventory

PREFIX = "huawei.com/"
FAMILY_910 = ("Ascend910A", "Ascend910B2", "Ascend910B3", "Ascend910B4", "Ascend910B4-1", "Ascend910C")
DEFAULT_ALIASES: dict[str, list[str]] = {"huawei.com/Ascend910": list(FAMILY_910), "huawei.com/Ascend910B": ["Ascend910B3"]}
"""Alias count name -> the chips it may mean; ``<alias>-memory`` is the alias of ``<chip>-memory``."""
NAMES = tuple(name for alias in DEFAULT_ALIASES for name in (alias, f"{alias}-memory"))
"""Every alias resource name the backend declares (the webhook routes pods using them to it)."""


@attrs.frozen
class Rewrite:
    """One container's aliases and the per-chip names they become."""

    chip: str
    limits: Mapping[str, str]
    requests: Mapping[str, str]
    removed: tuple[str, ...]
    why: str


def aliases(config: Mapping[str, Any], chips: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The ``resource_aliases`` setting, checked: known alias names, known chips."""
    raw = config.get("resource_aliases", DEFAULT_ALIASES)
    if raw is None or raw is False:
        return {}
    if not isinstance(raw, Mapping):
        raise ValidationError(f"config resource_aliases={raw!r} must map an alias ({', '.join(DEFAULT_ALIASES)}) to a list of chips")
    out = {}
    for alias, targets in raw.items():
        if alias not in DEFAULT_ALIASES:
            raise ValidationError(f"config resource_aliases: {alias!r} is not one of HAMi's older names ({', '.join(DEFAULT_ALIASES)})")
        if isinstance(targets, str) or not isinstance(targets, Sequence) or not all(t in chips for t in targets):
            raise ValidationError(f"config resource_aliases[{alias!r}]={targets!r} must be a list of chips among {', '.join(chips)}")
        out[alias] = tuple(targets)
    return out


@lru_cache(maxsize=8)
def _inventory_chips(path: str, stamp: float) -> frozenset[str]:
    return frozenset(d.vendor for node in load_inventory(Path(path)) for d in node.devices)


def cluster_chips(config: Mapping[str, Any]) -> frozenset[str] | None:
    """The chip families this cluster has: ``cluster_chips``, else the inventory's, else None (unknown)."""
    listed = config.get("cluster_chips")
    if listed:
        if isinstance(listed, str) or not isinstance(listed, Sequence):
            raise ValidationError(f"config cluster_chips={listed!r} must be a list of chips (e.g. [Ascend910B3])")
        return frozenset(listed)
    inventory = config.get("inventory")
    if inventory:
        path = Path(str(inventory))
        return _inventory_chips(str(path), path.stat().st_mtime if path.exists() else 0.0)
    return None


def rewrite(
    container: Mapping[str, Any], config: Mapping[str, Any], chips: Sequence[str], names: Mapping[str, str] | None = None
) -> Rewrite | None:
    """The per-chip names for the container's aliases, or None when it uses none; a clear
    :class:`RequestError` when aliases are off, or the alias means no chip or several here.
    ``names``: declared resource name -> the name the operator's ``resource_names`` gives it (aliases
    and per-chip names alike); the container, the rewrite and every message use the given names."""
    renamed = names or {}

    def n(name: str) -> str:
        return renamed.get(name, name)

    resources = container_resources(container)
    used = [a for a in NAMES if n(a) in resources]
    if not used:
        return None
    where = f"container {container.get('name')!r}"
    known = aliases(config, chips)
    bases = sorted({n.removesuffix("-memory") for n in used})
    if len(bases) > 1:
        raise RequestError(
            f"{where}: {', '.join(map(n, used))} mix two older names; write one chip's names (e.g. {n(PREFIX + 'Ascend910B3')})"
        )
    base = bases[0]
    if base not in known:
        raise RequestError(
            f"{where}: {n(base)} is HAMi's older resource name and aliases are off (resource_aliases); write the chip's own names, "
            f"e.g. {n(PREFIX + 'Ascend910B3')} and {n(PREFIX + 'Ascend910B3-memory')}"
        )
    present = cluster_chips(config)
    candidates = [c for c in known[base] if present is None or c in present]
    if len(candidates) != 1:
        meant = ", ".join(n(f"{PREFIX}{c}") for c in (candidates or known[base]))
        if not candidates:
            have = ", ".join(sorted(present or ()))
            raise RequestError(f"{where}: {n(base)} may mean {meant}, and this cluster has none of them (cluster_chips: {have})")
        raise RequestError(
            f"{where}: {n(base)} may mean {meant} in this cluster; write the chip's own name (or set the ascend backend's cluster_chips)"
        )
    chip = candidates[0]
    mapping = {n(base): n(f"{PREFIX}{chip}"), n(f"{base}-memory"): n(f"{PREFIX}{chip}-memory")}
    used = [n(a) for a in used]
    clash = sorted(mapping[a] for a in used if mapping[a] in resources)
    if clash:
        raise RequestError(f"{where}: asks for both {n(base)} and {', '.join(clash)}; write only {', '.join(clash)}")
    section = container.get("resources") or {}
    limits = {mapping[n]: str(v) for n, v in (section.get("limits") or {}).items() if n in mapping}
    requests = {mapping[n]: str(v) for n, v in (section.get("requests") or {}).items() if n in mapping}
    why = (
        f"{', '.join(used)}: HAMi's older name{'s' if len(used) > 1 else ''}, rewritten to {', '.join(mapping[n] for n in used)} "
        f"(the one chip family {n(base)} means in this cluster); write those names"
    )
    return Rewrite(chip, limits, requests, tuple(used), why)


def translated(container: Mapping[str, Any], change: Rewrite) -> dict[str, Any]:
    """The container as it reads once the webhook has rewritten it (for the request rules)."""
    section = dict(container.get("resources") or {})
    for key, values in (("limits", change.limits), ("requests", change.requests)):
        kept = {n: v for n, v in (section.get(key) or {}).items() if n not in change.removed}
        if kept or values:
            section[key] = {**kept, **values}
    return {**container, "resources": section}
