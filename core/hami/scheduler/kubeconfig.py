"""The KubeSchedulerConfiguration that puts kube-scheduler in front of this extender."""

from __future__ import annotations

from typing import Any

from hami.plugin.manager import BackendManager
from hami.scheduler.config import DEFAULT_SCHEDULER_NAME


def scheduler_configuration(
    manager: BackendManager,
    url: str,
    *,
    scheduler_name: str = DEFAULT_SCHEDULER_NAME,
    insecure: bool = True,
    ca_file: str | None = None,
    http_timeout: str = "30s",
    cert_file: str | None = None,
    key_file: str | None = None,
) -> dict[str, Any]:
    """Every installed backend's resources are managed and ``ignoredByScheduler``: memory and core
    shares are never advertised by nodes, and the extender checks counts against the real devices.
    ``cert_file``/``key_file``: kube-scheduler's client certificate, for an extender run with --client-ca."""
    resources = sorted({name for kind in manager.kinds.values() for name in kind.resources.all()})
    https = url.startswith("https://")
    extender: dict[str, Any] = {
        "urlPrefix": url.rstrip("/"),
        "filterVerb": "filter",
        "prioritizeVerb": "prioritize",
        "bindVerb": "bind",
        "weight": 1,
        "enableHTTPS": https,
        "httpTimeout": http_timeout,
        "nodeCacheCapable": True,
        "ignorable": False,
        "managedResources": [{"name": name, "ignoredByScheduler": True} for name in resources],
    }
    if https:
        extender["tlsConfig"] = {"insecure": insecure} if not ca_file else {"insecure": False, "caFile": ca_file}
        if cert_file and key_file:
            extender["tlsConfig"].update(certFile=cert_file, keyFile=key_file)
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "leaderElection": {"leaderElect": False},
        "profiles": [{"schedulerName": scheduler_name}],
        "extenders": [extender],
    }
