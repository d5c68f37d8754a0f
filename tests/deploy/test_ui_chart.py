"""The chart's optional dashboard (``ui.enabled``): off by default, least-privilege RBAC that is exactly
what ``hami ui`` uses (its requests recorded by the in-memory API server), a command line that parses."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from hami_deploy_tools import VALUE_SETS  # type: ignore[import-not-found]  # registered by conftest

from hami.fakes.kubeapi.audit import RequestLog, kubeconfig_for
from hami.kube import api_client
from hami.plugin.manager import load_backends
from hami.ui.cli import start_dashboard, stop_dashboard, ui_command


def _rules(docs: Any) -> set[tuple[str, str, str]]:
    role = docs.one("ClusterRole", "hami-ui")
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_off_by_default(render) -> None:
    docs = render("default")
    assert not [d for d in docs if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "ui"]


@pytest.mark.parametrize("events", [False, True])
def test_least_privilege_is_what_hami_ui_uses(render, kube_apiserver, core_v1, tmp_path: Path, events: bool) -> None:
    docs = render("default", "--set", "ui.enabled=true", "--set", f"ui.events={str(events).lower()}")
    granted = _rules(docs)
    for doc in docs:
        if (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "ui":
            kubernetes_validate.validate(doc, VALUE_SETS["default"], strict=True)
    assert granted == {("", r, v) for r in ("nodes", "pods", *(("events",) if events else ())) for v in ("list", "watch")}
    binding = docs.one("ClusterRoleBinding", "hami-ui")
    assert binding["subjects"][0]["name"] == "hami-ui" and binding["roleRef"]["name"] == "hami-ui"
    deployment = docs.one("Deployment", "hami-ui")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "hami-ui"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert docs.one("Service", "hami-ui")["spec"]["type"] == "ClusterIP"
    args = container["command"][2:]
    assert container["command"][:2] == ["hami", "ui"] and ("--events" in args) == events
    context = ui_command.make_context("ui", list(args))  # the chart's command line parses
    assert context.params["host"] == "0.0.0.0" and context.params["events"] is events

    log = kube_apiserver.request_log = RequestLog()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(kubeconfig_for(kube_apiserver, "ui")))
    ui, server = start_dashboard(api_client(str(kubeconfig)), load_backends().kinds, port=0, events=events)
    try:
        ui.watch.view()
        deadline = time.monotonic() + 10
        while {r.verb for r in log.by_component("ui")} != {"list", "watch"} and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_dashboard(ui, server)
    used = {(r.group, r.resource, r.verb) for r in log.by_component("ui")}
    assert used == granted  # every request allowed, every grant used


def test_ui_help_names_the_read_only_dashboard() -> None:
    result = CliRunner().invoke(ui_command, ["--help"])
    assert result.exit_code == 0 and "read-only web dashboard" in result.output
