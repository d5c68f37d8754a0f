"""A stand-in for kube-scheduler's structured-parameters allocator (DynamicResources plugin), for the
sandbox: DeviceClass and claim CEL selectors, exact counts and ``All``, and consumable capacity
(KEP-5075: ``allowMultipleAllocations``, capacity requests, request policies, ``shareID``).

CEL is evaluated by ``cel-python`` (``celpy``, the ``hami[dra]`` extra; imported only here), with the
variables and functions Kubernetes gives device selectors: ``device.driver``, ``device.attributes``
and ``device.capacity`` keyed by domain (unqualified names in the driver's domain), ``quantity()``,
``isQuantity()`` and the Quantity methods ``compareTo``, ``isGreaterThan``, ``isLessThan``,
``asInteger``. Not modelled: constraints (``matchAttribute``), ``firstAvailable`` sub-requests,
admin access, device taints, partitionable counters; a request using them is refused naming it.

What it follows from upstream (k8s.io/dynamic-resource-allocation/structured, allocator.go and
``consumableCapacity``): a device without ``allowMultipleAllocations`` goes to one claim only; on a
shared one each claim consumes its request or the policy's default (the whole capacity without a
policy), rounded up to the policy's step or the next valid value, refused outside the range, and
the sum over claims stays within the capacity.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from hami.errors import HamiError
from hami.wire.quantity import parse_quantity


class AllocationError(HamiError):
    """A claim cannot be allocated on a node (the reason names what failed)."""


@attrs.frozen
class SliceDevice:
    driver: str
    pool: str
    node: str
    device: Mapping[str, Any] = attrs.field(hash=False)

    @property
    def name(self) -> str:
        return str(self.device["name"])

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.driver, self.pool, self.name)

    @property
    def shared(self) -> bool:
        return bool(self.device.get("allowMultipleAllocations"))


def node_devices(slices: Iterable[Mapping[str, Any]], node: str) -> list[SliceDevice]:
    """The devices of ``node`` from the newest generation of each pool (older slices are stale)."""
    newest: dict[tuple[str, str], int] = {}
    mine = [s for s in slices if s["spec"].get("nodeName") == node]
    for s in mine:
        key = (s["spec"]["driver"], s["spec"]["pool"]["name"])
        newest[key] = max(newest.get(key, 0), s["spec"]["pool"]["generation"])
    out: list[SliceDevice] = []
    for s in mine:
        spec = s["spec"]
        if spec["pool"]["generation"] == newest[(spec["driver"], spec["pool"]["name"])]:
            out.extend(SliceDevice(spec["driver"], spec["pool"]["name"], node, d) for d in spec.get("devices") or [])
    return out


# ---------------------------------------------------------------- CEL


def _cel() -> Any:
    try:
        import celpy
    except ImportError as exc:  # pragma: no cover - the extra is in dev and sandbox installs
        raise HamiError("the DRA allocator stand-in needs cel-python: pip install 'hami[dra]'") from exc
    return celpy


def _quantity_type() -> Any:
    from celpy import celtypes

    class Quantity(celtypes.IntType):
        """A quantity as CEL sees it: ordered by value (held in milli-units, exact)."""

    return Quantity


def _to_quantity(value: Any) -> Any:
    milli = parse_quantity(str(value)) * 1000
    return _quantity_type()(int(milli.to_integral_value(rounding="ROUND_CEILING")))


def _functions() -> dict[str, Any]:
    from celpy import celtypes

    def compare(a: Any, b: Any) -> Any:
        return celtypes.IntType((int(a) > int(b)) - (int(a) < int(b)))

    return {
        "quantity": lambda text: _to_quantity(text),
        "isQuantity": lambda text: celtypes.BoolType(_is_quantity(str(text))),
        "compareTo": compare,
        "isGreaterThan": lambda a, b: celtypes.BoolType(int(a) > int(b)),
        "isLessThan": lambda a, b: celtypes.BoolType(int(a) < int(b)),
        "asInteger": lambda a: celtypes.IntType(int(a) // 1000),
        "asApproximateFloat": lambda a: celtypes.DoubleType(int(a) / 1000),
    }


def _is_quantity(text: str) -> bool:
    try:
        parse_quantity(text)
    except HamiError:
        return False
    return True


class Selectors:
    """Compiled CEL expressions, cached by text; compile errors name the expression."""

    def __init__(self) -> None:
        self._programs: dict[str, Any] = {}

    def program(self, expression: str) -> Any:
        if expression not in self._programs:
            celpy = _cel()
            env = celpy.Environment()
            try:
                ast = env.compile(expression)
            except Exception as exc:
                raise AllocationError(f"CEL selector {expression!r} does not compile: {exc}") from None
            self._programs[expression] = env.program(ast, functions=_functions())
        return self._programs[expression]

    def matches(self, expression: str, device: SliceDevice) -> bool:
        from celpy import celtypes

        celpy = _cel()
        attributes: dict[str, dict[str, Any]] = {}
        for key, value in (device.device.get("attributes") or {}).items():
            domain, _, name = key.rpartition("/")
            attributes.setdefault(domain or device.driver, {})[name] = next(iter(value.values()))
        capacity: dict[str, dict[str, Any]] = {}
        for key, value in (device.device.get("capacity") or {}).items():
            domain, _, name = key.rpartition("/")
            capacity.setdefault(domain or device.driver, {})[name] = _to_quantity(value["value"])
        cel_attributes = celtypes.MapType({celtypes.StringType(d): celpy.json_to_cel(v) for d, v in attributes.items()})
        cel_capacity = celtypes.MapType(
            {celtypes.StringType(d): celtypes.MapType({celtypes.StringType(k): q for k, q in v.items()}) for d, v in capacity.items()}
        )
        activation = {
            "device": celtypes.MapType(
                {
                    celtypes.StringType("driver"): celtypes.StringType(device.driver),
                    celtypes.StringType("attributes"): cel_attributes,
                    celtypes.StringType("capacity"): cel_capacity,
                    celtypes.StringType("allowMultipleAllocations"): celtypes.BoolType(device.shared),
                }
            )
        }
        try:
            result = self.program(expression).evaluate(activation)
        except Exception as exc:  # a missing attribute is a runtime error in Kubernetes too: no match
            raise AllocationError(f"CEL selector {expression!r} failed on device {device.name}: {exc}") from None
        if isinstance(result, Exception) or not isinstance(result, celtypes.BoolType | bool):
            if "no such key" in str(result):
                return False
            raise AllocationError(f"CEL selector {expression!r} on device {device.name} gave {result!r}, not a bool")
        return bool(result)


# ---------------------------------------------------------------- consumable capacity


def _consumed(device: SliceDevice, requests: Mapping[str, str]) -> dict[str, Decimal]:
    """What one allocation takes of each capacity of a shared device, by its request policies."""
    out: dict[str, Decimal] = {}
    capacities = device.device.get("capacity") or {}
    unknown = sorted(set(requests) - set(capacities))
    if unknown:
        raise AllocationError(f"device {device.name} has no capacity {unknown}")
    for name, cap in capacities.items():
        total = parse_quantity(cap["value"])
        policy = cap.get("requestPolicy")
        asked = parse_quantity(requests[name]) if name in requests else None
        if policy is None:
            value = total if asked is None else asked
        else:
            value = asked if asked is not None else parse_quantity(policy.get("default", cap["value"]))
            if "validValues" in policy:
                options = sorted(parse_quantity(v) for v in policy["validValues"])
                bigger = [v for v in options if v >= value]
                if not bigger:
                    valid = policy["validValues"]
                    raise AllocationError(f"device {device.name}: {name} {_quantity_text(value)} is above every valid value {valid}")
                value = bigger[0]
            elif "validRange" in policy:
                rng = policy["validRange"]
                low = parse_quantity(rng["min"])
                high = parse_quantity(rng["max"]) if "max" in rng else total
                value = max(value, low)
                if "step" in rng:
                    step = parse_quantity(rng["step"])
                    value = low + math.ceil((value - low) / step) * step
                if value > high:
                    most = _quantity_text(high)
                    raise AllocationError(f"device {device.name}: {name} {_quantity_text(value)} is over the per-claim maximum ({most})")
        out[name] = value
    return out


def _quantity_text(value: Decimal) -> str:
    """A consumed amount as a quantity string (MiB-aligned amounts in Mi, as the slices write them)."""
    mib = Decimal(1 << 20)
    if value >= mib and value % mib == 0:
        return f"{int(value / mib)}Mi"
    return str(int(value)) if value == value.to_integral_value() else str(value)


# ---------------------------------------------------------------- the allocator


@attrs.frozen
class Usage:
    """What the already allocated claims hold: exclusive devices and consumed capacity per device."""

    exclusive: frozenset[tuple[str, str, str]] = frozenset()
    consumed: Mapping[tuple[str, str, str], Mapping[str, Decimal]] = attrs.field(factory=dict, hash=False)

    @classmethod
    def of(cls, claims: Iterable[Mapping[str, Any]], devices: Sequence[SliceDevice]) -> Usage:
        shared = {d.key for d in devices if d.shared}
        exclusive: set[tuple[str, str, str]] = set()
        consumed: dict[tuple[str, str, str], dict[str, Decimal]] = {}
        for claim in claims:
            allocation = (claim.get("status") or {}).get("allocation") or {}
            for r in (allocation.get("devices") or {}).get("results") or []:
                key = (r["driver"], r["pool"], r["device"])
                if key in shared or r.get("consumedCapacity"):
                    per = consumed.setdefault(key, {})
                    for name, q in (r.get("consumedCapacity") or {}).items():
                        per[name] = per.get(name, Decimal(0)) + parse_quantity(q)
                else:
                    exclusive.add(key)
        return cls(frozenset(exclusive), consumed)


class Allocator:
    """Allocates claims on one node at a time (the sandbox tries the nodes in order)."""

    def __init__(self, device_classes: Mapping[str, Mapping[str, Any]]) -> None:
        self.classes = device_classes
        self.selectors = Selectors()

    def _candidates(self, request: Mapping[str, Any], devices: Sequence[SliceDevice]) -> list[SliceDevice]:
        exact = request.get("exactly")
        if exact is None:
            raise AllocationError(f"request {request.get('name')!r}: only 'exactly' requests are modelled (firstAvailable is not)")
        if exact.get("adminAccess"):
            raise AllocationError(f"request {request['name']!r}: adminAccess is not modelled")
        class_name = exact["deviceClassName"]
        device_class = self.classes.get(class_name)
        if device_class is None:
            raise AllocationError(f"request {request['name']!r}: device class {class_name!r} not found")
        expressions = [s["cel"]["expression"] for s in (device_class.get("spec") or {}).get("selectors") or []]
        expressions += [s["cel"]["expression"] for s in exact.get("selectors") or []]
        return [d for d in devices if all(self.selectors.matches(e, d) for e in expressions)]

    def allocate(self, claim: Mapping[str, Any], node: str, devices: Sequence[SliceDevice], usage: Usage) -> dict[str, Any]:
        """The ``status.allocation`` for ``claim`` on ``node``, or :class:`AllocationError` saying why not."""
        spec = claim.get("spec") or {}
        device_spec = spec.get("devices") or {}
        if device_spec.get("constraints"):
            raise AllocationError("claim constraints (matchAttribute) are not modelled by the sandbox allocator")
        taken = set(usage.exclusive)
        consumed = {k: dict(v) for k, v in usage.consumed.items()}
        used_here: set[tuple[str, str, str]] = set()  # one claim does not get the same device twice
        results = []
        for request in device_spec.get("requests") or []:
            exact = request.get("exactly") or {}
            candidates = self._candidates(request, devices)
            mode = exact.get("allocationMode", "ExactCount")
            count = len(candidates) if mode == "All" else int(exact.get("count", 1))
            asked = (exact.get("capacity") or {}).get("requests") or {}
            picked = 0
            reasons = []
            for device in candidates:
                if picked == count:
                    break
                if device.key in taken or device.key in used_here:
                    continue
                if not device.shared:
                    if asked:
                        reasons.append(f"{device.name} is not shared, capacity requests need allowMultipleAllocations")
                        continue
                    if device.key in consumed:
                        continue
                    taken.add(device.key)
                    used_here.add(device.key)
                    results.append({"request": request["name"], "driver": device.driver, "pool": device.pool, "device": device.name})
                    picked += 1
                    continue
                try:
                    amounts = _consumed(device, asked)
                except AllocationError as exc:
                    reasons.append(str(exc))
                    continue
                before = consumed.get(device.key, {})
                capacities = device.device.get("capacity") or {}
                over = [n for n, v in amounts.items() if before.get(n, Decimal(0)) + v > parse_quantity(capacities[n]["value"])]
                if over:
                    reasons.append(f"{device.name} has not enough {', '.join(over)} left")
                    continue
                consumed[device.key] = {n: before.get(n, Decimal(0)) + v for n, v in amounts.items()}
                used_here.add(device.key)
                results.append(
                    {
                        "request": request["name"],
                        "driver": device.driver,
                        "pool": device.pool,
                        "device": device.name,
                        "shareID": str(uuid.uuid4()),
                        "consumedCapacity": {n: _quantity_text(v) for n, v in amounts.items()},
                    }
                )
                picked += 1
            if picked < count or (mode == "All" and not candidates):
                why = "; ".join(reasons[:3]) or f"{len(candidates)} matching device(s), {picked} free"
                raise AllocationError(f"request {request['name']!r} wants {count} device(s) of class {exact['deviceClassName']!r}: {why}")
        node_selector = {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}
        return {"devices": {"results": results, "config": self._config(claim)}, "nodeSelector": node_selector}

    def _config(self, claim: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Class configuration first, then the claim's, as the allocator copies them into the result."""
        out: list[dict[str, Any]] = []
        requests = (claim.get("spec") or {}).get("devices", {}).get("requests") or []
        for request in requests:
            class_name = str((request.get("exactly") or {}).get("deviceClassName"))
            for config in ((self.classes.get(class_name) or {}).get("spec") or {}).get("config") or []:
                out.append({"source": "FromClass", "requests": [request["name"]], **config})
        for config in (claim.get("spec") or {}).get("devices", {}).get("config") or []:
            out.append({"source": "FromClaim", **config})
        return out
