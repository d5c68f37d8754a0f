"""One exception family per layer; every message names the offending value.

Servers catch these at their edge and turn them into a reason a person can act on
(an extender FailedNodes entry, a webhook 403, a gRPC status), so raising one never
crashes a process.
"""

from __future__ import annotations


class HamiError(Exception):
    """Base of every error hami raises on purpose."""


class ValidationError(HamiError, ValueError):
    """A value type was constructed with an impossible field value."""


class QuantityError(HamiError, ValueError):
    """A Kubernetes quantity string could not be parsed."""


class AnnotationError(HamiError, ValueError):
    """An annotation (node device list, pod allocation) could not be decoded or encoded."""


class InventoryError(HamiError, ValueError):
    """A node inventory file (the simulated device source) is malformed."""


class RequestError(HamiError, ValueError):
    """A container's device request is impossible (bad value, conflicting resources)."""


class BackendError(HamiError):
    """A backend failed to load, declared a bad identity, or broke the hook contract."""


class DuplicateVendorError(BackendError):
    """Two backends claim the same vendor key."""


__all__ = [
    "HamiError",
    "ValidationError",
    "QuantityError",
    "AnnotationError",
    "InventoryError",
    "RequestError",
    "BackendError",
    "DuplicateVendorError",
]
