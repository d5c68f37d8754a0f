"""Regenerate the committed protobuf/gRPC modules of the kubelet DRA (``v1/api.proto``) and plugin
registration (``pluginregistration/api.proto``) APIs.

The same protoc invocation as :mod:`hami.node.deviceplugin.regenerate` (package root as include path,
so the gRPC modules import ``from hami.dra.v1 import api_pb2``). Run as ``python -m hami.dra.regenerate``;
the test suite regenerates into a temp dir and compares, so a stale generation fails CI.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
INCLUDE_ROOT = Path(__file__).resolve().parents[2]
PROTOS = (PACKAGE_DIR / "v1" / "api.proto", PACKAGE_DIR / "pluginregistration" / "api.proto")
GENERATED = ("api_pb2.py", "api_pb2_grpc.py", "api_pb2.pyi")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on both protos; write each one's generated files into ``out_dir/<its folder>``."""
    from grpc_tools import protoc  # dev-only dependency (grpcio-tools)

    written = []
    for proto in PROTOS:
        rel = proto.relative_to(INCLUDE_ROOT).as_posix()
        target_dir = Path(out_dir) / proto.parent.name
        target_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="hami-protoc-") as tmp:
            args = ["grpc_tools.protoc", f"-I{INCLUDE_ROOT}", f"--python_out={tmp}", f"--grpc_python_out={tmp}", f"--pyi_out={tmp}", rel]
            rc = protoc.main(args)
            if rc != 0:
                raise RuntimeError(f"protoc failed with exit code {rc}: {' '.join(args)}")
            produced = Path(tmp) / Path(rel).parent
            for name in GENERATED:
                shutil.copyfile(produced / name, target_dir / name)
                written.append(target_dir / name)
    return written


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in generate(PACKAGE_DIR):
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
