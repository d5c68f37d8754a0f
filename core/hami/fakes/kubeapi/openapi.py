"""OpenAPI v2/v3 documents for the kinds this server holds, generated from the ``kubernetes`` client.

The client's generated models carry ``openapi_types`` (python attribute -> ``str``, ``int``,
``List[V1Container]``, ``Dict[str, str]``, ``datetime``, ``object`` …), ``attribute_map`` (python
attribute -> JSON name) and pydantic field descriptions: enough to rebuild definitions with
properties, types, ``$ref``\\ s and descriptions without shipping a copy of upstream's spec. On top
come what kubectl reads: ``x-kubernetes-group-version-kind`` on top-level kinds and their PATCH
operations (client-side validation defers to the server when a PATCH lists ``fieldValidation``),
patch strategies and merge keys (client-side ``kubectl apply`` computes strategic merge patches from
them) and descriptions (``kubectl explain``).

Everything is built on the first request and cached: importing the client's models takes a moment,
so a server that nobody asks for OpenAPI never pays for it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import Any

from hami.fakes.kubeapi.patch import MERGE_KEYS, MERGED_SCALAR_LISTS
from hami.fakes.kubeapi.resources import RESOURCES, ResourceType, git_version

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_META_TYPES = frozenset(
    {
        "ObjectMeta",
        "ListMeta",
        "OwnerReference",
        "ManagedFieldsEntry",
        "LabelSelector",
        "LabelSelectorRequirement",
        "Condition",
        "Status",
        "StatusDetails",
        "StatusCause",
        "DeleteOptions",
        "Preconditions",
    }
)
_PACKAGES = {
    "": "core",
    "coordination.k8s.io": "coordination",
    "events.k8s.io": "events",
    "admissionregistration.k8s.io": "admissionregistration",
    "resource.k8s.io": "resource",
}
_CLASS_PREFIX = re.compile(r"^(?:[A-Z][a-z]+)?V\d+(?:alpha\d+|beta\d+)?(?=[A-Z])")
_LIST = re.compile(r"^List\[(.+)\]$")
_DICT = re.compile(r"^Dict\[str, (.+)\]$")
_SCALARS: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer", "format": "int64"},
    "float": {"type": "number", "format": "double"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "bytes": {"type": "string", "format": "byte"},
    "object": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
}


def _client() -> Any:
    import kubernetes.client

    return kubernetes.client


def model_class(info: ResourceType, list_kind: bool = False) -> Any:
    """The client's model class for a served kind (``CoreV1Event`` before ``V1Event``)."""
    client = _client()
    suffix = "List" if list_kind else ""
    prefix = _PACKAGES[info.group].capitalize()
    version = info.version.capitalize()
    for name in (f"{prefix}{version}{info.kind}{suffix}", f"{version}{info.kind}{suffix}"):
        cls = getattr(client, name, None)
        if cls is not None and hasattr(cls, "openapi_types"):
            return cls
    raise LookupError(f"the kubernetes client has no model for {info.api_version} {info.kind}{suffix}")


def _short(cls_name: str) -> str:
    return _CLASS_PREFIX.sub("", cls_name)


def _doc(cls: Any) -> str:
    text = (cls.__doc__ or "").split("Attributes:", 1)[0]
    text = " ".join(text.split())
    return text or f"{_short(cls.__name__)} of the Kubernetes API."


