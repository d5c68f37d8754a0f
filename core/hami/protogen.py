"""One protoc run for each committed protobuf/gRPC package (device plugin, PodResources, DRA, plugin
registration).

protoc runs with the directory holding ``hami/`` as include path, so a generated gRPC module imports its
messages as ``from hami.<package> import api_pb2`` and works inside the package. Each package's
``regenerate`` module names its proto(s) and calls :func:`compile_proto`; the test suite regenerates into a
temp dir and compares bytes, so a stale generation fails CI.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

#: Include root for protoc: the directory that contains the ``hami`` package.
INCLUDE_ROOT = Path(__file__).resolve().parents[1]
#: What protoc writes for ``api.proto``: messages, the gRPC stubs and the type stubs.
GENERATED = ("api_pb2.py", "api_pb2_grpc.py", "api_pb2.pyi")


def compile_proto(proto: Path, out_dir: Path) -> list[Path]:
    """Run protoc on ``proto`` (under :data:`INCLUDE_ROOT`) and copy the generated files into ``out_dir``."""
    from grpc_tools import protoc  # dev-only dependency (grpcio-tools)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rel = proto.relative_to(INCLUDE_ROOT).as_posix()
    with tempfile.TemporaryDirectory(prefix="hami-protoc-") as tmp:
        args = ["grpc_tools.protoc", f"-I{INCLUDE_ROOT}", f"--python_out={tmp}", f"--grpc_python_out={tmp}", f"--pyi_out={tmp}", rel]
        rc = protoc.main(args)
        if rc != 0:
            raise RuntimeError(f"protoc failed with exit code {rc}: {' '.join(args)}")
        produced = Path(tmp) / Path(rel).parent
        written = []
        for name in GENERATED:
            shutil.copyfile(produced / name, out_dir / name)
            written.append(out_dir / name)
    return written


def write_all(paths: Iterable[Path]) -> int:
    """The ``python -m hami.<package>.regenerate`` entry: log what was written."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in paths:
        log.info("wrote %s", path)
    return 0
