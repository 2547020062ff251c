"""Generate the Python stubs for protos/fleetmeter/v1/*.proto.

The only way stubs are made: ``python protos/generate.py`` writes them into
``fleetmeter/v1/`` (the generated subpackage; never edit it by hand).
``--check`` regenerates into a temporary folder and exits 1 when the committed
stubs differ, which a test runs.
"""
from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_PACKAGE = ROOT / "fleetmeter" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_root: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) with ``out_root`` as the import root."""
    from grpc_tools import protoc
    import grpc_tools

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "fleetmeter" / "v1").glob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    out = out_root / "fleetmeter" / "v1"
    return sorted(p for p in out.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed stubs are stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        produced = generate(Path(tmp))
        if args.check:
            committed = sorted(p for p in OUT_PACKAGE.iterdir() if p.name.endswith(GENERATED_SUFFIXES))
            stale = [p.name for p in produced if not (OUT_PACKAGE / p.name).exists()
                     or not filecmp.cmp(p, OUT_PACKAGE / p.name, shallow=False)]
            extra = sorted({p.name for p in committed} - {p.name for p in produced})
            if stale or extra:
                print(f"stale generated stubs: {stale + extra}; run: python protos/generate.py", file=sys.stderr)
                return 1
            return 0
        OUT_PACKAGE.mkdir(parents=True, exist_ok=True)
        for p in produced:
            (OUT_PACKAGE / p.name).write_bytes(p.read_bytes())
    print(f"wrote {len(produced)} files to {OUT_PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
