"""Compile the kubelet protos with grpcio-tools into importable ``*_pb2`` modules.

Run at build time by ``setup.py`` (wheels and editable installs; ``python setup.py -q build_py`` in a clone).
The package root is the include path so the generated stubs import each other as ``dra_hami.kubeletapi.*``.
grpcio-tools is a build requirement only: nothing imports this module at run time.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PROTOS = ("dra_v1.proto", "dra_v1beta1.proto", "pluginregistration.proto", "dra_health_v1alpha1.proto")


def generate(source_root: Path, out_root: Path) -> list[Path]:
    """Generate stubs for PROTOS found under ``source_root`` into the same relative place in ``out_root``."""
    import grpc_tools
    from grpc_tools import protoc  # build-time dependency only

    rel = PROTO_DIR.relative_to(PROTO_DIR.parents[1])
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out_root.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PROTOS:
        args = [
            "grpc_tools.protoc",
            f"-I{source_root}",
            f"-I{well_known}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",  # message types for the type checker (protoc's own, no plugin needed)
            f"--grpc_python_out={out_root}",
            str(rel / name),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed for {rel / name}")
        stem = name.removesuffix(".proto")
        written += [out_root / rel / f"{stem}{suffix}" for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")]
    return written


if __name__ == "__main__":
    root = PROTO_DIR.parents[1]
    for path in generate(root, Path(sys.argv[1]) if len(sys.argv) > 1 else root):
        print(path)
