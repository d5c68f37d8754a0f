"""HAMi's own Grafana dashboard works against us: every PromQL selector in upstream's
``dashboards/hami-vgpu-dashboard.json`` (Project-HAMi/HAMi v2.10.0, committed as
``fixtures/hami-vgpu-dashboard.json``; see ``fixtures/hami-vgpu-dashboard.source``) matches series
scraped over HTTP from a running sandbox cluster's ``/metrics`` (the scheduler's and each node agent's),
and our metric names carry upstream's label names (``cmd/scheduler/metrics.go``,
``cmd/vGPUmonitor/metrics.go``). No Prometheus server: the selectors are parsed here.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

FIXTURES = Path(__file__).with_name("fixtures")
UPSTREAM_DASHBOARD = FIXTURES / "hami-vgpu-dashboard.json"
OUR_DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "hami" / "dashboards" / "hami.json"

# --------------------------------------------------------------------------- PromQL selectors


class SelectorError(ValueError):
    """A PromQL expression whose selectors cannot be read."""


@attrs.frozen
class Matcher:
    label: str
    op: str
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op in ("=", "!="):
            return (actual == self.value) == (self.op == "=")
        return bool(re.fullmatch(self.value, actual)) == (self.op == "=~")  # PromQL regexes are anchored


@attrs.frozen
class Selector:
    metric: str
    matchers: tuple[Matcher, ...] = ()

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        return name == self.metric and all(m.matches(labels) for m in self.matchers)


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_AGGREGATIONS = {"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "limitk"}
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[smhdwy]?")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_OPERATORS = "+-*/%^=!<>,"


def _matchers(body: str, expr: str) -> tuple[Matcher, ...]:
    found, pos = [], 0
    while pos < len(body.rstrip()):
        m = _MATCHER.match(body, pos)
        if m is None:
            raise SelectorError(f"PromQL {expr!r}: cannot read the label matchers {{{body}}} at {body[pos:]!r}")
        found.append(Matcher(m.group(1), m.group(2), bytes(m.group(3), "utf-8").decode("unicode_escape")))
        pos = m.end()
    return tuple(found)


def _braces(expr: str, start: int) -> int:
    """Index just past the ``}`` closing the ``{`` at ``start`` (braces inside strings do not count)."""
    i, quoted = start + 1, False
    while i < len(expr):
        c = expr[i]
        if quoted:
            i += 2 if c == "\\" else 1
            quoted = c != '"' if c != "\\" else quoted
            continue
        if c == '"':
            quoted = True
        elif c == "}":
            return i + 1
        i += 1
    raise SelectorError(f"PromQL {expr!r}: the '{{' at {start} is never closed")


def selectors(expr: str, variables: dict[str, str] | None = None) -> list[Selector]:
    """The instant/range vector selectors of one PromQL expression: metric names with their matchers.

    Grafana variables (``$node``) are replaced first (by ``variables``, default ``.*``, what "All" sends).
    Function names, aggregation keywords, label lists of ``by``/``on``/… and numbers are not selectors.
    Raises :class:`SelectorError` naming the expression when braces, parentheses or matchers are broken.
    """
    text = re.sub(r"\$\{?(\w+)\}?", lambda m: (variables or {}).get(m.group(1), ".*"), expr)
    out: list[Selector] = []
    i, depth, grouping_depth = 0, 0, None
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "(":
            depth += 1
            i += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"PromQL {expr!r}: unbalanced ')' at {i}")
            if grouping_depth is not None and depth < grouping_depth:
                grouping_depth = None
            i += 1
        elif c == "{":  # a selector without a metric name ({__name__="x"}) is not used by dashboards we check
            raise SelectorError(f"PromQL {expr!r}: a selector without a metric name at {i}")
        elif c == "[":
            close = text.find("]", i)
            if close < 0:
                raise SelectorError(f"PromQL {expr!r}: the '[' at {i} is never closed")
            i = close + 1
        elif c == '"':
            close = text.find('"', i + 1)
            if close < 0:
                raise SelectorError(f"PromQL {expr!r}: the string at {i} is never closed")
            i = close + 1
        elif (number := _NUMBER.match(text, i)) and not _IDENT.match(text, i):
            i = number.end()
        elif c in _OPERATORS:
            i += 1
        elif ident := _IDENT.match(text, i):
            name, i = ident.group(), ident.end()
            rest = text[i:].lstrip()
            if grouping_depth is not None:
                continue  # a label of by (…) / on (…)
            if name in _GROUPING:
                if rest.startswith("("):
                    grouping_depth = depth + 1
                continue
            if name in _KEYWORDS or rest.startswith("(") or (name in _AGGREGATIONS and re.match(r"(by|without)\b", rest)):
                continue  # an operator keyword, a function, an aggregation (also ``sum by (x) (…)``)
            matchers: tuple[Matcher, ...] = ()
            if rest.startswith("{"):
                start = text.index("{", i)
                end = _braces(text, start)
                matchers, i = _matchers(text[start + 1 : end - 1], expr), end
            out.append(Selector(name, matchers))
        else:
            raise SelectorError(f"PromQL {expr!r}: unexpected {c!r} at {i}")
    if depth != 0:
        raise SelectorError(f"PromQL {expr!r}: {depth} '(' never closed")
    return out


@attrs.frozen
class DashboardQuery:
    where: str
    expr: str
    selectors: tuple[Selector, ...]
    label: str | None = None
    """For ``label_values(metric, label)``: the label that must exist on the matched series."""


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.+?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$")


def dashboard_queries(dashboard: dict) -> list[DashboardQuery]:
    """Every panel target's ``expr`` and every templating variable's ``label_values`` query."""
    found: list[DashboardQuery] = []

    def walk(node: object, where: str) -> Iterator[None]:
        if isinstance(node, dict):
            title = node.get("title") or where
            for target in node.get("targets") or ():
                if isinstance(target, dict) and target.get("expr"):
                    found.append(DashboardQuery(f"panel {title!r}", target["expr"], tuple(selectors(target["expr"]))))
            for key, value in node.items():
                if key != "targets":
                    yield from walk(value, title)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item, where)

    list(walk(dashboard.get("panels") or [], "dashboard"))
    for variable in (dashboard.get("templating") or {}).get("list") or ():
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if variable.get("type") == "query" and isinstance(query, str):
            m = _LABEL_VALUES.match(query)
            if m is None:
                raise SelectorError(f"variable {variable.get('name')!r}: {query!r} is not label_values(selector, label)")
            found.append(DashboardQuery(f"variable ${variable.get('name')}", query, tuple(selectors(m.group(1))), m.group(2)))
    return found


# --------------------------------------------------------------------------- parser properties

_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True).filter(
    lambda n: n not in _KEYWORDS | _AGGREGATIONS and n.lower() not in ("inf", "nan")
)
_values = st.text(st.characters(codec="ascii", exclude_characters='"\\\n$'), max_size=8)
_matcher = st.builds(Matcher, _names, st.sampled_from(["=", "!=", "=~", "!~"]), _values)
_selector = st.builds(Selector, _names, st.lists(_matcher, max_size=3).map(tuple))


def _render(s: Selector) -> str:
    return s.metric + ("{" + ", ".join(f'{m.label}{m.op}"{m.value}"' for m in s.matchers) + "}" if s.matchers else "")


@given(
    st.lists(_selector, min_size=1, max_size=4),
    st.sampled_from([" + ", " and on (device_uuid) ", " / ", " or "]),
    st.sampled_from(["{}", "sum by (node) ({})", "100 * {}", "topk(10, {})", "rate({}[5m])"]),
)
def test_selectors_are_read_back_from_expressions(parsed, operator, wrapper):
    expr = operator.join(wrapper.format(_render(s)) for s in parsed)
    assert selectors(expr) == parsed


@given(_selector, st.sampled_from(["{", "(", '"']))
def test_a_broken_expression_is_refused_naming_it(selector, junk):
    expr = f"sum({_render(selector)}) {junk}"
    with pytest.raises(SelectorError, match=re.escape(repr(expr))):
        selectors(expr)


def test_the_upstream_dashboard_queries_are_read():
    queries = dashboard_queries(json.loads(UPSTREAM_DASHBOARD.read_text()))
    assert len(queries) == 19  # 17 panel targets + the $node and $namespace variables, v2.10.0
    join = next(q for q in queries if "and on" in q.expr)
    assert [s.metric for s in join.selectors] == ["hami_host_gpu_memory_used_bytes", "hami_gpu_memory_limit_bytes"]
    assert join.selectors[1].matchers == (Matcher("node", "=~", ".*"),)
    assert "fixtures/hami-vgpu-dashboard.json" not in (FIXTURES / "hami-vgpu-dashboard.source").read_text()
    assert "dashboards/hami-vgpu-dashboard.json" in (FIXTURES / "hami-vgpu-dashboard.source").read_text()


# --------------------------------------------------------------------------- a running cluster


Series = list[tuple[str, dict[str, str], float]]


DECLARED: set[str] = set()
"""Sample names every scraped endpoint declares (HELP/TYPE), with or without series."""


def _scrape(url: str) -> Series:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    families = list(text_string_to_metric_families(text))
    DECLARED.update(f.name + suffix for f in families for suffix in ("", "_total", "_bucket", "_count", "_sum"))
    return [(s.name, dict(s.labels), s.value) for family in families for s in family.samples]


QUOTA = {
    "apiVersion": "v1",
    "kind": "ResourceQuota",
    "metadata": {"name": "gpu-quota", "namespace": "default"},
    "spec": {"hard": {"limits.nvidia.com/gpumem": "200000", "limits.nvidia.com/gpucores": "800"}},
}

MEASURED: set[str] = set()
"""Upstream's vGPU monitor measures the host and container usage series (NVML, HAMi-core's shared
region: cmd/vGPUmonitor/metrics.go); the agent's usage sampler (hami_sample_usage, issue 20) exports
them, here from the sandbox's simulated figures. Empty: every upstream selector matches."""


