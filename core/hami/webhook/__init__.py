"""The mutating admission webhook: routes pods that ask for shared devices to our scheduler,
fills each backend's defaults, and denies what would break isolation or accounting.

:func:`hami.webhook.admission.review` is the pure decision (bytes in, status and bytes out) that
both the standalone server (:mod:`hami.webhook.server`) and the scheduler's HTTP server call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hami.webhook.admission import review
    from hami.webhook.config import WebhookConfig
    from hami.webhook.quota import KubeQuotaSource, QuotaSource

__all__ = ["KubeQuotaSource", "QuotaSource", "WebhookConfig", "review"]

_HOMES = {"review": "admission", "WebhookConfig": "config", "QuotaSource": "quota", "KubeQuotaSource": "quota"}


def __getattr__(name: str) -> Any:
    """Import on first use (PEP 562), so ``hami webhook --help`` does not load the admission code."""
    if name not in _HOMES:
        raise AttributeError(f"module 'hami.webhook' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"hami.webhook.{_HOMES[name]}"), name)
