"""Regenerate the committed protobuf code from the .proto files in this folder.

    uv run python proto/generate.py            # rewrite core/src/layotto/_proto
    uv run python proto/generate.py --check    # exit 1 when the committed code is stale

Output: betterproto2 messages with grpclib stubs (`...Stub`) and server bases (`...Base`) under
`layotto._proto` (never a top-level `dapr` package: it would shadow the Dapr SDK), plus
`descriptors.binpb`, a FileDescriptorSet that feeds gRPC server reflection and the wire tests.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
TARGET = PROTO_ROOT.parent / "core" / "src" / "layotto" / "_proto"
INCLUDE_ROOTS = [PROTO_ROOT / "layotto", PROTO_ROOT / "dapr"]
DESCRIPTOR_FILE = "descriptors.binpb"


def proto_files() -> list[str]:
    files: list[str] = []
    for root in INCLUDE_ROOTS:
        files += sorted(str(p.relative_to(root)) for p in root.rglob("*.proto"))
    return files


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # The compiler plugin lives next to the interpreter in the venv.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    includes = [f"-I{root}" for root in INCLUDE_ROOTS]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            *includes,
            f"--python_betterproto2_out={out}",
            "--python_betterproto2_opt=client_generation=async,server_generation=async",
            f"--descriptor_set_out={out / DESCRIPTOR_FILE}",
            "--include_imports",
            *proto_files(),
        ],
        check=True,
        env=env,
    )
    (out / "__init__.py").touch()


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "_proto"
        generate(fresh)
        if args.check:
            if not same_tree(fresh, TARGET):
                print(f"{TARGET} is stale: run `uv run python proto/generate.py`", file=sys.stderr)
                return 1
            return 0
        shutil.rmtree(TARGET, ignore_errors=True)
        shutil.copytree(fresh, TARGET)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
