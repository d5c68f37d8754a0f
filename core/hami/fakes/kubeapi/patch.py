"""The three PATCH dialects kube-apiserver accepts for built-in types.

* ``application/merge-patch+json`` — RFC 7386: objects merge recursively, ``null`` deletes,
  everything else (lists included) replaces.
* ``application/strategic-merge-patch+json`` — merge patch plus Kubernetes' list rules: lists of
  structs with a ``patchMergeKey`` (containers by ``name``, ports by ``containerPort`` …) merge
  element-wise, ``finalizers`` merge as a set, and the ``$patch``/``$retainKeys``/
  ``$deleteFromPrimitiveList`` directives work. Merge keys are chosen by field name, which is
  unambiguous for the resources this server serves.
* ``application/json-patch+json`` — RFC 6902, via the ``jsonpatch`` package.

Errors raise :class:`~hami.fakes.kubeapi.errors.StatusError` with the codes the real server uses:
400 for an undecodable patch, 422 for one that decodes but cannot be applied, 415 for other types.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from hami.fakes.kubeapi.errors import bad_request, unprocessable, unsupported_media_type

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = (MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH)

# field name -> patchMergeKey (from the Go struct tags of core/v1 and meta/v1)
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "addresses": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "schedulingGates": "name",
}
# lists of scalars with patchStrategy "merge": treated as sets
MERGED_SCALAR_LISTS = frozenset({"finalizers"})

_DIRECTIVE = "$patch"
_RETAIN = "$retainKeys"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_ELEMENT_ORDER = "$setElementOrder/"


def normalize_content_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def apply_patch(target: dict[str, Any], patch: Any, content_type: str) -> dict[str, Any]:
    """Apply a decoded JSON ``patch`` to ``target`` (not modified) per ``content_type``."""
    ctype = normalize_content_type(content_type)
    if ctype == JSON_PATCH:
        return apply_json_patch(target, patch)
    if ctype not in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        raise unsupported_media_type(ctype)
    if not isinstance(patch, dict):
        raise bad_request(f"the patch must be a JSON object for {ctype}, got {type(patch).__name__}")
    result = merge_patch(target, patch) if ctype == MERGE_PATCH else strategic_merge_patch(target, patch)
    if not isinstance(result, dict):  # pragma: no cover - a dict patch always yields a dict
        raise bad_request("patch did not produce an object")
    return result


# ---------------------------------------------------------------- RFC 7386


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch(Target, Patch); neither argument is modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------- strategic merge


def strategic_merge_patch(original: Any, patch: dict[str, Any]) -> Any:
    """Kubernetes strategic merge of ``patch`` into ``original``; returns a new value."""
    return _smp_map(copy.deepcopy(original) if isinstance(original, dict) else {}, patch)


def _smp_map(original: dict[str, Any], patch: dict[str, Any]) -> Any:
    directive = patch.get(_DIRECTIVE)
    if directive is not None:
        if directive == "replace":
            return _strip_directives({k: v for k, v in patch.items() if k != _DIRECTIVE})
        if directive == "delete":
            return _DELETED
        raise bad_request(f"Unknown patch type: {directive}")
    retain = patch.get(_RETAIN)
    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN) or key.startswith(_ELEMENT_ORDER):
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE) :]
            if not isinstance(value, list):
                raise bad_request(f"{key} must be a list")
            if isinstance(original.get(field), list):
                original[field] = [x for x in original[field] if x not in value]
            continue
        if value is None:
            original.pop(key, None)
            continue
        current = original.get(key)
        if isinstance(value, dict):
            merged = _smp_map(current if isinstance(current, dict) else {}, value)
            if merged is _DELETED:
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, list):
            original[key] = _smp_list(key, current if isinstance(current, list) else [], value)
        else:
            original[key] = value
    if retain is not None:
        if not isinstance(retain, list):
            raise bad_request("$retainKeys must be a list")
        for key in list(original):
            if key not in retain:
                del original[key]
    return original


class _Deleted:
    """Marker for ``$patch: delete`` on a map."""


_DELETED: Any = _Deleted()


def _smp_list(field: str, original: list[Any], patch: list[Any]) -> list[Any]:
    merge_key = MERGE_KEYS.get(field)
    if any(isinstance(e, dict) and e.get(_DIRECTIVE) == "replace" for e in patch):
        return [_strip_directives(e) for e in patch if not (isinstance(e, dict) and e.get(_DIRECTIVE) == "replace")]
    if field in MERGED_SCALAR_LISTS and all(not isinstance(e, (dict, list)) for e in patch):
        result = list(original)
        for e in patch:
            if e not in result:
                result.append(e)
        return result
    if merge_key is None or not all(isinstance(e, dict) for e in patch):
        return [_strip_directives(e) for e in patch]
    result = [copy.deepcopy(e) for e in original]
    for element in patch:
        directive = element.get(_DIRECTIVE)
        if merge_key not in element:
            raise bad_request(f"map: {element} does not contain declared merge key: {merge_key}")
        key_value = element[merge_key]
        index = next((i for i, e in enumerate(result) if isinstance(e, dict) and e.get(merge_key) == key_value), None)
        if directive == "delete":
            if index is not None:
                del result[index]
            continue
        if directive is not None:
            raise bad_request(f"Unknown patch type: {directive}")
        if index is None:
            result.append(_strip_directives(element))
        else:
            result[index] = _smp_map(result[index], element)
    return result


def _strip_directives(value: Any) -> Any:
    """A patch value inserted as-is: drop directive keys and ``null`` members (a new value has no nulls)."""
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if v is not None and not (k.startswith("$"))}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


# ---------------------------------------------------------------- RFC 6902


def apply_json_patch(target: dict[str, Any], patch: Any) -> dict[str, Any]:
    if not isinstance(patch, list) or not all(isinstance(op, dict) for op in patch):
        raise bad_request("json patch must be a JSON array of operation objects")
    try:
        compiled = jsonpatch.JsonPatch(patch)
    except (jsonpatch.InvalidJsonPatch, TypeError, ValueError) as exc:
        raise bad_request(f"invalid json patch: {exc}") from None
    try:
        result = compiled.apply(target, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, IndexError, TypeError, ValueError) as exc:
        raise unprocessable(f"the server rejected our request due to an error in our request: {exc}") from None
    if not isinstance(result, dict):
        raise unprocessable(
            "the server rejected our request due to an error in our request: json patch replaced the whole object with a non-object"
        )
    return result
