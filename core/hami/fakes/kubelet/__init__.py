"""A fake kubelet speaking the real device plugin gRPC API, and a sample plugin to talk to it.

Device plugins are tested against it instead of a node: registration, ListAndWatch, preferred allocation,
Allocate/PreStartContainer on pod admission, restarts that wipe sockets, and node capacity updates.
"""

from __future__ import annotations

from hami.k8snames import is_extended_resource_name

from .admission import AdmissionResult, ContainerAllocation
from .kubelet import FakeKubelet
from .sample_plugin import SamplePlugin

__all__ = ["AdmissionResult", "ContainerAllocation", "FakeKubelet", "SamplePlugin", "is_extended_resource_name"]
