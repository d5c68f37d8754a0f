"""Per-kind write rules that the real registry applies and our code must not get away without.

What is modelled: metadata validation (names, label/annotation types), ``status`` only changing
through the ``/status`` subresource (and only ``status`` changing through it), a new pod starting
``Pending``, pod spec immutability (only images, tolerations, activeDeadlineSeconds,
terminationGracePeriodSeconds and scheduling gates may change; ``spec.nodeName`` only through a
binding), and required pod containers. Everything else (defaulting, admission, quota) is not.
"""

from __future__ import annotations

import copy
import re
from decimal import Decimal
from typing import Any

from hami.fakes.kubeapi.errors import bad_request, invalid
from hami.fakes.kubeapi.resources import ResourceType

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# kinds whose names must be DNS-1123 labels rather than subdomains
_LABEL_NAMED = {"namespaces"}


def check_body(info: ResourceType, obj: Any, subject: str = "object") -> dict[str, Any]:
    """Decode-level checks (400): an object of the right kind with string maps where required."""
    if not isinstance(obj, dict):
        raise bad_request(f"the {subject} must be a JSON object")
    kind = obj.get("kind")
    if kind not in (None, "", info.kind):
        raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({info.kind})")
    api_version = obj.get("apiVersion")
    if api_version not in (None, "", info.api_version):
        raise bad_request(f"the API version in the data ({api_version}) does not match the expected API version ({info.api_version})")
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise bad_request("metadata must be a JSON object")
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise bad_request(f"metadata.{field} must be a map of string keys to string values")
    for field in ("name", "namespace", "generateName", "resourceVersion", "uid"):
        if meta.get(field) is not None and not isinstance(meta[field], str):
            raise bad_request(f"metadata.{field} must be a string")
    if meta.get("finalizers") is not None and not (
        isinstance(meta["finalizers"], list) and all(isinstance(f, str) for f in meta["finalizers"])
    ):
        raise bad_request("metadata.finalizers must be a list of strings")
    for field in ("spec", "status"):
        if obj.get(field) is not None and not isinstance(obj[field], dict):
            raise bad_request(f"{field} must be a JSON object")
    obj["kind"] = info.kind
    obj["apiVersion"] = info.api_version
    return obj


def validate_name(info: ResourceType, name: str) -> None:
    pattern = _DNS1123_LABEL if info.plural in _LABEL_NAMED else _DNS1123_SUBDOMAIN
    limit = 63 if info.plural in _LABEL_NAMED else 253
    if not name:
        raise invalid(
            info.kind, info.group, name, [("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")]
        )
    if len(name) > limit or not pattern.match(name):
        raise invalid(
            info.kind,
            info.group,
            name,
            [
                (
                    "metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": a lowercase RFC 1123 '
                    f"{'label' if limit == 63 else 'subdomain'} must consist of lower case alphanumeric "
                    "characters, '-' or '.', and must start and end with an alphanumeric character",
                )
            ],
        )


_SI = ((18, "E"), (15, "P"), (12, "T"), (9, "G"), (6, "M"), (3, "k"), (0, ""), (-3, "m"), (-6, "u"), (-9, "n"))


def canonical_number(value: int | float) -> str:
    """A JSON number in a quantity field as the API server stores it: ``3000`` -> ``3k``, ``0.5`` ->
    ``500m`` (decimal SI, the largest suffix that keeps the mantissa whole; clients such as kubectl
    send YAML numbers as JSON numbers, and a typed client cannot read a number back)."""
    number = Decimal(str(value))
    if number == 0:
        return "0"
    for exponent, suffix in _SI:
        mantissa = number.scaleb(-exponent)
        if mantissa == mantissa.to_integral_value():
            return f"{int(mantissa)}{suffix}"
    return f"{int(number.scaleb(9).to_integral_value())}n"  # below a nano: rounded, as the server does


def _canonical_map(values: Any) -> None:
    if isinstance(values, dict):
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[key] = canonical_number(value)


