"""Kubernetes' naming rules (hami.k8snames): the one extended-resource-name rule that the value types,
the conformance kit and the fake kubelet all use, checked against k8s' own cases and, as a property,
against a spelled-out restatement of ``IsExtendedResourceName`` (pkg/apis/core/helper/helpers.go)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.fakes.kubelet import is_extended_resource_name as kubelet_rule
from hami.k8snames import is_annotation_key, is_extended_resource_name, is_qualified_name
from hami.plugin.model import ResourceNames


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("example.com/gpu", True),
        ("example.com/mlu.smlu.vmemory", True),
        ("example.com/Chip910-1-memory", True),
        ("hami.io/x_y", True),
        ("example/gpu", True),  # a prefix without a dot is a valid DNS-1123 subdomain
        ("cpu", False),  # native: no namespace
        ("kubernetes.io/gpu", False),
        ("node.kubernetes.io/gpu", False),
        ("example.com/kubernetes.io/x", False),
        ("requests.example.com/gpu", False),  # quota's own prefix
        ("a/b/c", False),
        ("/gpu", False),
        ("example.com/", False),
        ("example.com/-gpu", False),
        ("Example.com/gpu", False),
        ("ex_ample.com/gpu", False),
        ("example.com/" + "g" * 63, True),
        ("example.com/" + "g" * 64, False),
        ("a" * 244 + "/x", True),  # requests.<244> is 253 characters, the subdomain limit
        ("a" * 245 + "/x", False),
        ("example.com/gpu\n", False),  # Go's $ does not match before a newline
    ],
)
def test_kubernetes_cases(name: str, valid: bool) -> None:
    assert is_extended_resource_name(name) is valid
    assert kubelet_rule is is_extended_resource_name  # one rule, not a copy


def _go_rule(name: str) -> bool:
    """IsExtendedResourceName, step by step as the Go source reads."""
    if "/" not in name or "kubernetes.io/" in name:  # IsNativeResource
        return False
    if name.startswith("requests."):
        return False
    parts = ("requests." + name).split("/")
    if len(parts) != 2:
        return False
    prefix, short = parts
    label = set(string.ascii_lowercase + string.digits + "-")
    if not prefix or len(prefix) > 253 or any(not lab or set(lab) - label or lab[0] == "-" or lab[-1] == "-" for lab in prefix.split(".")):
        return False
    allowed = set(string.ascii_letters + string.digits + "-_.")
    return 0 < len(short) <= 63 and not set(short) - allowed and short[0].isalnum() and short[-1].isalnum() and short.isascii()


_ALPHABET = string.ascii_letters + string.digits + "-_./" + "\n "


@given(st.text(alphabet=_ALPHABET, max_size=40) | st.from_regex(r"[a-z0-9.-]{1,20}/[A-Za-z0-9._-]{1,20}", fullmatch=True))
def test_matches_the_go_rule(name: str) -> None:
    assert is_extended_resource_name(name) is _go_rule(name)


_VALID = r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9]{1,8}){0,3}/[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?"


@given(st.from_regex(_VALID, fullmatch=True))
def test_valid_names_are_accepted_everywhere(name: str) -> None:
    if name.startswith("requests.") or "kubernetes.io/" in name:
        return
    assert is_extended_resource_name(name)
    assert is_qualified_name(name) and is_annotation_key(name)
    assert ResourceNames(count=name).count == name  # the value types take what kubelet takes