@pytest.fixture(scope="module")
def scraped():
    from hami.node.metrics import serve_metrics
    from hami.sandbox.cli import load_pods
    from hami.sandbox.cluster import Sandbox

    with Sandbox() as sandbox:
        sandbox.core_v1.create_namespaced_resource_quota("default", QUOTA)
        outcomes = [sandbox.submit(pod) for pod in load_pods(())]
        assert sum(o.phase == "Running" for o in outcomes) >= 10
        for agent in sandbox.agents.values():
            # a fresh round now that every pod runs: a scrape resamples at most once a second, so one that
            # follows a periodic round by less than that may still lack the newest containers
            agent.usage.sample()
        servers = [serve_metrics(agent.metrics.registry, "127.0.0.1", 0) for agent in sandbox.agents.values()]
        try:
            series = _scrape(sandbox.service.server.url)
            for server in servers:
                series += _scrape(server.url)
        finally:
            for server in servers:
                server.stop()
    return series


def _unmatched(queries: list[DashboardQuery], series: Series) -> dict[str, str]:
    missing = {}
    for query in queries:
        for selector in query.selectors:
            hits = [labels for name, labels, _ in series if selector.matches(name, labels)]
            if query.label is not None:
                hits = [labels for labels in hits if labels.get(query.label)]
            if not hits:
                missing[selector.metric] = f"{query.where}: {query.expr}"
    return missing


