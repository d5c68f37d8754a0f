"""What an operator can change about admission, in one frozen value (the CLI and the scheduler
build it; :func:`hami.webhook.admission.review` only reads it)."""

from __future__ import annotations

import re

import attrs

from hami.errors import ValidationError

DEFAULT_SCHEDULER_NAME = "hami-scheduler"
KUBE_DEFAULT_SCHEDULER = "default-scheduler"
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
"""kube-apiserver caps an object near 3 MiB; an AdmissionReview carries the object and the old
object, so 8 MiB admits every real review while refusing a body that could exhaust memory."""

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _scheduler_name(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValidationError(f"WebhookConfig.scheduler_name={value!r}: must be a DNS subdomain (e.g. hami-scheduler)")


def _positive(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValidationError(f"WebhookConfig.{attribute.name}={value!r}: must be a positive integer")


@attrs.frozen
class WebhookConfig:
    """Admission settings.

    ``scheduler_name``: written into ``spec.schedulerName`` of pods that ask for shared devices.
    ``overwrite_default_scheduler``: also take over pods that name ``default-scheduler`` (on by
    default, as in HAMi: kube-apiserver defaults the field before mutating webhooks run in many
    set-ups, so without it almost no pod would reach us).
    ``max_body_bytes``: larger request bodies get a 400 without being parsed.
    """

    scheduler_name: str = attrs.field(default=DEFAULT_SCHEDULER_NAME, validator=_scheduler_name)
    overwrite_default_scheduler: bool = True
    max_body_bytes: int = attrs.field(default=DEFAULT_MAX_BODY_BYTES, validator=_positive)
