"""pytest plugin for hami and for third-party backends: opt in with ``pytest_plugins = ["hami.testing"]``.

Needs the ``testing`` extra (pytest, hypothesis). Fixtures: ``hami_manager`` and ``register_backend``
(an in-process backend in a fresh manager), ``kube_apiserver``/``kube_client``/``core_v1``,
``fake_kubelet``/``kubelet_dir``, ``start_agent``, ``extender_harness``. The stand-ins behind them
are in :mod:`hami.fakes` (no pytest needed); the conformance kit is :mod:`hami.testing.conformance`.
"""

from __future__ import annotations

from hami.testing.agent_fixtures import start_agent  # noqa: F401
from hami.testing.backends import fake_distribution, hami_manager, register_backend  # noqa: F401
from hami.testing.extender_fixtures import extender_harness  # noqa: F401
from hami.testing.kubeapi_fixtures import core_v1, kube_apiserver, kube_client  # noqa: F401
from hami.testing.kubelet_fixtures import fake_kubelet, kubelet_dir  # noqa: F401