def test_every_upstream_dashboard_selector_matches_a_scraped_series(scraped):
    """Upstream: dashboards/hami-vgpu-dashboard.json (HAMi v2.10.0), every target and variable."""
    queries = dashboard_queries(json.loads(UPSTREAM_DASHBOARD.read_text()))
    missing = _unmatched(queries, scraped)
    assert set(missing) == MEASURED, missing


ONLY_ON_FAILURE = {"hami_bind_failures_total", "hami_agent_backend_load_errors", "hami_agent_discovery_errors"}
"""Our failure counters and gauges: declared from start-up, with series once something fails."""


def test_our_dashboard_selectors_match_scraped_series(scraped):
    """deploy/helm/hami/dashboards/hami.json uses upstream's names and labels, and our extras."""
    queries = dashboard_queries(json.loads(OUR_DASHBOARD.read_text()))
    assert len(queries) >= 10
    missing = _unmatched(queries, scraped)
    assert set(missing) <= ONLY_ON_FAILURE, missing
    assert ONLY_ON_FAILURE <= DECLARED


# Label names per metric, from cmd/scheduler/metrics.go and cmd/vGPUmonitor/metrics.go (v2.10.0);
# zone="vGPU" is the const label NewClusterManager("vGPU", …) wraps every collector with.
UPSTREAM_LABELS = {
    "hami_gpu_memory_limit_bytes": {"node", "device_uuid", "device_index", "device_type"},
    "hami_gpu_core_limit_ratio": {"node", "device_uuid", "device_index", "device_type"},
    "hami_gpu_memory_allocated_bytes": {"node", "device_uuid", "device_index", "device_cores", "device_type"},
    "hami_gpu_shared_count": {"node", "device_uuid", "device_index", "device_type"},
    "hami_gpu_core_allocated_ratio": {"node", "device_uuid", "device_index", "device_type"},
    "hami_node_gpu_overview": {"node", "device_uuid", "device_index", "device_cores", "device_memory_limit", "device_type"},
    "hami_node_gpu_memory_allocated_ratio": {"node", "device_uuid", "device_index", "device_type"},
    "hami_resource_quota_used": {"namespace", "quota_name", "limit"},
    "hami_resource_quota_limit": {"namespace", "quota_name"},
    "hami_vgpu_memory_allocated_bytes": {"namespace", "node", "pod", "container_index", "device_uuid"},
    "hami_vgpu_core_allocated_ratio": {"namespace", "node", "pod", "container_index", "device_uuid"},
    "hami_vgpu_memory_limit_bytes": {"namespace", "pod", "container", "vdevice_index", "device_uuid"},
}


