"""HAMi's request rules over container limits, for any device kind of the usual shape."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.backendkit.limits import standard_request
from hami.errors import RequestError
from hami.plugin.model import AnnotationKeys, DeviceKind, DeviceRequest, ResourceNames

KIND = DeviceKind(
    "ACME",
    ResourceNames(
        count="acme.com/npu", memory="acme.com/npumem", memory_percentage="acme.com/npumem-percentage", cores="acme.com/npucores"
    ),
    AnnotationKeys.hami("hami.io/node-acme-register", "hami.io/node-handshake-acme", "hami.io/acme"),
)


def container(limits=None, requests=None):
    return {"name": "c", "resources": {"limits": limits or {}, "requests": requests or {}}}


def test_nothing_asked():
    assert standard_request(container({"cpu": "1"}), KIND) is None
    assert standard_request({"name": "c"}, KIND) is None
    assert standard_request(container({"acme.com/npu": "0"}), KIND) is None


def test_requests_are_read_when_limits_are_absent_and_limits_win():
    assert standard_request(container(requests={"acme.com/npu": "2"}), KIND).count == 2
    assert standard_request(container({"acme.com/npu": "3"}, {"acme.com/npu": "2"}), KIND).count == 3


def test_configured_defaults():
    request = standard_request(container({"acme.com/npu": "1"}), KIND, default_memory=2048, default_cores=20)
    assert (request.memory, request.memory_percentage, request.cores) == (2048, None, 20)


@given(st.dictionaries(st.sampled_from(KIND.resources.all()), st.one_of(st.text(max_size=8), st.integers(-5, 300)), max_size=4))
def test_any_limits_give_a_valid_request_or_a_request_error(limits):
    try:
        request = standard_request(container(limits), KIND)
    except RequestError as exc:
        assert any(name in str(exc) for name in limits) or "exclusive" in str(exc)
        return
    assert request is None or (isinstance(request, DeviceRequest) and request.count >= 1 and 0 <= request.cores <= 100)


def test_percentage_over_100_is_refused():
    with pytest.raises(RequestError, match=re.escape("acme.com/npumem-percentage=150")):
        standard_request(container({"acme.com/npumem-percentage": "150"}), KIND)
