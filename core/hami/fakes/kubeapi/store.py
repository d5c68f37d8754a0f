"""Objects, the cluster-wide resourceVersion, and the watch history — all behind one lock.

Every write takes the lock, compares ``metadata.resourceVersion`` with the stored one, stamps the
next cluster-wide version, records a watch event in a bounded per-resource history and hands the
event to the open watchers of that resource, all atomically: so two racing writers with the same
stale version get exactly one success and one 409, and a watcher registered under the lock sees
every event after its starting version exactly once. Objects are plain JSON dicts, copied on the
way in and out so callers can never alter stored state behind the lock's back.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import logging
import queue
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from hami.fakes.kubeapi import apply as ssa
from hami.fakes.kubeapi import errors, strategy
from hami.fakes.kubeapi.patch import STRATEGIC_MERGE_PATCH, apply_patch
from hami.fakes.kubeapi.resources import (
    DEFAULT_NAMESPACES,
    RESOURCES,
    ResourceType,
    by_key,
)
from hami.fakes.kubeapi.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    field_value,
    parse_field_selector,
    parse_label_selector,
)

log = logging.getLogger(__name__)

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _copy(obj: Any) -> Any:
    """A JSON copy of what a caller hands in: tuples become lists, a value JSON cannot hold is refused."""
    return json.loads(json.dumps(obj))


def _clone(obj: Any) -> Any:
    """A deep copy of a stored object (JSON types only, as :func:`_copy` made them): dicts and lists
    copied, strings and numbers shared. Several times faster than a JSON round trip on objects with
    long annotations (a node's device list), and each write makes three (event, previous, answer)."""
    if type(obj) is dict:
        return {k: (_clone(v) if type(v) in (dict, list) else v) for k, v in obj.items()}
    if type(obj) is list:
        return [(_clone(v) if type(v) in (dict, list) else v) for v in obj]
    return obj


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WatchEvent:
    """One change: ``obj`` is the state after it (for DELETED, the last state), ``old`` the one before."""

    rv: int
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


@dataclass(frozen=True)
class Filter:
    """Which objects a list or watch selects."""

    namespace: str | None = None
    labels: LabelSelector = LabelSelector()
    fields: FieldSelector = FieldSelector()

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        if not self.labels.matches(meta.get("labels")):
            return False
        return self.fields.matches(lambda path: _field(obj, path))

    def translate(self, event: WatchEvent) -> str | None:
        """The event type a filtered watch reports, or None: kube's cacher semantics, where an object
        entering the selection is ADDED and one leaving it is DELETED."""
        new_match = self.matches(event.obj)
        if event.type == ADDED:
            return ADDED if new_match else None
        if event.type == DELETED:
            return DELETED if new_match else None
        old_match = self.matches(event.old)
        if new_match and old_match:
            return MODIFIED
        if new_match:
            return ADDED
        if old_match:
            return DELETED
        return None


def _field(obj: dict[str, Any], path: str) -> str:
    if path == "source" and obj.get("kind") == "Event":
        return field_value(obj, "source.component")
    return field_value(obj, path)


def make_filter(info: ResourceType, namespace: str | None, label_selector: str | None, field_selector: str | None) -> Filter:
    """Parse selectors for ``info``; syntax errors become 400 BadRequest."""
    try:
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, info.field_supported)
    except SelectorError as exc:
        raise errors.bad_request(str(exc)) from None
    return Filter(namespace, labels, fields)


class Watcher:
    """An open watch: the store pushes events into ``queue``; ``None`` there means 'closed'."""

    def __init__(self, info: ResourceType, flt: Filter) -> None:
        self.info = info
        self.filter = flt
        self.queue: queue.SimpleQueue[WatchEvent | None] = queue.SimpleQueue()
        self.abrupt = False
        self.closed = threading.Event()

    def close(self, abrupt: bool = False) -> None:
        if not self.closed.is_set():
            self.abrupt = abrupt
            self.closed.set()
            self.queue.put(None)


