"""Regenerate the committed protobuf/gRPC modules from ``v1/api.proto`` (kubelet's PodResources API).

Run as ``python -m hami.node.podresources.regenerate``; the protoc run is :func:`hami.protogen.compile_proto`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hami.protogen import GENERATED, compile_proto, write_all

PACKAGE_DIR = Path(__file__).resolve().parent / "v1"
PROTO = PACKAGE_DIR / "api.proto"

__all__ = ["GENERATED", "PACKAGE_DIR", "PROTO", "generate"]


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on ``api.proto`` and write the generated files (flat) into ``out_dir``."""
    return compile_proto(PROTO, out_dir)


if __name__ == "__main__":
    sys.exit(write_all(generate(PACKAGE_DIR)))
