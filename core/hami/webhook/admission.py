"""The admission decision: an AdmissionReview (bytes) in, an HTTP status and a JSON body out.

Pure apart from the quota reads, so the standalone server and the scheduler's ``POST /webhook``
share it and tests can call it without a socket. The rules (docs/webhook.md):

- a body that is not an ``admission.k8s.io/v1`` AdmissionReview with a request and a uid is a
  **400** with a ``Status`` body; everything else is a 200 AdmissionReview echoing ``request.uid``;
- CREATE of a pod that sets an annotation only hami writes is **denied** (403), whatever it asks for;
- UPDATE of a pod that adds, changes or removes one is **denied** (403) unless the request's
  ``userInfo.username`` is one of ``config.system_writers`` (the scheduler's and the agents' service
  accounts); any other UPDATE is allowed with no patch after comparing the two annotation maps;
- a pod asking for no resource of an installed backend is allowed **with no patch**;
- a pod naming another scheduler (not ours, not ``default-scheduler``) is left alone;
- otherwise: preset ``spec.nodeName``, privileged containers with shared devices, impossible
  requests (the backends' :class:`~hami.errors.RequestError`) and exceeded ResourceQuotas are
  denied (403); else the backends' defaults and ``spec.schedulerName`` are patched in.

Failure policy: an unexpected exception while reviewing becomes a *denial* with code 500 and the
error in the message (fail-closed for a webhook that answered), because admitting a pod we could not
check could let a forged allocation or an unaccounted device share through. Whether an *unreachable*
webhook fails open is the ``failurePolicy`` of the MutatingWebhookConfiguration, the operator's choice.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from hami.errors import BackendError, HamiError
from hami.plugin.manager import BackendManager
from hami.plugin.model import annotation_declared, frozen_tuple
from hami.webhook.config import KUBE_DEFAULT_SCHEDULER, WebhookConfig
from hami.webhook.quota import RESERVATION_ANNOTATION, QuotaError, QuotaSource, reserve_quota
from hami.wire.annotations import system_pod_annotations

log = logging.getLogger(__name__)

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
SYSTEM_PREFIX = "hami.io/"
SYSTEM_KEY_PREFIXES = ("hami.io/vgpu-devices-",)
SYSTEM_KEY_SUFFIXES = ("-devices-to-allocate", "-devices-allocated")
"""``hami.io/<prefix>-devices-…`` of any vendor, installed here or not, is an allocation record."""

_REASONS = {400: "BadRequest", 403: "Forbidden", 500: "InternalError"}


class BadReview(HamiError, ValueError):
    """The body is not an AdmissionReview we can answer (HTTP 400)."""


@attrs.frozen
class Decision:
    """What admission decided for one request."""

    allowed: bool
    code: int = 200
    message: str = ""
    patch: tuple[Mapping[str, Any], ...] = attrs.field(default=(), converter=frozen_tuple)
    warnings: tuple[str, ...] = attrs.field(default=(), converter=frozen_tuple)

    @classmethod
    def allow(cls, patch: Sequence[Mapping[str, Any]] = (), warnings: Sequence[str] = ()) -> Decision:
        return cls(True, 200, "", tuple(patch), tuple(warnings))

    @classmethod
    def deny(cls, message: str, code: int = 403) -> Decision:
        return cls(False, code, message)

    def response(self, uid: str) -> dict[str, Any]:
        """The AdmissionReview ``response`` object."""
        out: dict[str, Any] = {"uid": uid, "allowed": self.allowed}
        if not self.allowed:
            out["status"] = {
                "status": "Failure",
                "code": self.code,
                "reason": _REASONS.get(self.code, "Forbidden"),
                "message": self.message,
            }
        if self.patch:
            out["patchType"] = "JSONPatch"
            out["patch"] = base64.b64encode(json.dumps(list(self.patch), separators=(",", ":")).encode()).decode()
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


# ------------------------------------------------------------------ the envelope


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def status_body(code: int, message: str) -> bytes:
    """A Kubernetes ``Status`` (what kube-apiserver logs when a webhook answers with an error)."""
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": _REASONS.get(code, "BadRequest"),
            "code": code,
        }
    ).encode()


def parse_review(body: bytes, config: WebhookConfig) -> dict[str, Any]:
    """The review's ``request``; raises :class:`BadReview` naming what is wrong with ``body``."""
    if len(body) > config.max_body_bytes:
        raise BadReview(f"request body of {len(body)} bytes is over the limit of {config.max_body_bytes} bytes")
    if not body.strip():
        raise BadReview("request body is empty; expected an AdmissionReview (admission.k8s.io/v1)")
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadReview(f"request body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(document, dict):
        raise BadReview(f"expected an AdmissionReview object, got a JSON {_json_type(document)}")
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        raise BadReview(
            f"expected apiVersion {API_VERSION!r} and kind {KIND!r}, got {document.get('apiVersion')!r:.80} and "
            f'{document.get("kind")!r:.80} (configure admissionReviewVersions: ["v1"])'
        )
    request = document.get("request")
    if not isinstance(request, dict):
        raise BadReview(f"AdmissionReview.request must be an object, got {_json_type(request)}")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview(f"AdmissionReview.request.uid must be a non-empty string, got {uid!r:.80}")
    if not isinstance(request.get("operation"), str):
        raise BadReview(f"AdmissionReview.request.operation must be a string, got {request.get('operation')!r:.80}")
    return request


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def review(manager: BackendManager, body: bytes, config: WebhookConfig, quota: QuotaSource | None = None) -> tuple[int, bytes]:
    """Answer one ``POST /webhook`` body: ``(HTTP status, JSON body)``; never raises."""
    try:
        request = parse_review(body, config)
    except BadReview as exc:
        log.info("event=webhook_bad_request bytes=%d error=%r", len(body), str(exc))
        return 400, status_body(400, str(exc))
    uid = request["uid"]
    try:
        decision = decide(manager, request, config, quota)
    except Exception as exc:  # fail closed, but answer: a crashed webhook helps nobody
        log.exception("event=webhook_internal_error uid=%s", uid)
        decision = Decision.deny(
            f"internal error in the hami webhook, so the request was denied (fail-closed): {type(exc).__name__}: {str(exc)[:300]}", 500
        )
    log.info(
        "event=webhook_review uid=%s operation=%s pod=%s allowed=%s code=%d patch_ops=%d message=%r",
        uid,
        request.get("operation"),
        _subject(request),
        decision.allowed,
        decision.code,
        len(decision.patch),
        decision.message,
    )
    return 200, json.dumps({"apiVersion": API_VERSION, "kind": KIND, "response": decision.response(uid)}).encode()


def _subject(request: Mapping[str, Any]) -> str:
    obj = request.get("object")
    metadata = (obj.get("metadata") if isinstance(obj, dict) else None) or {}
    if not isinstance(metadata, dict):
        metadata = {}
    name = request.get("name") or metadata.get("name") or (f"{metadata.get('generateName')}*" if metadata.get("generateName") else "")
    return f"{request.get('namespace') or metadata.get('namespace') or ''}/{name}"


# ------------------------------------------------------------------ the decision


def _is_pod(request: Mapping[str, Any]) -> bool:
    kind = request.get("kind")
    if isinstance(kind, dict) and kind.get("kind"):
        return kind.get("kind") == "Pod" and not kind.get("group")
    resource = request.get("resource")
    return isinstance(resource, dict) and resource.get("resource") == "pods" and not resource.get("group")


def decide(manager: BackendManager, request: Mapping[str, Any], config: WebhookConfig, quota: QuotaSource | None = None) -> Decision:
    """The decision for a parsed request (see the module docstring for the rules)."""
    if not _is_pod(request):
        return Decision.allow()
    if request.get("operation") == "UPDATE" and request.get("subResource") in (None, "", "status"):
        return review_update(manager, request, config)
    if request.get("subResource") or request.get("operation") != "CREATE":
        return Decision.allow()  # deletes, bindings, exec and the like are not ours
    pod = request.get("object")
    if not isinstance(pod, dict):
        return Decision.deny(f"AdmissionReview.request.object must be the pod being created, got {_json_type(pod)}", 400)
    metadata = pod.get("metadata")
    namespace = request.get("namespace") or (metadata.get("namespace") if isinstance(metadata, dict) else None) or "default"
    return admit_pod(manager, pod, str(namespace), config, quota)


def _annotation_map(obj: Any, which: str) -> dict[str, Any]:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if annotations is None:
        return {}
    if not isinstance(annotations, dict):
        raise BadReview(f"AdmissionReview.request.{which}.metadata.annotations must be an object, got {_json_type(annotations)}")
    return annotations


def review_update(manager: BackendManager, request: Mapping[str, Any], config: WebhookConfig) -> Decision:
    """System annotations of an existing pod change only by hami's own service accounts: a pod owner
    who edits ``…-devices-allocated`` (or the signature, bind-phase, assigned node) would change what
    the scheduler and the agent believe the pod holds. Cheap for every other UPDATE: two dict reads."""
    try:
        new = _annotation_map(request.get("object"), "object")
        old = _annotation_map(request.get("oldObject"), "oldObject")
    except BadReview as exc:
        return Decision.deny(str(exc), 400)
    if new == old:
        return Decision.allow()
    system_keys = system_pod_annotations(manager.kinds.values())
    declared = manager.pod_annotations
    changed = sorted(k for k in new.keys() | old.keys() if new.get(k) != old.get(k) and is_system_annotation(k, system_keys, declared))
    if not changed:
        return Decision.allow()
    user_info = request.get("userInfo")
    user = user_info.get("username") if isinstance(user_info, dict) else None
    if isinstance(user, str) and user in config.system_writers:
        return Decision.allow()
    log.warning("event=webhook_system_annotation_change_denied user=%r pod=%s keys=%s", user, _subject(request), ",".join(changed))
    return Decision.deny(
        f"user {user!r} may not add, change or remove annotation(s) {', '.join(changed)} of an existing pod: only hami "
        "(its scheduler and node agents) writes them, and they decide which devices the pod holds"
    )


def _shape_error(pod: Mapping[str, Any]) -> str | None:
    """The first field whose JSON type is wrong (kube-apiserver never sends one; other clients might)."""
    metadata = pod.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return f"metadata must be an object, got {_json_type(metadata)}"
    annotations = (metadata or {}).get("annotations")
    if annotations is not None and (not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values())):
        return "metadata.annotations must map strings to strings"
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return f"spec must be an object, got {_json_type(spec)}"
    for field in ("schedulerName", "nodeName"):
        if spec.get(field) is not None and not isinstance(spec[field], str):
            return f"spec.{field} must be a string, got {_json_type(spec[field])}"
    for field in ("initContainers", "containers"):
        containers = spec.get(field)
        if containers is None:
            continue
        if not isinstance(containers, list):
            return f"spec.{field} must be a list, got {_json_type(containers)}"
        for i, container in enumerate(containers):
            where = f"spec.{field}[{i}]"
            if not isinstance(container, dict):
                return f"{where} must be an object, got {_json_type(container)}"
            if container.get("name") is not None and not isinstance(container["name"], str):
                return f"{where}.name must be a string, got {_json_type(container['name'])}"
            for sub in ("resources", "securityContext"):
                if container.get(sub) is not None and not isinstance(container[sub], dict):
                    return f"{where}.{sub} must be an object, got {_json_type(container[sub])}"
            for section in ("limits", "requests"):
                value = (container.get("resources") or {}).get(section)
                if value is not None and not isinstance(value, dict):
                    return f"{where}.resources.{section} must be an object, got {_json_type(value)}"
    return None