def _encode_continue(rv: int, last: tuple[str, str]) -> str:
    raw = json.dumps({"rv": rv, "start": list(last)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        rv, start = int(data["rv"]), data["start"]
        if not (isinstance(start, list) and len(start) == 2 and all(isinstance(s, str) for s in start)):
            raise ValueError("bad start")
        return rv, (start[0], start[1])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise errors.bad_request(f"continue key is not valid: {exc}") from None


class Store:
    """The cluster state. Methods take a resource as ``"pods"``, ``"leases"``, ``"Node"`` … or a
    :class:`ResourceType`; raise :class:`~hami.fakes.kubeapi.errors.StatusError` like the API does."""

    def __init__(self, history_size: int = 1000) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self.history_size = history_size
        self._lock = threading.RLock()
        self._rv = 0
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {r.key: {} for r in RESOURCES}
        self._history: dict[str, deque[WatchEvent]] = {r.key: deque(maxlen=history_size) for r in RESOURCES}
        self._floor: dict[str, int] = {r.key: 0 for r in RESOURCES}
        self._watchers: dict[str, set[Watcher]] = {r.key: set() for r in RESOURCES}
        for ns in DEFAULT_NAMESPACES:
            self.create("namespaces", {"metadata": {"name": ns}})

    # ------------------------------------------------------------ helpers

    @staticmethod
    def resource(resource: str | ResourceType) -> ResourceType:
        return resource if isinstance(resource, ResourceType) else by_key(resource)

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    @staticmethod
    def _ns(info: ResourceType, namespace: str | None) -> str:
        return (namespace or "default") if info.namespaced else ""

    def _get_locked(self, info: ResourceType, ns: str, name: str) -> dict[str, Any]:
        obj = self._objects[info.key].get((ns, name))
        if obj is None:
            raise errors.not_found(info.plural, info.group, name)
        return obj

    def _emit(self, info: ResourceType, event: WatchEvent) -> None:
        history = self._history[info.key]
        if len(history) == history.maxlen:
            self._floor[info.key] = history[0].rv
        history.append(event)
        for w in self._watchers[info.key]:
            # only to the watches it concerns: waking every watch's thread for each event made a pod
            # event cost grow with nodes (each node agent watches its own node's pods)
            if w.filter.translate(event) is not None:
                w.queue.put(event)
        log.debug("%s %s %s rv=%d", event.type, info.key, _ident(event.obj), event.rv)

    def _commit(self, info: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        self._objects[info.key][(meta.get("namespace", ""), meta["name"])] = obj
        self._emit(info, WatchEvent(self._rv, MODIFIED if old else ADDED, _clone(obj), _clone(old) if old else None))
        return _clone(obj)

    def _remove(self, info: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        del self._objects[info.key][(meta.get("namespace", ""), meta["name"])]
        self._rv += 1
        gone = _clone(obj)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._emit(info, WatchEvent(self._rv, DELETED, gone, None))
        return _clone(obj)

    # ------------------------------------------------------------ reads

    def get(self, resource: str | ResourceType, name: str, namespace: str | None = None) -> dict[str, Any]:
        info = self.resource(resource)
        with self._lock:
            return _clone(self._get_locked(info, self._ns(info, namespace), name))

    def items(self, resource: str | ResourceType, namespace: str | None = None) -> list[dict[str, Any]]:
        """All objects of a resource (in one namespace, or all), sorted by namespace and name."""
        info = self.resource(resource)
        with self._lock:
            return [
                _clone(o)
                for k, o in sorted(self._objects[info.key].items())
                if namespace is None or not info.namespaced or k[0] == namespace
            ]

    def list(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> dict[str, Any]:
        """A ``<Kind>List`` document; ``namespace=None`` lists across namespaces."""
        info = self.resource(resource)
        flt = make_filter(info, namespace if info.namespaced else None, label_selector, field_selector)
        if limit is not None and limit < 0:
            raise errors.bad_request("limit must be a non-negative integer")
        start: tuple[str, str] | None = None
        with self._lock:
            list_rv = self._rv
            if continue_token:
                list_rv, start = _decode_continue(continue_token)
            selected: builtins.list[dict[str, Any]] = []
            next_token: str | None = None
            remaining = 0
            for key in sorted(self._objects[info.key]):
                if start is not None and key <= start:
                    continue
                obj = self._objects[info.key][key]
                if not flt.matches(obj):
                    continue
                if limit and len(selected) >= limit:
                    remaining += 1
                    continue
                selected.append(_clone(obj))
            if remaining:
                last = selected[-1]["metadata"]
                next_token = _encode_continue(list_rv, (last.get("namespace", ""), last["name"]))
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if next_token:
            meta["continue"] = next_token
            meta["remainingItemCount"] = remaining
        return {"kind": f"{info.kind}List", "apiVersion": info.api_version, "metadata": meta, "items": selected}

    # ------------------------------------------------------------ writes

    def create(
        self,
        resource: str | ResourceType,
        obj: dict[str, Any],
        namespace: str | None = None,
        *,
        managed_fields: builtins.list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        info = self.resource(resource)
        obj = strategy.check_body(info, _copy(obj))
        meta = obj["metadata"]
        if info.namespaced:
            ns = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") not in (None, "", ns):
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = ns
        else:
            ns = ""
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        for field in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
            "generation",
        ):
            meta.pop(field, None)
        strategy.prepare_create(info, obj)
        if managed_fields is not None:
            meta["managedFields"] = managed_fields
        with self._lock:
            name = meta.get("name") or ""
            if not name and meta.get("generateName"):
                for _ in range(16):
                    candidate = meta["generateName"] + "".join(random.choices(_GENERATE_ALPHABET, k=5))
                    if (ns, candidate) not in self._objects[info.key]:
                        name = candidate
                        break
            strategy.validate_name(info, name)
            meta["name"] = name
            if (ns, name) in self._objects[info.key]:
                raise errors.already_exists(info.plural, info.group, name)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            return self._commit(info, obj, None)

    def replace(
        self,
        resource: str | ResourceType,
        obj: dict[str, Any],
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
        manager: str = "unknown",
    ) -> dict[str, Any]:
        """PUT: replace the object; a non-empty ``metadata.resourceVersion`` must be the current one."""
        info = self.resource(resource)
        obj = strategy.check_body(info, _copy(obj))
        meta = obj["metadata"]
        name = name or meta.get("name") or ""
        if meta.get("name") not in (None, "", name):
            raise errors.bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
        ns = self._ns(info, namespace or meta.get("namespace"))
        if info.namespaced and meta.get("namespace") not in (None, "", ns):
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        with self._lock:
            old = self._get_locked(info, ns, name)
            return self._update_locked(info, old, obj, subresource, manager)

    def patch(
        self,
        resource: str | ResourceType,
        name: str,
        patch: Any,
        content_type: str = STRATEGIC_MERGE_PATCH,
        namespace: str | None = None,
        subresource: str | None = None,
        manager: str = "unknown",
    ) -> dict[str, Any]:
        """PATCH: apply under the lock; a resourceVersion *in the patched result* must be current."""
        info = self.resource(resource)
        ns = self._ns(info, namespace)
        patch = _copy(patch)  # the patch's values end up in the stored object: JSON types only, none of the caller's
        with self._lock:
            old = self._get_locked(info, ns, name)
            patched = apply_patch(old, patch, content_type)
            patched = strategy.check_body(info, patched, "patched object")
            meta = patched["metadata"]
            if meta.get("name") != name:
                raise errors.invalid(
                    info.kind, info.group, name, [("metadata.name", "FieldValueInvalid", "Invalid value: field is immutable")]
                )
            if info.namespaced and meta.get("namespace") != ns:
                raise errors.invalid(
                    info.kind, info.group, name, [("metadata.namespace", "FieldValueInvalid", "Invalid value: field is immutable")]
                )
            return self._update_locked(info, old, patched, subresource, manager)

    def apply(
        self,
        resource: str | ResourceType,
        name: str,
        config: Any,
        manager: str,
        force: bool = False,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Server-side apply (see :mod:`hami.fakes.kubeapi.apply`): returns the object and whether it
        was created."""
        info = self.resource(resource)
        ssa.check_manager(manager)
        if not isinstance(config, dict):
            raise errors.bad_request("the apply configuration must be a JSON or YAML object")
        for field in ("apiVersion", "kind"):
            if not config.get(field):
                raise errors.bad_request(f"invalid object type: {field} must be set in an apply configuration")
        config = strategy.check_body(info, _copy(config), "apply configuration")
        meta = config["metadata"]
        if meta.get("name") not in (None, "", name):
            raise errors.bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
        meta["name"] = name
        ns = self._ns(info, namespace)
        if info.namespaced:
            if meta.get("namespace") not in (None, "", ns):
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = ns
        meta.pop("managedFields", None)
        with self._lock:
            old = self._objects[info.key].get((ns, name))
            if old is None:
                if subresource:
                    raise errors.not_found(info.plural, info.group, name)
                created = ssa.apply(info, None, config, manager, force)
                fields = created["metadata"].pop("managedFields")
                return self.create(info, created, namespace, managed_fields=fields), True
            new = ssa.apply(info, old, config, manager, force, subresource)
            return self._update_locked(info, old, new, subresource, manager, managed=new["metadata"].pop("managedFields")), False

    def mutate(
        self,
        resource: str | ResourceType,
        name: str,
        fn: Callable[[dict[str, Any]], dict[str, Any] | None],
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """In-process read-modify-write under the lock (test set-up): ``fn`` edits a copy or returns a
        new object. Pass ``subresource="status"`` to change ``status`` of kinds that have one."""
        info = self.resource(resource)
        ns = self._ns(info, namespace)
        with self._lock:
            old = self._get_locked(info, ns, name)
            draft = _clone(old)
            result = fn(draft)
            new = strategy.check_body(info, _copy(draft if result is None else result))
            return self._update_locked(info, old, new, subresource)

    def _update_locked(
        self,
        info: ResourceType,
        old: dict[str, Any],
        new: dict[str, Any],
        subresource: str | None,
        manager: str = "unknown",
        managed: builtins.list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        name = old["metadata"]["name"]
        meta = new["metadata"]
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise errors.stale(info.plural, info.group, name)
        uid = meta.get("uid")
        if uid and uid != old["metadata"]["uid"]:
            raise errors.conflict(
                info.plural,
                info.group,
                name,
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: {old['metadata']['uid']}",
            )
        new = strategy.prepare_update(info, new, old, subresource)
        meta = new["metadata"]
        old_meta = old["metadata"]
        for field in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta.pop("resourceVersion", None)
        meta.pop("managedFields", None)
        if new.get("spec") != old.get("spec"):
            meta["generation"] = int(old_meta.get("generation", 0)) + 1
        unchanged = _clone(old)
        unchanged["metadata"].pop("resourceVersion", None)
        old_fields = unchanged["metadata"].pop("managedFields", None)
        if managed is None:
            managed = ssa.track_update(info, old, new, manager, subresource)
        if new == unchanged and _untimed(managed) == _untimed(old_fields):
            return _clone(old)  # a no-op write changes nothing, not even the resourceVersion
        if managed:
            meta["managedFields"] = managed
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
            return self._remove(info, new)
        return self._commit(info, new, old)

    def delete(
        self,
        resource: str | ResourceType,
        name: str,
        namespace: str | None = None,
        preconditions: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Delete now (grace periods are ignored), or mark for deletion while finalizers remain.
        Returns the object as it was last stored."""
        info = self.resource(resource)
        ns = self._ns(info, namespace)
        with self._lock:
            obj = self._get_locked(info, ns, name)
            meta = obj["metadata"]
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise errors.conflict(
                    info.plural,
                    info.group,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta['uid']}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise errors.conflict(
                    info.plural,
                    info.group,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                    f"ResourceVersion in object meta: {meta['resourceVersion']}",
                )
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return _clone(obj)
                marked = _clone(obj)
                marked["metadata"]["deletionTimestamp"] = _now()
                marked["metadata"]["deletionGracePeriodSeconds"] = 0
                return self._commit(info, marked, obj)
            if info.key == "namespaces":
                for other in RESOURCES:
                    if other.namespaced:
                        for key in [k for k in self._objects[other.key] if k[0] == name]:
                            self._remove(other, self._objects[other.key][key])
            return self._remove(info, obj)

    def delete_collection(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> builtins.list[dict[str, Any]]:
        info = self.resource(resource)
        flt = make_filter(info, namespace if info.namespaced else None, label_selector, field_selector)
        with self._lock:
            doomed = [o for _, o in sorted(self._objects[info.key].items()) if flt.matches(o)]
            return [self.delete(info, o["metadata"]["name"], o["metadata"].get("namespace")) for o in doomed]

    def bind(
        self, namespace: str, name: str, node: str, uid: str | None = None, annotations: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """What ``pods/binding`` does: set ``spec.nodeName`` once, copy the Binding's annotations onto
        the pod (kube-apiserver's BindingREST.setPodHostAndAnnotations) and mark the pod scheduled."""
        info = by_key("pods")
        if not node:
            raise errors.invalid("Binding", "", name, [("target.name", "FieldValueRequired", "Required value")])
        with self._lock:
            old = self._get_locked(info, namespace, name)
            if uid and uid != old["metadata"]["uid"]:
                raise errors.conflict(
                    "pods/binding",
                    "",
                    name,
                    f"Precondition failed: UID in precondition: {uid}, UID in object meta: {old['metadata']['uid']}",
                )
            if old["metadata"].get("deletionTimestamp"):
                raise errors.conflict("pods/binding", "", name, "pod is being deleted, cannot be assigned to a host")
            bound = (old.get("spec") or {}).get("nodeName")
            if bound:
                raise errors.conflict("pods/binding", "", name, f'pod {name} is already assigned to node "{bound}"')
            new = _clone(old)
            new.setdefault("spec", {})["nodeName"] = node
            if annotations:
                new["metadata"]["annotations"] = {**(new["metadata"].get("annotations") or {}), **_copy(dict(annotations))}
            status = new.setdefault("status", {})
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": _now()})
            status["conditions"] = conditions
            return self._commit(info, new, old)

    # ------------------------------------------------------------ watch

    def open_watch(
        self,
        resource: str | ResourceType,
        flt: Filter,
        resource_version: str | None,
        send_initial_events: bool | None = None,
    ) -> tuple[Watcher, builtins.list[tuple[str, dict[str, Any]]], int]:
        """Register a watcher; returns it, the events to send first, and the starting version.

        No version (or ``"0"``) means: synthetic ADDED for every selected object, then changes.
        A version means: replay the history after it, or 410 Expired if it was compacted away.
        """
        info = self.resource(resource)
        rv: int | None = None
        if resource_version not in (None, "", "0"):
            try:
                rv = int(resource_version)
                if rv < 0:
                    raise ValueError
            except ValueError:
                raise errors.bad_request(f"invalid resource version {resource_version!r}") from None
        initial: builtins.list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            if send_initial_events or rv is None:
                for _, obj in sorted(self._objects[info.key].items()):
                    if flt.matches(obj):
                        initial.append((ADDED, _clone(obj)))
                start = self._rv
            else:
                if rv < self._floor[info.key]:
                    raise errors.expired(rv, self._floor[info.key] + 1)
                for event in self._history[info.key]:
                    if event.rv > rv:
                        kind = flt.translate(event)
                        if kind:
                            initial.append((kind, _clone(event.obj)))
                start = min(rv, self._rv)
            watcher = Watcher(info, flt)
            self._watchers[info.key].add(watcher)
        return watcher, initial, start

    def close_watch(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers[watcher.info.key].discard(watcher)
        watcher.close()

    def bookmark_version(self, watcher: Watcher) -> int | None:
        """The current version if the watcher has consumed every event up to it, else None."""
        with self._lock:
            return self._rv if watcher.queue.empty() else None

    def close_watchers(self, abrupt: bool = False) -> int:
        """End every open watch stream; returns how many were open."""
        with self._lock:
            everyone = [w for ws in self._watchers.values() for w in ws]
            for ws in self._watchers.values():
                ws.clear()
        for w in everyone:
            w.close(abrupt)
        if everyone:
            log.info("closed %d watch stream(s)%s", len(everyone), " abruptly" if abrupt else "")
        return len(everyone)

    def watcher_count(self, resource: str | ResourceType | None = None) -> int:
        """Open watch streams (of one resource, or all): lets a test wait until its watch is live."""
        with self._lock:
            if resource is None:
                return sum(len(ws) for ws in self._watchers.values())
            return len(self._watchers[self.resource(resource).key])

    def history(self, resource: str | ResourceType) -> builtins.list[WatchEvent]:
        """The retained watch events of a resource, oldest first (for inspection in tests)."""
        info = self.resource(resource)
        with self._lock:
            return list(self._history[info.key])


def _untimed(entries: builtins.list[dict[str, Any]] | None) -> Any:
    return [{k: v for k, v in e.items() if k != "time"} for e in entries or []]


def _ident(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta.get("name"))


def status_success(info: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """The ``Status`` a DELETE answers for kinds that do not return the deleted object."""
    details: dict[str, Any] = {"name": obj["metadata"]["name"]}
    if info.group:
        details["group"] = info.group
    details["kind"] = info.plural
    details["uid"] = obj["metadata"].get("uid")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
