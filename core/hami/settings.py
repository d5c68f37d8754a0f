"""The operator's configuration file, shared by the scheduler and the node agent (a ConfigMap)::

backends:
  acme: {split_count: 10, memory_scaling: 1.5}
  other: {split_count: 4}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hami.errors import HamiError
from hami.plugin.manager import BackendManager
from hami.wire.signing import SigningKeys

log = logging.getLogger(__name__)

SIGNING_KEY_DIR_ENV = "HAMI_SIGNING_KEY_DIR"


def load_settings(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise HamiError(f"cannot read the configuration {path!r}: {exc}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("backends", {}), Mapping):
        raise HamiError(f"configuration {path!r}: expected a mapping with an optional 'backends' mapping")
    return dict(data)


def configure_backends(manager: BackendManager, settings: Mapping[str, Any]) -> None:
    """Overlay each backend's settings. A backend the configuration names but this image lacks is
    logged and skipped (one ConfigMap serves images with different backends); a bad shape is an error."""
    for name, overrides in (settings.get("backends") or {}).items():
        if not isinstance(overrides, Mapping):
            raise HamiError(f"configuration backends.{name}: expected a mapping, got {overrides!r:.80}")
        if name not in manager.backends:
            log.warning("event=config_for_missing_backend backend=%s loaded=%s", name, ",".join(sorted(manager.backends)))
            continue
        manager.configure(name, overrides)


def signing_keys(directory: str | None, insecure_skip: bool, *, legacy_hmac_key: str | None = None) -> SigningKeys | None:
    """The scheduler's allocation signing keys; running without them must be asked for explicitly."""
    directory = directory or os.environ.get(SIGNING_KEY_DIR_ENV)
    if directory:
        return SigningKeys.from_directory(directory, legacy_hmac_key=legacy_hmac_key)
    if insecure_skip:
        return None
    raise HamiError(
        f"no signing key: pass --signing-key-dir (or set {SIGNING_KEY_DIR_ENV}) or, for development only, --insecure-skip-signature"
    )
