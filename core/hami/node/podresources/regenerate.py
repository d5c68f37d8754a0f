"""Regenerate the committed protobuf/gRPC modules from ``v1/api.proto`` (kubelet's PodResources API).

The same protoc invocation as :mod:`hami.node.deviceplugin.regenerate` (package root as include path,
so the gRPC module imports ``from hami.node.podresources.v1 import api_pb2``). Run as
``python -m hami.node.podresources.regenerate``; the test suite regenerates into a temp dir and
compares, so a stale generation fails CI.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent / "v1"
INCLUDE_ROOT = Path(__file__).resolve().parents[3]
PROTO = PACKAGE_DIR / "api.proto"
GENERATED = ("api_pb2.py", "api_pb2_grpc.py", "api_pb2.pyi")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on ``api.proto`` and write the generated files (flat) into ``out_dir``."""
    from grpc_tools import protoc  # dev-only dependency (grpcio-tools)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rel = PROTO.relative_to(INCLUDE_ROOT).as_posix()
    with tempfile.TemporaryDirectory(prefix="hami-protoc-") as tmp:
        args = ["grpc_tools.protoc", f"-I{INCLUDE_ROOT}", f"--python_out={tmp}", f"--grpc_python_out={tmp}", f"--pyi_out={tmp}", rel]
        rc = protoc.main(args)
        if rc != 0:
            raise RuntimeError(f"protoc failed with exit code {rc}: {' '.join(args)}")
        produced = Path(tmp) / Path(rel).parent
        written = []
        for name in GENERATED:
            target = out_dir / name
            shutil.copyfile(produced / name, target)
            written.append(target)
    return written


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in generate(PACKAGE_DIR):
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