class _Builder:
    """Collects the definitions reachable from some kinds, named ``io.k8s.api.<pkg>.<version>.<Kind>``."""

    def __init__(self, ref_prefix: str) -> None:
        self.ref_prefix = ref_prefix
        self.schemas: dict[str, dict[str, Any]] = {}
        self._names: dict[str, str] = {}  # class name -> definition name

    def name_of(self, cls: Any, package: str) -> str:
        known = self._names.get(cls.__name__)
        if known:
            return known
        short = _short(cls.__name__)
        name = f"{META}.{short}" if short in _META_TYPES else f"{package}.{short}"
        if name in self.schemas:  # two client classes with one short name: keep them apart
            name = f"{package}.{cls.__name__}"
        self._names[cls.__name__] = name
        return name

    def add(self, cls: Any, package: str) -> str:
        name = self.name_of(cls, package)
        if name in self.schemas:
            return name
        schema: dict[str, Any] = {"description": _doc(cls), "type": "object", "properties": {}}
        self.schemas[name] = schema
        fields = getattr(cls, "model_fields", {})
        required = []
        for attr, type_name in cls.openapi_types.items():
            json_name = cls.attribute_map[attr]
            field = fields.get(attr)
            prop = self._type(type_name, package, json_name)
            prop.pop("description", None)
            description = getattr(field, "description", None) or f"{json_name} of the {_short(cls.__name__)}."
            prop = {"description": description, **prop}
            schema["properties"][json_name] = prop
            if field is not None and field.is_required():
                required.append(json_name)
        if required:
            schema["required"] = required
        return name

    def _type(self, type_name: str, package: str, json_name: str) -> dict[str, Any]:
        if type_name in _SCALARS:
            return dict(_SCALARS[type_name])
        match = _LIST.match(type_name)
        if match:
            items = self._type(match.group(1), package, "")
            items.pop("description", None)
            is_model = "allOf" in items
            if is_model:
                items = items["allOf"][0]
            out: dict[str, Any] = {"type": "array", "items": items}
            if json_name in MERGE_KEYS and is_model:
                out.update(
                    {
                        "x-kubernetes-patch-merge-key": MERGE_KEYS[json_name],
                        "x-kubernetes-patch-strategy": "merge",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": [MERGE_KEYS[json_name]],
                    }
                )
            elif json_name in MERGED_SCALAR_LISTS:
                out.update({"x-kubernetes-patch-strategy": "merge", "x-kubernetes-list-type": "set"})
            else:
                out["x-kubernetes-list-type"] = "atomic"
            return out
        match = _DICT.match(type_name)
        if match:
            values = self._type(match.group(1), package, "")
            values.pop("description", None)
            return {"type": "object", "additionalProperties": values}
        cls = getattr(_client(), type_name, None)
        if cls is None or not hasattr(cls, "openapi_types"):
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        name = self.add(cls, package)
        return {"allOf": [{"$ref": self.ref_prefix + name}], "default": {}}


def _gvk(info: ResourceType, kind: str) -> dict[str, str]:
    return {"group": info.group, "kind": kind, "version": info.version}


_PATCH_TYPES = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
_QUERY = {
    "fieldValidation": "How unknown or duplicate fields in the body are treated: Ignore, Warn or Strict.",
    "fieldManager": "The name of the actor making the change (field ownership).",
    "dryRun": "Not supported by this server (refused).",
    "pretty": "Ignored (answers are compact JSON).",
}


def _param(name: str, v3: bool, kind: str = "string") -> dict[str, Any]:
    param = {"name": name, "in": "query", "description": _QUERY.get(name, name), "uniqueItems": True}
    if v3:
        param["schema"] = {"type": kind}
    else:
        param["type"] = kind
    return param


def _operation(
    info: ResourceType, action: str, verb: str, kind: str, ref: str | None, v3: bool, body_types: tuple[str, ...] = ()
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "description": f"{action} {kind}",
        "operationId": f"{verb}{info.kind}",
        "tags": [f"{_PACKAGES[info.group]}_{info.version}"],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(info, info.kind),
        "parameters": [],
    }
    if action in ("post", "put", "patch"):
        op["parameters"] += [_param("fieldValidation", v3), _param("fieldManager", v3), _param("dryRun", v3)]
        if action == "patch":
            op["parameters"].append(_param("force", v3, "boolean"))
    response_schema = {"$ref": ref} if ref else {"type": "object"}
    if v3:
        if body_types:
            op["requestBody"] = {
                "content": {t: {"schema": response_schema if action != "patch" else {"type": "object"}} for t in body_types},
                "required": True,
            }
        op["responses"] = {"200": {"description": "OK", "content": {"application/json": {"schema": response_schema}}}}
    else:
        if body_types:
            op["consumes"] = list(body_types)
            op["parameters"].append({"name": "body", "in": "body", "required": True, "schema": response_schema})
        op["produces"] = ["application/json", "application/yaml"]
        op["responses"] = {"200": {"description": "OK", "schema": response_schema}}
    return op


def _paths(info: ResourceType, item_ref: str, list_ref: str, v3: bool) -> dict[str, dict[str, Any]]:
    root = f"/apis/{info.group}/{info.version}" if info.group else "/api/v1"
    base = f"{root}/namespaces/{{namespace}}/{info.plural}" if info.namespaced else f"{root}/{info.plural}"
    json_body = ("application/json", "application/yaml")
    collection = {
        "get": _operation(info, "list", "list", f"{info.kind}List", list_ref, v3),
        "post": _operation(info, "post", "create", info.kind, item_ref, v3, json_body),
        "delete": _operation(info, "deletecollection", "deleteCollection", info.kind, None, v3),
    }
    item = {
        "get": _operation(info, "get", "read", info.kind, item_ref, v3),
        "put": _operation(info, "put", "replace", info.kind, item_ref, v3, json_body),
        "patch": _operation(info, "patch", "patch", info.kind, item_ref, v3, _PATCH_TYPES),
        "delete": _operation(info, "delete", "delete", info.kind, None, v3),
    }
    paths = {base: collection, f"{base}/{{name}}": item}
    if info.namespaced:
        paths[f"{root}/{info.plural}"] = {"get": _operation(info, "list", "listForAllNamespaces", f"{info.kind}List", list_ref, v3)}
    if info.status_subresource:
        paths[f"{base}/{{name}}/status"] = {
            k: _operation(info, k if k != "get" else "get", f"{k}Status", info.kind, item_ref, v3, body)
            for k, body in (("get", ()), ("put", json_body), ("patch", _PATCH_TYPES))
        }
    return paths


