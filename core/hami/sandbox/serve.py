"""``hami sandbox --serve``: keep the sandbox cluster running with the dashboard and a kubeconfig.

Besides serving, it plays two more parts of a cluster for pods people create with ``kubectl``:
kube-scheduler writes a Pending pod's reasons on its ``PodScheduled`` condition and in a
``FailedScheduling`` event (the dashboard and ``kubectl describe`` read them), and a pod created
through the API server goes through admission and scheduling like the sandbox's own. The in-memory
API server calls no admission webhook, so the sandbox deletes such a pod and submits it again
through the webhook under the same name (its uid changes); a pod deleted with ``kubectl`` has its
devices released by its node's kubelet.
"""

from __future__ import annotations

import json
import logging
import queue
import shlex
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from hami.listwatch import ListWatch
from hami.sandbox.cluster import Sandbox
from hami.sandbox.outcome import PodOutcome

log = logging.getLogger(__name__)

SCHEDULER = "default-scheduler"
KEPT_FIELDS = ("name", "namespace", "labels", "annotations", "generateName")


def record_unschedulable(sandbox: Sandbox, namespace: str, name: str, message: str) -> None:
    """What kube-scheduler writes for a pod it cannot place: the condition and a ``FailedScheduling`` event."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    api: Any = sandbox.core_v1  # raw calls (_preload_content=False): JSON in, urllib3 responses out
    if api is None:
        return
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": None,
        "lastTransitionTime": now,
    }
    try:
        pod = api.read_namespaced_pod(name, namespace, _preload_content=False)
        current = json.loads(pod.data)
        conditions = [c for c in (current.get("status") or {}).get("conditions") or [] if c.get("type") != "PodScheduled"]
        api.patch_namespaced_pod_status(name, namespace, {"status": {"conditions": [*conditions, condition]}}, _preload_content=False)
        uid = (current.get("metadata") or {}).get("uid")
        api.create_namespaced_event(
            namespace,
            {
                "metadata": {"generateName": f"{name}.", "namespace": namespace},
                "involvedObject": {"kind": "Pod", "namespace": namespace, "name": name, "uid": uid, "apiVersion": "v1"},
                "reason": "FailedScheduling",
                "message": message,
                "type": "Warning",
                "source": {"component": SCHEDULER},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
            _preload_content=False,
        )
    except ApiException as exc:  # the pod went away meanwhile: nothing to explain
        log.debug("event=unschedulable_not_recorded pod=%s/%s status=%s", namespace, name, exc.status)


def record_outcomes(sandbox: Sandbox, outcomes: Iterable[PodOutcome]) -> None:
    for outcome in outcomes:
        if outcome.phase == "Pending" and outcome.reason:
            record_unschedulable(sandbox, outcome.namespace, outcome.name, outcome.reason)


def _resubmittable(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The pod as its author wrote it: server-set metadata and status dropped."""
    meta = pod.get("metadata") or {}
    kept = {k: meta[k] for k in KEPT_FIELDS if k in meta}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": kept, "spec": dict(pod.get("spec") or {})}


class Intake:
    """Pods created through the API server (kubectl) go through the sandbox; deleted ones free their devices."""

    def __init__(self, sandbox: Sandbox, on_outcome: Callable[[PodOutcome], None] | None = None) -> None:
        self.sandbox = sandbox
        self.on_outcome = on_outcome
        self.handled: set[str] = set()
        self._queue: queue.Queue[Mapping[str, Any] | None] = queue.Queue()
        assert sandbox.core_v1 is not None
        self._watch = ListWatch("sandbox-intake", sandbox.core_v1.list_pod_for_all_namespaces, self._event, self._list, resync_seconds=None)
        self._worker = threading.Thread(target=self._run, name="sandbox-intake", daemon=True)

    def start(self) -> Intake:
        self._watch.start()
        self._watch.wait_synced(10)
        self._worker.start()
        return self

    def stop(self) -> None:
        self._watch.stop()
        self._queue.put(None)
        self._worker.join(timeout=10)

    def _list(self, items: list[Mapping[str, Any]]) -> None:
        # what exists when the sandbox starts serving went through it already
        self.handled.update(str((p.get("metadata") or {}).get("uid")) for p in items)

    def _event(self, kind: str, pod: Mapping[str, Any]) -> None:
        uid = str((pod.get("metadata") or {}).get("uid"))
        node = (pod.get("spec") or {}).get("nodeName")
        if kind == "DELETED":
            self.sandbox.release_on_node(node, pod)
        elif kind == "ADDED" and uid not in self.handled and not node:
            self._queue.put(pod)

    def _run(self) -> None:
        while True:
            pod = self._queue.get()
            if pod is None:
                return
            uid = str((pod.get("metadata") or {}).get("uid"))
            if uid in self.handled:
                continue
            self.handled.add(uid)
            try:
                self._admit(pod)
            except Exception:  # one bad pod must not end the intake
                log.exception("event=sandbox_intake_failed pod=%s", (pod.get("metadata") or {}).get("name"))

    def _admit(self, pod: Mapping[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        namespace, name = meta.get("namespace", "default"), meta.get("name", "")
        api: Any = self.sandbox.core_v1
        assert api is not None
        try:
            api.delete_namespaced_pod(name, namespace, grace_period_seconds=0, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:  # deleted by its author meanwhile
                return
            raise
        outcome = self.sandbox.submit(_resubmittable(pod))
        try:
            created = json.loads(api.read_namespaced_pod(outcome.name, outcome.namespace, _preload_content=False).data)
            self.handled.add(str(created["metadata"]["uid"]))
        except ApiException:
            pass
        record_outcomes(self.sandbox, [outcome])
        log.info("event=sandbox_intake pod=%s/%s phase=%s node=%s", outcome.namespace, outcome.name, outcome.phase, outcome.node)
        if self.on_outcome is not None:
            self.on_outcome(outcome)


def serve(
    sandbox: Sandbox, outcomes: Iterable[PodOutcome], port: int, echo: Callable[[str], None], stop: threading.Event | None = None
) -> None:
    """Serve the dashboard on 127.0.0.1:``port`` until SIGTERM, Ctrl-C or ``stop``; print where everything is."""
    from hami.ui.cli import start_dashboard, stop_dashboard, url_of

    record_outcomes(sandbox, outcomes)
    folder = tempfile.mkdtemp(prefix="hami-sandbox-")
    kubeconfig = Path(folder) / "kubeconfig.yaml"
    sandbox.api.write_kubeconfig(kubeconfig)
    intake = Intake(
        sandbox,
        lambda o: echo(f"pod {o.namespace}/{o.name}: {o.phase}{' on ' + o.node if o.node else ''}{': ' + o.reason if o.reason else ''}"),
    ).start()
    dashboard, server = start_dashboard(sandbox.api.api_client(), sandbox.manager.kinds, host="127.0.0.1", port=port, title="hami sandbox")
    done = stop or threading.Event()
    try:
        echo(f"dashboard: {url_of(server)}")
        echo(f"kubeconfig: {kubeconfig}")
        echo(f"try: kubectl --kubeconfig {shlex.quote(str(kubeconfig))} get pods -A")
        echo("pods created with kubectl go through the sandbox's webhook, scheduler and kubelet; Ctrl-C to stop")
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
    finally:
        stop_dashboard(dashboard, server)
        intake.stop()
        shutil.rmtree(folder, ignore_errors=True)