def is_system_annotation(key: str, system_keys: frozenset[str], declared: Sequence[str] = ()) -> bool:
    """Pod annotations only hami writes: the scheduler's, the agent's, any vendor's allocation, and
    what a backend writes beside an allocation (``declared``: ``BackendInfo.pod_annotations``)."""
    if key in system_keys or key.startswith(SYSTEM_KEY_PREFIXES) or annotation_declared(key, declared):
        return True
    return key.startswith(SYSTEM_PREFIX) and key.endswith(SYSTEM_KEY_SUFFIXES)


def _escape(token: str) -> str:
    """RFC 6901: ``~`` is ``~0`` and ``/`` is ``~1`` inside a JSON Pointer token."""
    return token.replace("~", "~0").replace("/", "~1")


def _device_resources(manager: BackendManager, container: Mapping[str, Any]) -> list[str]:
    resources = container.get("resources") or {}
    names = {*(resources.get("limits") or {}), *(resources.get("requests") or {})}
    return sorted(n for n in names if isinstance(n, str) and manager.kind_for_resource(n) is not None)


def admit_pod(
    manager: BackendManager, pod: Mapping[str, Any], namespace: str, config: WebhookConfig, quota: QuotaSource | None = None
) -> Decision:
    """The decision for creating ``pod`` in ``namespace``."""
    shape = _shape_error(pod)
    if shape:
        return Decision.deny(f"malformed pod: {shape}", 400)
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    system_keys = system_pod_annotations(manager.kinds.values())
    declared = manager.pod_annotations
    forged = sorted(k for k in annotations if is_system_annotation(k, system_keys, declared))
    if forged:
        return Decision.deny(
            f"the pod sets annotation(s) {', '.join(forged)}, which only hami (its scheduler and node agent) may write; "
            "remove them from the pod"
        )
    spec = pod["spec"]
    containers = [("initContainers", i, c) for i, c in enumerate(spec.get("initContainers") or [])]
    containers += [("containers", i, c) for i, c in enumerate(spec.get("containers") or [])]
    asking = [(field, i, c, names) for field, i, c in containers if (names := _device_resources(manager, c))]
    if not asking:
        return Decision.allow()

    scheduler = spec.get("schedulerName") or ""
    if scheduler not in ("", config.scheduler_name, KUBE_DEFAULT_SCHEDULER):
        log.info("event=webhook_other_scheduler scheduler=%s", scheduler)
        return Decision.allow()
    _, _, first, first_names = asking[0]
    if spec.get("nodeName"):
        return Decision.deny(
            f"spec.nodeName is preset to {spec['nodeName']!r}, but container {first.get('name')!r} requests shared devices "
            f"({', '.join(first_names)}); such pods must be placed by {config.scheduler_name}: remove spec.nodeName "
            "(use a nodeSelector or node affinity instead)"
        )
    for _, _, container, names in asking:
        if (container.get("securityContext") or {}).get("privileged") is True:
            return Decision.deny(
                f"container {container.get('name')!r} is privileged and requests shared devices ({', '.join(names)}); a privileged "
                "container sees every device on the node, so it cannot share one: drop securityContext.privileged or the device resources"
            )

    patch: list[dict[str, Any]] = []
    warnings: list[str] = []
    mutated = copy.deepcopy(dict(pod))
    for field, i, container, _ in asking:
        try:
            manager.container_requests(container, pod)
            defaults = manager.mutate_container(container, pod)
        except BackendError as exc:  # a backend broke the contract: our fault, not the user's
            return Decision.deny(
                f"a device backend failed on container {container.get('name')!r}, so the request was denied (fail-closed): {exc}", 500
            )
        except HamiError as exc:
            message = str(exc)
            where = "" if f"container {container.get('name')!r}" in message else f" in container {container.get('name')!r}"
            return Decision.deny(f"invalid device request{where}: {message}")
        warnings.extend(defaults.warnings)
        patch.extend(_limit_ops(f"/spec/{field}/{i}", container, defaults.limits, mutated["spec"][field][i]))
        patch.extend(_remove_ops(f"/spec/{field}/{i}", defaults.remove, mutated["spec"][field][i]))

    if quota is not None:
        try:
            exceeded, reservation = reserve_quota(manager, mutated, namespace, quota)
        except QuotaError as exc:
            return Decision.deny(f"cannot check ResourceQuota, so the pod was denied: {exc}", 500)
        if exceeded:
            return Decision.deny(exceeded)
        if reservation is not None:  # the pod carries its reservation's token: listed, it ends the reservation
            if isinstance((pod.get("metadata") or {}).get("annotations"), dict):
                patch.append({"op": "add", "path": f"/metadata/annotations/{_escape(RESERVATION_ANNOTATION)}", "value": reservation})
            else:
                patch.append({"op": "add", "path": "/metadata/annotations", "value": {RESERVATION_ANNOTATION: reservation}})

    if scheduler != config.scheduler_name and (scheduler == "" or config.overwrite_default_scheduler):
        patch.insert(
            0, {"op": "replace" if "schedulerName" in spec else "add", "path": "/spec/schedulerName", "value": config.scheduler_name}
        )
    return Decision.allow(patch, warnings)


