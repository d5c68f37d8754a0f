"""Kubernetes Dynamic Resource Allocation (``resource.k8s.io/v1``) for every installed backend.

The node side of a DRA driver named :data:`DRIVER` (``hami.io``): ResourceSlices built from the
backends' discovery and split (:mod:`hami.dra.slices`), kubelet's plugin registration and DRA gRPC
services (:mod:`hami.dra.kubelet`) that prepare claims through the backends' prepare and
container-edit hooks and write CDI specs (:mod:`hami.dra.cdi`). The generated kubelet API modules
live in :mod:`hami.dra.v1` and :mod:`hami.dra.pluginregistration`; regenerate them with
``python -m hami.dra.regenerate``.
"""

from __future__ import annotations

DRIVER = "hami.io"
"""The DRA driver name: ResourceSlices' ``spec.driver``, DeviceClass selectors, the kubelet plugin name."""
DRA_SERVICE = "v1.DRAPlugin"
"""What kubelet looks for in ``supported_versions`` (k8s.io/kubelet/pkg/apis/dra/v1 DRAPluginService)."""
PLUGIN_TYPE = "DRAPlugin"
"""``PluginInfo.type`` of a DRA plugin (pkg/apis/pluginregistration/v1/constants.go)."""
