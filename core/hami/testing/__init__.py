"""pytest plugin for hami and for third-party backends: opt in with ``pytest_plugins = ["hami.testing"]``.

Fixtures: ``hami_manager`` and ``register_backend`` (an in-process backend in a fresh manager);
the conformance kit lives in :mod:`hami.testing.conformance`.
"""

from __future__ import annotations

from hami.testing.backends import fake_distribution, hami_manager, register_backend  # noqa: F401

# harness fixtures (each line re-exports one module's fixtures)
from hami.testing.kubeapi.fixtures import core_v1, kube_apiserver, kube_client  # noqa: F401
from hami.testing.kubelet.fixtures import fake_kubelet, kubelet_dir  # noqa: F401
from hami.testing.agent import start_agent  # noqa: F401
from hami.testing.scheduler import extender_harness  # noqa: F401
