"""Kubelet device plugin API (v1beta1): constants shared by our plugins and the fake kubelet.

The generated gRPC/protobuf modules live in :mod:`hami.node.deviceplugin.v1beta1`; regenerate them with
``python -m hami.node.deviceplugin.regenerate`` after editing ``v1beta1/api.proto``.
"""

from __future__ import annotations

__all__ = ["API_VERSION", "DEVICE_PLUGIN_DIR", "HEALTHY", "KUBELET_SOCKET", "UNHEALTHY"]

#: The only API version kubelet accepts in ``RegisterRequest.version``.
API_VERSION = "v1beta1"
#: Directory holding kubelet's registration socket and every plugin's socket.
DEVICE_PLUGIN_DIR = "/var/lib/kubelet/device-plugins/"
#: Base name of kubelet's registration socket inside :data:`DEVICE_PLUGIN_DIR`.
KUBELET_SOCKET = "kubelet.sock"
#: ``Device.health`` values; only healthy devices count toward the node's allocatable.
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
