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


SYSTEM_WRITERS_ENV = "HAMI_SYSTEM_WRITERS"
"""Comma-separated ``system_writers`` for the commands (the chart sets it to its two service accounts)."""


def _usernames(value: object) -> frozenset[str]:
    """A comma-separated string or an iterable of usernames; blanks dropped, anything else refused."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)) or not all(isinstance(u, str) for u in items):
        raise ValidationError(
            f"WebhookConfig.system_writers={value!r}: must be usernames (e.g. system:serviceaccount:hami-system:hami-scheduler)"
        )
    names = frozenset(u.strip() for u in items if u.strip())
    for name in names:
        if any(c.isspace() for c in name):
            raise ValidationError(f"WebhookConfig.system_writers: {name!r} contains white space; separate usernames with commas")
    return names


@attrs.frozen
class WebhookConfig:
    """Admission settings.

    ``scheduler_name``: written into ``spec.schedulerName`` of pods that ask for shared devices.
    ``overwrite_default_scheduler``: also take over pods that name ``default-scheduler`` (on by
    default, as in HAMi: kube-apiserver defaults the field before mutating webhooks run in many
    set-ups, so without it almost no pod would reach us).
    ``max_body_bytes``: larger request bodies get a 400 without being parsed.
    ``system_writers``: the users (``request.userInfo.username``, for a service account
    ``system:serviceaccount:<namespace>:<name>``) allowed to change hami's system annotations of an
    existing pod: the scheduler's and the node agents' accounts. Everyone else's UPDATE that adds,
    changes or removes one is denied; with none configured, nobody may.
    """

    scheduler_name: str = attrs.field(default=DEFAULT_SCHEDULER_NAME, validator=_scheduler_name)
    overwrite_default_scheduler: bool = True
    max_body_bytes: int = attrs.field(default=DEFAULT_MAX_BODY_BYTES, validator=_positive)
    system_writers: frozenset[str] = attrs.field(default=frozenset(), converter=_usernames)