def _build(members: list[ResourceType], v3: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    builder = _Builder("#/components/schemas/" if v3 else "#/definitions/")
    paths: dict[str, Any] = {}
    for info in members:
        package = f"io.k8s.api.{_PACKAGES[info.group]}.{info.version}"
        item = builder.add(model_class(info), package)
        builder.schemas[item]["x-kubernetes-group-version-kind"] = [_gvk(info, info.kind)]
        items = builder.add(model_class(info, list_kind=True), package)
        builder.schemas[items]["x-kubernetes-group-version-kind"] = [_gvk(info, f"{info.kind}List")]
        paths.update(_paths(info, builder.ref_prefix + item, builder.ref_prefix + items, v3))
    return paths, builder.schemas


def _info() -> dict[str, str]:
    return {"title": "Kubernetes (hami in-memory API server)", "version": git_version()}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def group_versions() -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for r in RESOURCES:
        seen.setdefault((r.group, r.version), None)
    return list(seen)


@functools.cache
def v3_document(group: str, version: str) -> bytes | None:
    """The OpenAPI 3 document of one group/version (``/openapi/v3/api/v1``), or None if not served."""
    members = [r for r in RESOURCES if r.group == group and r.version == version]
    if not members:
        return None
    paths, schemas = _build(members, v3=True)
    doc = {"openapi": "3.0.0", "info": _info(), "paths": paths, "components": {"schemas": schemas}}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


@functools.lru_cache(maxsize=1)
def v3_root() -> bytes:
    """``/openapi/v3``: each group/version and its URL; the hash changes when the document does."""
    paths = {}
    for group, version in group_versions():
        doc = v3_document(group, version)
        assert doc is not None
        digest = hashlib.sha512(doc).hexdigest().upper()
        paths[_gv_path(group, version)] = {"serverRelativeURL": f"/openapi/v3/{_gv_path(group, version)}?hash={digest}"}
    return json.dumps({"paths": paths}, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=1)
def v2_document() -> bytes:
    """``/openapi/v2`` (Swagger 2.0, JSON) for every served kind."""
    paths, schemas = _build(list(RESOURCES), v3=False)
    doc = {"swagger": "2.0", "info": _info(), "paths": paths, "definitions": schemas}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


# ---------------------------------------------------------------- server-side field validation


def unknown_fields(info: ResourceType, obj: Any) -> list[str]:
    """Paths of fields in ``obj`` that the kind's schema does not declare (``spec.containers[0].imagex``),
    as kube-apiserver's strict decoding reports them."""
    out: list[str] = []
    _walk(model_class(info), obj, "", out)
    return out


def _walk(cls: Any, value: Any, path: str, out: list[str]) -> None:
    if not isinstance(value, dict):
        return
    by_json = {cls.attribute_map[a]: t for a, t in cls.openapi_types.items()}
    for key, item in value.items():
        if key.startswith("$"):  # strategic merge patch directives ($patch, $setElementOrder/…)
            continue
        where = f"{path}.{key}" if path else key
        type_name = by_json.get(key)
        if type_name is None:
            out.append(where)
            continue
        _walk_type(type_name, item, where, out)


def _walk_type(type_name: str, value: Any, path: str, out: list[str]) -> None:
    if type_name in _SCALARS:
        return
    match = _LIST.match(type_name)
    if match:
        if isinstance(value, list):
            for i, element in enumerate(value):
                _walk_type(match.group(1), element, f"{path}[{i}]", out)
        return
    match = _DICT.match(type_name)
    if match:
        if isinstance(value, dict):
            for k, element in value.items():
                _walk_type(match.group(1), element, f"{path}.{k}", out)
        return
    cls = getattr(_client(), type_name, None)
    if cls is not None and hasattr(cls, "openapi_types"):
        _walk(cls, value, path, out)
