"""The mutating admission webhook: routes pods that ask for shared devices to our scheduler,
fills each backend's defaults, and denies what would break isolation or accounting.

:func:`hami.webhook.admission.review` is the pure decision (bytes in, status and bytes out) that
both the standalone server (:mod:`hami.webhook.server`) and the scheduler's HTTP server call.
"""

from __future__ import annotations

from hami.webhook.admission import review
from hami.webhook.config import WebhookConfig
from hami.webhook.quota import KubeQuotaSource, QuotaSource

__all__ = ["review", "WebhookConfig", "QuotaSource", "KubeQuotaSource"]