def canonical_quantities(info: ResourceType, obj: dict[str, Any]) -> None:
    """Numbers in the quantity maps of pods (container resources), nodes (capacity, allocatable) and
    quotas (hard, used) become quantity strings."""
    if info.key == "pods":
        spec = obj.get("spec") or {}
        for field in ("containers", "initContainers"):
            for c in spec.get(field) or []:
                resources = c.get("resources") if isinstance(c, dict) else None
                if isinstance(resources, dict):
                    _canonical_map(resources.get("limits"))
                    _canonical_map(resources.get("requests"))
    elif info.key == "nodes":
        status = obj.get("status") or {}
        _canonical_map(status.get("capacity"))
        _canonical_map(status.get("allocatable"))
    elif info.key == "resourcequotas":
        _canonical_map((obj.get("spec") or {}).get("hard"))
        _canonical_map((obj.get("status") or {}).get("hard"))
        _canonical_map((obj.get("status") or {}).get("used"))


def prepare_create(info: ResourceType, obj: dict[str, Any]) -> None:
    """Registry ``PrepareForCreate`` + ``Validate`` for the kinds that have rules."""
    canonical_quantities(info, obj)
    if info.key == "pods":
        spec = obj.get("spec") or {}
        containers = spec.get("containers")
        causes: list[tuple[str, str, str]] = []
        if not isinstance(containers, list) or not containers:
            causes.append(("spec.containers", "FieldValueRequired", "Required value"))
        else:
            for i, c in enumerate(containers):
                if not isinstance(c, dict) or not c.get("name"):
                    causes.append((f"spec.containers[{i}].name", "FieldValueRequired", "Required value"))
                if isinstance(c, dict) and not c.get("image"):
                    causes.append((f"spec.containers[{i}].image", "FieldValueRequired", "Required value"))
        if causes:
            raise invalid(info.kind, info.group, obj["metadata"].get("name", ""), causes)
        obj["status"] = {"phase": "Pending", "qosClass": pod_qos_class(spec)}
    elif info.key == "namespaces":
        obj["status"] = {"phase": "Active"}


def prepare_update(info: ResourceType, new: dict[str, Any], old: dict[str, Any], subresource: str | None) -> dict[str, Any]:
    """Registry ``PrepareForUpdate``: which parts of ``new`` the endpoint may change."""
    canonical_quantities(info, new)
    if subresource == "status":
        result = copy.deepcopy(old)
        if new.get("status") is None:
            result.pop("status", None)
        else:
            result["status"] = new["status"]
        return result
    if info.status_subresource:
        if old.get("status") is None:
            new.pop("status", None)
        else:
            new["status"] = copy.deepcopy(old["status"])
    if info.key == "pods":
        _check_pod_spec_update(info, new, old)
    return new


_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")


def _check_pod_spec_update(info: ResourceType, new: dict[str, Any], old: dict[str, Any]) -> None:
    new_spec = copy.deepcopy(new.get("spec") or {})
    old_spec = copy.deepcopy(old.get("spec") or {})
    for field in _POD_MUTABLE:
        new_spec.pop(field, None)
        old_spec.pop(field, None)
    for field in ("containers", "initContainers"):
        for spec in (new_spec, old_spec):
            for c in spec.get(field) or []:
                if isinstance(c, dict):
                    c.pop("image", None)
    if new_spec != old_spec:
        raise invalid(
            info.kind,
            info.group,
            old["metadata"]["name"],
            [
                (
                    "spec",
                    "FieldValueForbidden",
                    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
                    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
                    "(allow it to be set to 1 if it was previously negative)",
                )
            ],
        )


def pod_qos_class(spec: dict[str, Any]) -> str:
    """Simplified ``GetPodQOS``: cpu/memory requests and limits of all containers."""
    containers = [c for c in (spec.get("containers") or []) + (spec.get("initContainers") or []) if isinstance(c, dict)]
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        requests = {k: v for k, v in (res.get("requests") or {}).items() if k in ("cpu", "memory")}
        limits = {k: v for k, v in (res.get("limits") or {}).items() if k in ("cpu", "memory")}
        if requests or limits:
            any_set = True
        if set(limits) != {"cpu", "memory"}:
            guaranteed = False
        for k, v in requests.items():
            if str(limits.get(k)) != str(v):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"
