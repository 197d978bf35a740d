"""Generate the Python gRPC code for the wire contract.

Run by the build (setup.py) and by the test that checks the checked-in code is
current; the generated modules live beside the .proto so the package
`placement.v1` maps onto `proto/placement/v1`.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_FILES = ["placement/v1/placement.proto"]


def generate(out_dir: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc (from grpcio-tools) and return the files it wrote."""
    from grpc_tools import protoc  # build-time dependency
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTO_FILES,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    written = []
    for proto in PROTO_FILES:
        stem = out_dir / proto.removesuffix(".proto")
        written += [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2.pyi"), Path(f"{stem}_pb2_grpc.py")]
    return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT):
        print(path)
