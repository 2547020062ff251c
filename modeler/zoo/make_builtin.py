"""Regenerate the built-in demo models and their ``index.json``.

    python -m fleetmeter.modeler.zoo.make_builtin [--out DIR] [--check]

Without ``--out`` the files go to the package's ``builtin_models/`` folder.
``--check`` writes nothing and exits 1 when the files there differ from a
fresh generation. Output is deterministic: same generator version, same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ._files import atomic_write
from .arch import GENERATOR_VERSION, Architecture
from .onnx_emit import build_onnx, onnx_bytes, onnx_shape
from .tflite_emit import build_tflite, tflite_shape
from .tiny import BUILTIN_SEED, builtin_architectures

__all__ = ["INDEX_FILE", "default_out_dir", "render_builtin_models", "write_builtin_models", "main"]

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
INDEX_SCHEMA_VERSION = 1


def default_out_dir() -> Path:
    """The ``builtin_models/`` folder of the installed ``fleetmeter.modeler`` package."""
    return Path(__file__).resolve().parent.parent / "builtin_models"


def _entry(arch: Architecture, fmt: str, file_name: str, data: bytes) -> Dict[str, Any]:
    (inp,) = arch.input_layers
    shape = onnx_shape if fmt == "onnx" else tflite_shape
    return {
        "name": arch.name,
        "format": fmt,
        "file": file_name,
        "family": arch.family,
        "hyperparameters": arch.hyperparameters,
        "seed": BUILTIN_SEED,
        "input_name": inp.name,
        "input_shape": shape(inp.shape),
        "output_shape": shape(arch.shapes[arch.outputs[0]]),
        "param_count": arch.param_count(),
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def render_builtin_models() -> Dict[str, bytes]:
    """Every built-in file's bytes by file name, ``index.json`` included."""
    files: Dict[str, bytes] = {}
    entries: List[Dict[str, Any]] = []
    for arch in builtin_architectures():
        for fmt, data in (
            ("onnx", onnx_bytes(build_onnx(arch, seed=BUILTIN_SEED))),
            ("tflite", build_tflite(arch, seed=BUILTIN_SEED)),
        ):
            file_name = f"{arch.name}.{fmt}"
            files[file_name] = data
            entries.append(_entry(arch, fmt, file_name, data))
    index = {"schema_version": INDEX_SCHEMA_VERSION, "generator_version": GENERATOR_VERSION, "models": entries}
    files[INDEX_FILE] = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode("utf-8")
    return files


def write_builtin_models(out_dir: Optional[Path] = None) -> Dict[str, Path]:
    """Write every built-in file into ``out_dir``; return the paths by file name."""
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    written = {}
    for file_name, data in render_builtin_models().items():
        atomic_write(out / file_name, data)
        written[file_name] = out / file_name
        log.info("wrote %s (%d bytes)", out / file_name, len(data))
    return written


def stale_files(out_dir: Optional[Path] = None) -> List[str]:
    """File names in ``out_dir`` that are missing or differ from a fresh generation."""
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    stale = []
    for file_name, data in render_builtin_models().items():
        path = out / file_name
        if not path.is_file() or path.read_bytes() != data:
            stale.append(file_name)
    return stale


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fleetmeter.modeler.zoo.make_builtin", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the package's builtin_models/)")
    parser.add_argument("--check", action="store_true", help="verify instead of writing; exit 1 when stale")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"stale: {name}", file=sys.stderr)
        print("built-in models are up to date" if not stale else f"{len(stale)} stale file(s)")
        return 1 if stale else 0
    written = write_builtin_models(args.out)
    print(f"wrote {len(written)} files to {next(iter(written.values())).parent}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
