"""Regenerate the committed protobuf/gRPC modules of the kubelet DRA (``v1/api.proto``) and plugin
registration (``pluginregistration/api.proto``) APIs.

Run as ``python -m hami.dra.regenerate``; the protoc run is :func:`hami.protogen.compile_proto`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hami.protogen import GENERATED, compile_proto, write_all

PACKAGE_DIR = Path(__file__).resolve().parent
PROTOS = (PACKAGE_DIR / "v1" / "api.proto", PACKAGE_DIR / "pluginregistration" / "api.proto")

__all__ = ["GENERATED", "PACKAGE_DIR", "PROTOS", "generate"]


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on both protos; write each one's generated files into ``out_dir/<its folder>``."""
    return [path for proto in PROTOS for path in compile_proto(proto, Path(out_dir) / proto.parent.name)]


if __name__ == "__main__":
    sys.exit(write_all(generate(PACKAGE_DIR)))
