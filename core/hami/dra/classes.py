"""DeviceClasses for the driver's devices: one per backend vendor kind, and one for any of them.

Their names are what pod authors write in ``deviceClassName``: ``<vendor key as a DNS label>.hami.io``
(``acme.hami.io`` for vendor key ``ACME``) and ``hami.io`` for every device the driver publishes. The
chart renders the same list (``dra.deviceClasses``); ``hami dra classes`` prints it for the installed
backends.
"""

from __future__ import annotations

import json
from typing import Any

from hami.dra import DRIVER
from hami.dra.slices import _label


def class_name(vendor: str) -> str:
    return f"{_label(vendor)}.{DRIVER}"


def device_class(name: str, vendor: str | None) -> dict[str, Any]:
    expression = f'device.driver == "{DRIVER}"'
    if vendor is not None:
        expression += f' && device.attributes["{DRIVER}"].vendor == {json.dumps(vendor)}'
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "hami"}},
        "spec": {"selectors": [{"cel": {"expression": expression}}]},
    }


def device_classes(vendors: list[str]) -> list[dict[str, Any]]:
    """``hami.io`` plus one class per vendor key (sorted), names unique."""
    out = [device_class(DRIVER, None)]
    seen = {DRIVER: "any"}
    for vendor in sorted(vendors):
        name = class_name(vendor)
        if name in seen:
            raise ValueError(f"vendor keys {seen[name]!r} and {vendor!r} both give device class {name!r}")
        seen[name] = vendor
        out.append(device_class(name, vendor))
    return out
