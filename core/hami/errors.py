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
    """Something went wrong in or with a backend; the subclasses say what. A backend raises this
    (or :class:`BackendRefused`) from a hook with a reason a person can act on."""


class BackendLoadError(BackendError):
    """A backend could not be loaded: its import failed, its identity is bad or taken."""


class DuplicateVendorError(BackendLoadError):
    """Two backends claim the same vendor key."""


class BackendHookError(BackendError):
    """A hook call failed. ``backend`` and ``hook`` name where (the manager fills them in),
    ``reason`` is what went wrong; ``__cause__`` is the original exception."""

    def __init__(self, reason: str, *, backend: str = "", hook: str = "") -> None:
        where = ", ".join(part for part in (f"backend {backend!r}" if backend else "", hook) if part)
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.backend = backend
        self.hook = hook


class ContractError(BackendHookError):
    """A backend broke the contract: a wrong return type, a changed identity, an undeclared host path."""


class BackendRefused(BackendHookError):
    """A backend refuses this request; ``reason`` is for the user (the isolation library is missing,
    the device cannot serve the mode). Backends raise it (or a plain :class:`BackendError`, which the
    manager turns into this type) with just the reason: ``raise BackendRefused("...")``."""


class BackendCrashed(BackendHookError):
    """A hook raised something that is not a :class:`HamiError`: a bug or an unexpected host failure
    (``PermissionError``, a missing file) inside the backend."""


__all__ = [
    "AnnotationError",
    "BackendCrashed",
    "BackendError",
    "BackendHookError",
    "BackendLoadError",
    "BackendRefused",
    "ContractError",
    "DuplicateVendorError",
    "HamiError",
    "InventoryError",
    "QuantityError",
    "RequestError",
    "ValidationError",
]
