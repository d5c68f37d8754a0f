"""Regenerate the committed protobuf/gRPC modules from ``v1beta1/api.proto``.

protoc runs with the package root (the directory holding ``hami/``) as include path, so the generated
gRPC module imports ``from hami.node.deviceplugin.v1beta1 import api_pb2`` and works inside the package.
Run as ``python -m hami.node.deviceplugin.regenerate``; the test suite calls :func:`generate` into a temp
dir and compares bytes, so a stale generation fails CI.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

#: Directory of the proto and of the generated modules.
PACKAGE_DIR = Path(__file__).resolve().parent / "v1beta1"
#: Include root for protoc: the directory that contains the ``hami`` package.
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
        args = [
            "grpc_tools.protoc",
            f"-I{INCLUDE_ROOT}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--pyi_out={tmp}",
            rel,
        ]
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
