"""Kubernetes' naming rules (k8s.io/apimachinery/pkg/util/validation and
pkg/apis/core/helper ``IsExtendedResourceName``), once, for the value types and the fake kubelet.

Go's ``^…$`` anchors the whole text, so these use ``fullmatch`` (Python's ``$`` would accept a
trailing newline).
"""

from __future__ import annotations

import re

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63
NATIVE_NAMESPACE = "kubernetes.io/"
"""``ResourceDefaultNamespacePrefix``: a name containing it is a native resource."""
REQUESTS_PREFIX = "requests."
"""``DefaultResourceRequestsPrefix``: quota's name for a resource's requests."""


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= DNS1123_SUBDOMAIN_MAX and _DNS1123_SUBDOMAIN.fullmatch(value) is not None


def is_qualified_name(value: str) -> bool:
    """``[prefix/]name``: an optional DNS-1123 subdomain prefix and a name of at most 63 characters."""
    parts = value.split("/")
    if len(parts) > 2 or (len(parts) == 2 and not is_dns1123_subdomain(parts[0])):
        return False
    name = parts[-1]
    return 0 < len(name) <= QUALIFIED_NAME_MAX and _QUALIFIED_NAME_PART.fullmatch(name) is not None


def is_label_value(value: str) -> bool:
    """``IsValidLabelValue``: empty, or at most 63 characters of the qualified-name part's alphabet."""
    return value == "" or (len(value) <= QUALIFIED_NAME_MAX and _QUALIFIED_NAME_PART.fullmatch(value) is not None)


def is_extended_resource_name(name: str) -> bool:
    """``vendor.com/thing``, as kubelet and the API server decide: namespaced, not native (no
    ``kubernetes.io/``), not starting with ``requests.``, and ``requests.<name>`` a qualified name
    (so the domain has at most 244 characters)."""
    if "/" not in name or NATIVE_NAMESPACE in name or name.startswith(REQUESTS_PREFIX):
        return False
    return is_qualified_name(REQUESTS_PREFIX + name)


def is_annotation_key(key: str) -> bool:
    """An optional DNS-subdomain prefix and a qualified name of at most 63 characters."""
    prefix, sep, rest = key.rpartition("/")
    if sep and not is_dns1123_subdomain(prefix):
        return False
    return 0 < len(rest) <= QUALIFIED_NAME_MAX and _QUALIFIED_NAME_PART.fullmatch(rest) is not None
