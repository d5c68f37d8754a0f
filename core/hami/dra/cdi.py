"""CDI spec files (cncf-tags/container-device-interface, SPEC.md) from the backends' container edits.

One spec file per prepared claim, ``<cdi dir>/hami.io-claim_<claim uid>.json``, kind ``hami.io/claim``,
one CDI device per allocated device: ``hami.io/claim=<claim uid>-<device>``. Kubelet hands those names
to the runtime (containerd/CRI-O with CDI enabled), which applies the edits. CDI devices a backend
already names itself (``ContainerEdits.cdi_devices``) are returned to kubelet beside ours: a spec
cannot reference another spec.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hami.dra import DRIVER
from hami.errors import ValidationError
from hami.plugin.model import ContainerEdits

CDI_VERSION = "0.6.0"
"""The oldest spec version with everything we write (device-node hostPath: 0.5.0; annotations: 0.6.0)."""
KIND = f"{DRIVER}/claim"
DEFAULT_CDI_DIR = Path("/var/run/cdi")
_DEVICE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.:-]*$")


def cdi_device_name(claim_uid: str, device: str) -> str:
    """The CDI device name of one allocated device of a claim (unique per node)."""
    name = f"{claim_uid}-{device}"
    if not _DEVICE_NAME.match(name):
        raise ValidationError(f"CDI device name {name!r} (claim uid {claim_uid!r}) has characters CDI does not allow")
    return name


def qualified(claim_uid: str, device: str) -> str:
    return f"{KIND}={cdi_device_name(claim_uid, device)}"


def container_edits(edits: ContainerEdits) -> dict[str, Any]:
    """A CDI ``containerEdits`` object for our :class:`ContainerEdits` (empty lists left out)."""
    out: dict[str, Any] = {}
    if edits.env:
        out["env"] = [f"{k}={v}" for k, v in sorted(edits.env.items())]
    if edits.devices:
        out["deviceNodes"] = [{"path": d.container_path, "hostPath": d.host_path, "permissions": d.permissions} for d in edits.devices]
    if edits.mounts:
        out["mounts"] = [
            {"hostPath": m.host_path, "containerPath": m.container_path, "options": [_access(m.read_only), "nosuid", "nodev", "bind"]}
            for m in edits.mounts
        ]
    return out


def _access(read_only: bool) -> str:
    return "ro" if read_only else "rw"


def spec_for_claim(claim_uid: str, devices: Mapping[str, ContainerEdits]) -> dict[str, Any]:
    """The CDI spec of one claim: ``devices`` maps each allocated device's pool name to its edits."""
    entries = []
    for name, edits in sorted(devices.items()):
        entry: dict[str, Any] = {"name": cdi_device_name(claim_uid, name), "containerEdits": container_edits(edits)}
        if edits.annotations:
            entry["annotations"] = dict(edits.annotations)
        entries.append(entry)
    spec = {"cdiVersion": CDI_VERSION, "kind": KIND, "devices": entries, "containerEdits": {}}
    check_spec(spec)
    return spec


def check_spec(spec: Mapping[str, Any]) -> None:
    """SPEC.md's rules for what we write: version, kind, unique device names, absolute paths, env form."""
    if spec.get("cdiVersion") != CDI_VERSION or spec.get("kind") != KIND:
        raise ValidationError(f"CDI spec cdiVersion/kind={spec.get('cdiVersion')!r}/{spec.get('kind')!r}: expected {CDI_VERSION}/{KIND}")
    names = [d["name"] for d in spec["devices"]]
    if not names or len(set(names)) != len(names):
        raise ValidationError(f"CDI spec devices {names!r}: need at least one device and unique names")
    for device in spec["devices"]:
        edits = device["containerEdits"]
        for env in edits.get("env", ()):
            if "=" not in env:
                raise ValidationError(f"CDI spec device {device['name']!r}: env {env!r} is not KEY=VALUE")
        for node in edits.get("deviceNodes", ()):
            if not node["path"].startswith("/"):
                raise ValidationError(f"CDI spec device {device['name']!r}: device node path {node['path']!r} is not absolute")
        for mount in edits.get("mounts", ()):
            if not mount["hostPath"].startswith("/") or not mount["containerPath"].startswith("/"):
                raise ValidationError(f"CDI spec device {device['name']!r}: mount {mount!r} needs absolute paths")


def spec_path(cdi_dir: Path | str, claim_uid: str) -> Path:
    """``<dir>/hami.io-claim_<uid>.json``: CDI reads every ``*.json``/``*.yaml`` in its directories."""
    return Path(cdi_dir) / f"{DRIVER}-claim_{claim_uid}.json"


def write_spec(cdi_dir: Path | str, claim_uid: str, spec: Mapping[str, Any]) -> Path:
    """Write atomically (rename), so the runtime never reads half a spec."""
    path = spec_path(cdi_dir, claim_uid)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hami-cdi-", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(spec, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def remove_spec(cdi_dir: Path | str, claim_uid: str) -> bool:
    try:
        spec_path(cdi_dir, claim_uid).unlink()
    except FileNotFoundError:
        return False
    return True


def all_names(spec: Mapping[str, Any], extra: Sequence[str] = ()) -> list[str]:
    return [f"{KIND}={d['name']}" for d in spec["devices"]] + list(extra)
