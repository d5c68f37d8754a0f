"""Validation kubelet applies to ``RegisterRequest.resource_name`` (an *extended* resource name).

Mirrors ``v1helper.IsExtendedResourceName``: the name must be namespaced (``vendor.com/thing``), not in the
``kubernetes.io`` namespace, not start with ``requests.``, and ``requests.<name>`` must be a qualified name.
"""

from __future__ import annotations

import re

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_REQUESTS_PREFIX = "requests."


def is_extended_resource_name(name: str) -> bool:
    """True when kubelet would accept ``name`` as a device plugin resource."""
    if "/" not in name or "kubernetes.io/" in name or name.startswith(_REQUESTS_PREFIX):
        return False
    prefix, _, rest = (_REQUESTS_PREFIX + name).partition("/")
    if "/" in rest or not rest or len(rest) > 63 or not _QUALIFIED_NAME_PART.match(rest):
        return False
    return len(prefix) <= 253 and bool(_DNS1123_SUBDOMAIN.match(prefix))
