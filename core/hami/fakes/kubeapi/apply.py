"""Server-side apply and ``managedFields``: who owns which field, and conflicts between managers.

A field set is a set of paths; a path is a tuple of elements in ``fieldsV1`` spelling: ``f:<field>``,
``k:{"name":"c"}`` for an item of a list keyed by its merge key (containers by name, conditions by
type …, the same table strategic merge uses), ``v:<json>`` for a member of a set list
(finalizers), and ``.`` for "the item itself". Other lists are atomic: one leaf.

The rules (a simplified structured-merge-diff, the library behind kube-apiserver's apply):

* **Apply** (``PATCH application/apply-patch+yaml``, a ``fieldManager`` is required): the manager
  owns exactly the fields of its configuration. A field in it that another manager owns with a
  different live value is a conflict: ``409`` with one ``FieldManagerConflict`` cause per field, or,
  with ``force=true``, the field changes hands. Fields the manager applied before but left out now
  are removed unless someone else owns them too.
* **Update** (create, PUT, other PATCHes) of an object that has ``managedFields``: the writing
  manager (``fieldManager`` or the User-Agent's first word, as kube-apiserver's default) gains every
  field it set or changed; other managers lose the fields it changed.
* An object written only by updates carries no ``managedFields`` (like one created before apply
  existed); the first apply hands its fields to ``before-first-apply``, as the real server does, so an
  apply that changes them conflicts instead of silently taking them.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from typing import Any

from hami.fakes.kubeapi import errors
from hami.fakes.kubeapi.errors import StatusError
from hami.fakes.kubeapi.patch import MERGE_KEYS, MERGED_SCALAR_LISTS
from hami.fakes.kubeapi.resources import ResourceType

Path = tuple[str, ...]
BEFORE_FIRST_APPLY = "before-first-apply"
# set by the server, never owned (structured-merge-diff strips them before computing sets)
_IGNORED_META = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _item_key(field: str, item: Any) -> str | None:
    key = MERGE_KEYS.get(field)
    if key is None or not isinstance(item, dict) or key not in item:
        return None
    return "k:" + json.dumps({key: item[key]}, separators=(",", ":"))


def leaves(obj: dict[str, Any], info: ResourceType, subresource: str | None = None) -> dict[Path, Any]:
    """Every owned path of ``obj`` and its value (``.`` markers map to None).

    ``status`` counts only for the status subresource of kinds that have one, and only ``status``
    counts there (the main resource resets it)."""
    out: dict[Path, Any] = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if info.status_subresource and (key == "status") != (subresource == "status"):
            continue
        if key == "metadata" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _IGNORED_META}
            if not value:
                continue
        _walk(value, ("f:" + key,), key, out)
    return out


def _walk(value: Any, path: Path, field: str, out: dict[Path, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _walk(child, (*path, "f:" + key), key, out)
        return
    if isinstance(value, list) and value:
        keys = [_item_key(field, item) for item in value]
        if all(keys) and len(set(keys)) == len(keys):
            for item, elem in zip(value, keys, strict=True):
                assert elem is not None
                marker = (*path, elem, ".")
                out[marker] = None
                for key, child in item.items():
                    _walk(child, (*path, elem, "f:" + key), key, out)
            return
        if field in MERGED_SCALAR_LISTS and all(isinstance(v, (str, int, float, bool)) for v in value):
            for item in value:
                member = (*path, "v:" + json.dumps(item))
                out[member] = item
            return
    out[path] = copy.deepcopy(value)


# ---------------------------------------------------------------- fieldsV1 <-> paths


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for elem in path:
            node = node.setdefault(elem, {})
    return tree


def from_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(tree, dict):
        return out
    for elem, child in tree.items():
        path = (*prefix, elem)
        if isinstance(child, dict) and child:
            out |= from_fields_v1(child, path)
        else:
            out.add(path)
    return out


def readable(path: Path) -> str:
    """``.spec.containers[name="c"].image``: how kube-apiserver names a field in a conflict."""
    text = ""
    for elem in path:
        if elem == ".":
            continue
        kind, _, rest = elem.partition(":")
        if kind == "f":
            text += "." + rest
        elif kind == "k":
            text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(rest).items()) + "]"
        else:
            text += f"[={rest}]"
    return text


# ---------------------------------------------------------------- editing objects by path


def _find(items: list[Any], elem: str) -> int | None:
    wanted = json.loads(elem[2:])
    for i, item in enumerate(items):
        if isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items()):
            return i
    return None


def _set(obj: dict[str, Any], path: Path, value: Any) -> None:
    node: Any = obj
    for i, elem in enumerate(path):
        last = i == len(path) - 1
        if elem == ".":
            return
        if elem.startswith("f:"):
            name = elem[2:]
            if last:
                node[name] = copy.deepcopy(value)
                return
            following = path[i + 1]
            if not isinstance(node.get(name), (dict if following.startswith("f:") else list)):
                node[name] = {} if following.startswith("f:") else []
            node = node[name]
        elif elem.startswith("k:"):
            index = _find(node, elem)
            if index is None:
                node.append(dict(json.loads(elem[2:])))
                index = len(node) - 1
            node = node[index]
        else:  # v:
            if value not in node:
                node.append(value)
            return


def _delete(obj: dict[str, Any], path: Path) -> None:
    parents: list[tuple[Any, str]] = []
    node: Any = obj
    for elem in path:
        if elem == ".":
            break
        if elem.startswith("f:"):
            if not isinstance(node, dict) or elem[2:] not in node:
                return
            parents.append((node, elem))
            node = node[elem[2:]]
        elif elem.startswith("k:"):
            index = _find(node, elem) if isinstance(node, list) else None
            if index is None:
                return
            parents.append((node, elem))
            node = node[index]
        else:
            value = json.loads(elem[2:])
            if isinstance(node, list) and value in node:
                node.remove(value)
            return
    if not parents:
        return
    container, elem = parents[-1]
    if elem.startswith("f:"):
        container.pop(elem[2:], None)
    else:
        index = _find(container, elem)
        if index is not None:
            container.pop(index)


# ---------------------------------------------------------------- managers


def _entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    entries = (obj.get("metadata") or {}).get("managedFields") or []
    return [e for e in entries if isinstance(e, dict)]


def _entry(manager: str, operation: str, info: ResourceType, paths: set[Path], subresource: str | None) -> dict[str, Any]:
    out = {
        "manager": manager,
        "operation": operation,
        "apiVersion": info.api_version,
        "time": _now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }
    if subresource:
        out["subresource"] = subresource
    return out


def _same(entry: dict[str, Any], manager: str, operation: str, subresource: str | None) -> bool:
    return (entry.get("manager"), entry.get("operation"), entry.get("subresource") or None) == (manager, operation, subresource)


def apply(
    info: ResourceType,
    live: dict[str, Any] | None,
    config: dict[str, Any],
    manager: str,
    force: bool,
    subresource: str | None = None,
) -> dict[str, Any]:
    """The object after ``manager`` applies ``config`` to ``live`` (None: it does not exist yet),
    with its ``managedFields``; raises 409 naming each conflicting field and its owner."""
    applied = leaves(config, info, subresource)
    if live is None:
        new = copy.deepcopy(config)
        new.setdefault("metadata", {})["managedFields"] = [_entry(manager, "Apply", info, set(applied), subresource)]
        return new
    current = leaves(live, info, subresource)
    entries = _entries(live)
    if not entries and current:
        entries = [_entry(BEFORE_FIRST_APPLY, "Update", info, set(leaves(live, info, None)), None)]
        if info.status_subresource and live.get("status"):
            entries.append(_entry(BEFORE_FIRST_APPLY, "Update", info, set(leaves(live, info, "status")), "status"))
    conflicts: list[tuple[str, str, Path]] = []
    owned_by_others: set[Path] = set()
    mine: set[Path] = set()
    kept: list[dict[str, Any]] = []
    for entry in entries:
        paths = from_fields_v1(entry.get("fieldsV1"))
        if (entry.get("subresource") or None) != subresource:
            kept.append(entry)
            continue
        if _same(entry, manager, "Apply", subresource):
            mine = paths
            continue
        clash = {p for p in paths & applied.keys() if p[-1] != "." and p in current and current[p] != applied[p]}
        if clash and force:
            paths -= clash
            entry = {**entry, "fieldsV1": to_fields_v1(paths)}
        for p in sorted(clash):
            conflicts.append((str(entry.get("manager")), str(entry.get("apiVersion") or info.api_version), p))
        owned_by_others |= paths
        if paths:
            kept.append(entry)
    if conflicts and not force:
        raise _conflict(info, (config.get("metadata") or {}).get("name", ""), conflicts)
    new = copy.deepcopy(live)
    for path in sorted(mine - applied.keys() - owned_by_others, key=len, reverse=True):
        _delete(new, path)
    for path, value in applied.items():
        if path[-1] != ".":
            _set(new, path, value)
        else:
            _ensure_item(new, path[:-1])
    for key in ("apiVersion", "kind"):
        if key in config:
            new[key] = config[key]
    kept.append(_entry(manager, "Apply", info, set(applied), subresource))
    new.setdefault("metadata", {})["managedFields"] = kept
    return new


def _ensure_item(obj: dict[str, Any], path: Path) -> None:
    """Make the keyed list item at ``path`` exist (an applied item with only its key)."""
    node: Any = obj
    for i, elem in enumerate(path):
        if elem.startswith("f:"):
            following = path[i + 1] if i + 1 < len(path) else None
            default: Any = [] if following and following.startswith("k:") else {}
            if not isinstance(node.get(elem[2:]), type(default)):
                node[elem[2:]] = default
            node = node[elem[2:]]
        elif elem.startswith("k:"):
            index = _find(node, elem)
            if index is None:
                node.append(dict(json.loads(elem[2:])))
                index = len(node) - 1
            node = node[index]


def _conflict(info: ResourceType, name: str, conflicts: list[tuple[str, str, Path]]) -> StatusError:
    lines = [f'conflict with "{who}" using {version}: {readable(p)}' for who, version, p in conflicts]
    if len(lines) == 1:
        message = f"Apply failed with 1 conflict: {lines[0]}"
    else:
        message = f"Apply failed with {len(lines)} conflicts: " + "\n".join(lines)
    details: dict[str, Any] = {
        "name": name,
        "kind": info.plural,
        "causes": [
            {"reason": "FieldManagerConflict", "message": f'conflict with "{who}" using {version}', "field": readable(p)}
            for who, version, p in conflicts
        ],
    }
    if info.group:
        details["group"] = info.group
    return StatusError(409, "Conflict", message, details)


def track_update(
    info: ResourceType, old: dict[str, Any], new: dict[str, Any], manager: str, subresource: str | None
) -> list[dict[str, Any]] | None:
    """``new``'s managedFields after an update by ``manager``: None when ``old`` has none (the object
    is not field-managed yet)."""
    entries = _entries(old)
    if not entries:
        return None
    before = leaves(old, info, subresource)
    after = leaves(new, info, subresource)
    changed = {p for p in after if p not in before or before[p] != after[p]}
    removed = set(before) - set(after)
    out: list[dict[str, Any]] = []
    mine: set[Path] = set()
    for entry in entries:
        if _same(entry, manager, "Update", subresource):
            mine = from_fields_v1(entry.get("fieldsV1"))
            continue
        if (entry.get("subresource") or None) != subresource:
            out.append(entry)
            continue
        paths = from_fields_v1(entry.get("fieldsV1"))
        left = paths - changed - removed
        if left != paths:
            entry = {**entry, "fieldsV1": to_fields_v1(left)}
        if left:
            out.append(entry)
    mine = (mine | changed) - removed
    if mine:
        out.append(_entry(manager, "Update", info, mine, subresource))
    return out


def manager_from_user_agent(user_agent: str | None) -> str:
    """kube-apiserver's default manager: the User-Agent up to the first ``/`` (``kubectl``,
    ``OpenAPI-Generator``), at most 128 characters."""
    return ((user_agent or "unknown").split("/", 1)[0].strip() or "unknown")[:128]


def check_manager(manager: str) -> None:
    if not manager:
        raise errors.bad_request("PATCH requests with apply-patch content type require a fieldManager")
    if len(manager) > 128:
        raise errors.bad_request(f"fieldManager {manager[:32]!r}… is longer than 128 characters")
