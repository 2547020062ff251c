"""Helpers shared by the benchmark scripts (not a fleetmeter module).

The scripts are run as ``python benchmarks/NAME.py``, so this directory is on
``sys.path`` and ``import _common`` works without installing anything.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fleetmeter import _term

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT_DIR = HERE / "out"


def cpu_model() -> str:
    """``model name`` from /proc/cpuinfo (first CPU), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> Optional[str]:
    import subprocess

    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def loadavg() -> Optional[List[float]]:
    """1, 5 and 15 minute load averages (the machine is shared: say how busy it was)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> Dict[str, Any]:
    """What the numbers were measured on."""
    try:
        affinity: Optional[List[int]] = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    load = loadavg()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "load_average_at_start": load,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "onnxruntime": _version("onnxruntime"),
        "ai_edge_litert": _version("ai-edge-litert"),
        "numpy": _version("numpy"),
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "ray": _version("ray"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        # Files of the product (outside benchmarks/ and tests/) with uncommitted changes when this ran.
        "git_uncommitted_product_files": _uncommitted(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _uncommitted() -> Optional[int]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    if status is None:
        return None
    paths = [line[3:] for line in status.splitlines() if line.strip()]
    return sum(1 for p in paths if not p.startswith(("benchmarks/", "tests/", "docs/")))


def write_json(name: str, payload: Dict[str, Any], out_dir: Optional[Path] = None) -> Path:
    """Write ``payload`` to ``<out_dir>/<name>.json`` (default benchmarks/out/)."""
    out = Path(out_dir) if out_dir else OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


#: Aligned columns under a dashed header line: the CLIs' table (control characters in cells escaped).
table = _term.table


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (``numpy.percentile``'s default); ``ValueError`` when empty."""
    if len(values) == 0:
        raise ValueError("no values")
    return float(np.percentile(np.asarray(values, dtype=float), q))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def add_out_dir_argument(parser) -> None:
    parser.add_argument("--out-dir", type=Path, default=None,
                        help=f"where to write the JSON (default: {OUT_DIR.relative_to(REPO)})")


def submit_and_wait(client: Any, spec: Any, *, timeout_s: float, report_every_s: float) -> Tuple[str, Any]:
    """Submit the sweep ``spec`` and wait until it ends, printing its progress every ``report_every_s``.

    Returns the sweep id and its final ``SweepProgress``."""
    sweep = client.submit_sweep(spec)
    last = time.monotonic()
    for p in client.watch_sweep(sweep.sweep_id, timeout_s=timeout_s):
        if time.monotonic() - last > report_every_s:
            last = time.monotonic()
            print(f"  {spec.name}: {p.done + p.failed}/{p.total} (failed {p.failed}, eta {p.eta_s:.0f} s)",
                  flush=True)
    return sweep.sweep_id, client.get_sweep(sweep.sweep_id).progress


def write_and_close(name: str, payload: Dict[str, Any], out_dir: Optional[Path] = None) -> Path:
    """A timed benchmark's end: :func:`write_json`, then how busy the machine was and where the JSON went.

    ``payload`` holds ``machine`` (:func:`machine_info`) and a ``summary`` with ``load_average_at_end``
    and ``wall_s``."""
    path = write_json(name, payload, out_dir)
    machine, summary = payload["machine"], payload["summary"]
    print(f"load average (1/5/15 min): {machine['load_average_at_start']} at start, "
          f"{summary['load_average_at_end']} at end")
    print(f"wrote {path} in {summary['wall_s']:.0f} s")
    return path


def model_worker_parser(doc: str) -> argparse.ArgumentParser:
    """The command line every model worker starts with: ``{onnxruntime,litert} MODEL``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runtime", choices=["onnxruntime", "litert"])
    p.add_argument("model")
    return p


def worker_env() -> Dict[str, str]:
    """Environment for child processes: quiet, unbuffered, no inherited thread knobs."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONWARNINGS", "ignore")
    # LiteRT / TF C++ logging ("Created TensorFlow Lite XNNPACK delegate") to errors only.
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env
