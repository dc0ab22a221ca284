"""Regenerate the Python modules of the Hubble API from the `.proto` files beside this script.

    python -m collectors.hubble_api.regenerate

Runs grpcio-tools' protoc with `-I collectors/hubble_api`, so that the proto import paths stay
Cilium's (`flow/flow.proto`, relative to `api/v1/` upstream), then rewrites the imports protoc
generates between these files (`from flow import flow_pb2`) into relative ones, so that the
modules import as `collectors.hubble_api.flow.flow_pb2` without touching `sys.path`.
Writes `*_pb2.py`, `*_pb2.pyi` and `observer_pb2_grpc.py`; commit them with the `.proto` files.
"""

from __future__ import annotations

import re
import sys
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

API_DIR = Path(__file__).resolve().parent
PROTOS = ("flow/flow.proto", "relay/relay.proto", "observer/observer.proto", "received/received.proto")
SERVICES = ("observer/observer.proto",)  # the protos that define a gRPC service
_LOCAL_IMPORT = re.compile(r"^from (flow|relay|observer|received)([ .])", re.MULTILINE)


def regenerate() -> list[Path]:
    """Run protoc on `PROTOS` and make the generated imports relative; return the files written."""
    well_known = str(files("grpc_tools") / "_proto")  # google/protobuf/*.proto
    runs = (
        ((f"--python_out={API_DIR}", f"--pyi_out={API_DIR}"), PROTOS),
        ((f"--grpc_python_out={API_DIR}",), SERVICES),
    )
    for outputs, protos in runs:
        inputs = [str(API_DIR / proto) for proto in protos]
        if protoc.main(["grpc_tools.protoc", f"-I{API_DIR}", f"-I{well_known}", *outputs, *inputs]):
            sys.exit(f"protoc failed on {', '.join(protos)}")
    written = sorted(path for pattern in ("*/*_pb2*.py", "*/*_pb2.pyi") for path in API_DIR.glob(pattern))
    for path in written:
        text = path.read_text()
        path.write_text(_LOCAL_IMPORT.sub(r"from ..\1\2", text))
    return written


if __name__ == "__main__":
    for path in regenerate():
        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