def test_upstream_metric_names_carry_upstream_labels_and_zone(scraped):
    """Upstream: cmd/scheduler/metrics.go collectNodeMetrics/collectQuotaMetrics/collectContainerMetrics,
    cmd/vGPUmonitor/metrics.go ctrvGPUlimitdesc."""
    seen: dict[str, set[frozenset[str]]] = {}
    for name, labels, _ in scraped:
        if name in UPSTREAM_LABELS:
            seen.setdefault(name, set()).add(frozenset(labels))
    assert set(seen) == set(UPSTREAM_LABELS)
    wrong = {name: sets for name, sets in seen.items() if sets != {frozenset(UPSTREAM_LABELS[name] | {"zone"})}}
    assert not wrong
    assert {labels["zone"] for name, labels, _ in scraped if name in UPSTREAM_LABELS} == {"vGPU"}


def test_quota_used_and_limit_follow_the_namespace_grants(scraped):
    """Upstream: cmd/scheduler/metrics.go collectQuotaMetrics, pkg/device/quota.go (used = granted MiB
    and percent cores per device, limit = limits.<resource> of the namespace's quota)."""
    quota = {
        (n, labels["namespace"], labels["quota_name"]): (labels.get("limit"), v)
        for n, labels, v in scraped
        if n.startswith("hami_resource_quota_")
    }
    granted = {"nvidia.com/gpumem": 0.0, "nvidia.com/gpucores": 0.0}
    for name, labels, value in scraped:
        if name == "hami_vgpu_memory_allocated_bytes" and labels["namespace"] == "default" and labels["device_uuid"].startswith("NVIDIA"):
            granted["nvidia.com/gpumem"] += value / 2**20
        if name == "hami_vgpu_core_allocated_ratio" and labels["namespace"] == "default" and labels["device_uuid"].startswith("NVIDIA"):
            granted["nvidia.com/gpucores"] += value
    assert granted["nvidia.com/gpumem"] > 0
    assert quota[("hami_resource_quota_limit", "default", "nvidia.com/gpumem")] == (None, 200000)
    assert quota[("hami_resource_quota_limit", "default", "nvidia.com/gpucores")] == (None, 800)
    assert quota[("hami_resource_quota_used", "default", "nvidia.com/gpumem")] == ("200000", granted["nvidia.com/gpumem"])
    assert quota[("hami_resource_quota_used", "default", "nvidia.com/gpucores")] == ("800", granted["nvidia.com/gpucores"])
