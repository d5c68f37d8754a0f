"""An in-memory Kubernetes API server over real HTTP, for tests.

The unmodified ``kubernetes`` client (and kubectl) talk to it as to a real cluster, so the scheduler
extender, webhook and node agent are tested against resourceVersion conflicts, watch semantics,
selectors and patch dialects that behave like kube-apiserver's. See docs/testing-harness.md.
"""

from __future__ import annotations

from hami.fakes.kubeapi.errors import StatusError
from hami.fakes.kubeapi.faults import Faults
from hami.fakes.kubeapi.server import KubeAPIServer, serve
from hami.fakes.kubeapi.store import Store, WatchEvent

__all__ = ["Faults", "KubeAPIServer", "StatusError", "Store", "WatchEvent", "serve"]
