"""The sandbox shows usage without hardware (issue 20): its agents sample simulated figures, publish
them on their Nodes, and ``hami top`` shows each running share's use against its grant."""

from __future__ import annotations

import json
import time

from hami.node.usage import USAGE_ANNOTATION
from hami.plugin.model import ShareLoad
from hami.sandbox.cli import load_pods
from hami.sandbox.cluster import Sandbox
from hami.top import snapshot


def test_sandbox_agents_publish_plausible_usage_that_top_shows():
    with Sandbox() as sandbox:
        outcomes = [sandbox.submit(pod) for pod in load_pods(())]
        running = {o.name for o in outcomes if o.phase == "Running"}
        assert running
        deadline = time.monotonic() + 30
        while True:  # each agent publishes within a sampling round (5 s) of its container set changing
            nodes = json.loads(sandbox.core_v1.list_node(_preload_content=False).data)["items"]
            pods = json.loads(sandbox.core_v1.list_pod_for_all_namespaces(_preload_content=False).data)["items"]
            view = snapshot(sandbox.manager.kinds, nodes, pods)
            holders = [h for n in view["nodes"] for d in n["devices"] for h in d["pods"]]
            if (holders and all("used_mib" in h for h in holders)) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        agents = list(sandbox.agents.values())
        shares: list[ShareLoad] = [s for a in agents for s in a.usage.snapshot.shares()]
    assert holders and all("used_mib" in h for h in holders), [h for h in holders if "used_mib" not in h][:3]
    assert {h["pod"] for h in holders} <= running
    for holder in holders:  # simulated: 30-90 % of the memory grant
        assert 0.3 * holder["memory_mib"] - 1 <= holder["used_mib"] <= 0.9 * holder["memory_mib"], holder
    assert all(
        USAGE_ANNOTATION in (n["metadata"].get("annotations") or {})
        for n in nodes
        if any(d.get("usage") for v in view["nodes"] if v["name"] == n["metadata"]["name"] for d in v["devices"])
    )
    assert shares and all(s.utilization is not None for s in shares)