def _remove_ops(path: str, names: Sequence[str], mutated: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON Patch removing ``names`` from the container's limits and requests (an alias a backend
    rewrote), applied to ``mutated`` as well."""
    ops = []
    resources = mutated.get("resources") or {}
    for section in ("limits", "requests"):
        values = resources.get(section)
        for name in names:
            if isinstance(values, dict) and name in values:
                del values[name]
                ops.append({"op": "remove", "path": f"{path}/resources/{section}/{_escape(name)}"})
    return ops


def _limit_ops(path: str, container: Mapping[str, Any], limits: Mapping[str, str], mutated: dict[str, Any]) -> list[dict[str, Any]]:
    """Minimal JSON Patch setting ``limits`` the container lacks or has at another value (creating
    ``resources``/``limits``; a request of the same resource follows, as Kubernetes requires them
    equal), applied to ``mutated`` (the container in a copy of the pod) as well."""
    resources = container.get("resources")
    present = (resources or {}).get("limits") or {}
    changed = {name: value for name, value in limits.items() if str(present.get(name)) != value}
    if not changed:
        return []
    mutated_resources = mutated.get("resources") or {}
    mutated["resources"] = mutated_resources
    mutated_resources["limits"] = {**(mutated_resources.get("limits") or {}), **changed}
    if not isinstance(resources, dict):  # absent, or null
        return [{"op": "add", "path": f"{path}/resources", "value": {"limits": dict(changed)}}]
    if not isinstance(resources.get("limits"), dict):
        ops = [{"op": "add", "path": f"{path}/resources/limits", "value": dict(changed)}]
    else:  # "add" on an existing member replaces it (RFC 6902)
        ops = [{"op": "add", "path": f"{path}/resources/limits/{_escape(name)}", "value": value} for name, value in changed.items()]
    requests = resources.get("requests")
    if isinstance(requests, dict):
        both = {name: value for name, value in changed.items() if name in requests}
        mutated_resources["requests"] = {**requests, **both}
        ops += [{"op": "add", "path": f"{path}/resources/requests/{_escape(name)}", "value": value} for name, value in both.items()]
    return ops
