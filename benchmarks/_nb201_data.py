"""The NAS-Bench-201 development table (``shared/data/nb201/README.md``) and fleetmeter's own builds of its
networks, shared by the benchmarks that use it (``nb201.py``: predictors; ``search.py``: hardware-aware search).

:func:`read_table` reads the CSV (``.gz`` accepted); :func:`connected` tells the 341 cells that disconnect input
from output; :func:`build_models` builds the ONNX network of each index with the ``nasbench201`` zoo family (kept
in a folder between runs); :func:`import_samples` reads those files' features through ``fleetmeter import``'s
CSV loader, and :func:`samples_for` gives one device's training samples.
"""
from __future__ import annotations

import csv
import gzip
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from fleetmeter.modeler.zoo.fam_nasbench201 import EDGES, index_of_arch, parse_arch

META_COLUMNS = ("arch_idx", "arch_str", "accuracy_cifar100")
FAMILY = "nasbench201"


def connected(arch: str) -> bool:
    """Whether some path of non-``none`` edges leads from the cell's input to its output."""
    reach = {0}
    for (i, j), op in zip(EDGES, parse_arch(arch)):
        if op != "none" and i in reach:
            reach.add(j)
    return 3 in reach


def read_table(path: Path) -> Tuple[List[Dict[str, str]], List[str]]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "arch_str" not in rows[0]:
        raise SystemExit(f"{path}: not an NB201 latency table (no arch_str column)")
    devices = [c for c in rows[0] if c not in META_COLUMNS]
    return rows, devices


def _build(args: Tuple[List[int], str]) -> int:
    from fleetmeter.modeler.zoo.build import build_zoo

    indices, out = args
    pinned = [(f"nasbench201-arch{i:05d}", {"arch_index": i}) for i in indices]
    return len(build_zoo(FAMILY, 0, 0, "onnx", out, pinned=pinned))


def build_models(indices: Sequence[int], models_dir: Path, workers: int) -> None:
    """Build the ONNX file of every index not yet in ``models_dir``."""
    models_dir.mkdir(parents=True, exist_ok=True)
    missing = [i for i in indices if not (models_dir / f"nasbench201-arch{i:05d}.onnx").is_file()]
    if not missing:
        return
    t0 = time.monotonic()
    chunks = [missing[k:k + 50] for k in range(0, len(missing), 50)]
    # One index.json per worker folder would race: each chunk builds into a private folder, then moves files.
    with tempfile.TemporaryDirectory(dir=models_dir) as scratch, multiprocessing.Pool(workers) as pool:
        jobs = [(chunk, str(Path(scratch) / f"c{n}")) for n, chunk in enumerate(chunks)]
        done = 0
        for built in pool.imap_unordered(_build, jobs):
            done += built
            print(f"  built {done}/{len(missing)} NB201 networks ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
        for path in Path(scratch).glob("c*/*.onnx"):
            path.replace(models_dir / path.name)


def model_stem(row: Dict[str, str]) -> str:
    return f"nasbench201-arch{index_of_arch(row['arch_str']):05d}"


def import_samples(device: str, rows: Sequence[Dict[str, str]], models_dir: Path) -> Dict[str, Any]:
    """The rows of one device through ``fleetmeter import``'s CSV format and loader, by file stem.

    Reading and hashing every file once is the slow part; other devices reuse
    these samples' features with their own latencies (:func:`samples_for`).
    """
    from fleetmeter.modeler.dataset import load_csv

    with tempfile.NamedTemporaryFile("w", suffix=".csv", dir=models_dir, delete=False, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["model", "platform", "latency_ms", "family"])
        for row in rows:
            writer.writerow([model_stem(row) + ".onnx", device, row[device], FAMILY])
        csv_path = Path(fh.name)
    try:
        return {s.model_name: s for s in load_csv(csv_path)}
    finally:
        csv_path.unlink()


def samples_for(device: str, rows: Sequence[Dict[str, str]], imported: Dict[str, Any]) -> List[Any]:
    """One sample per row (in row order): the imported features, this device's latency."""
    import dataclasses

    out = []
    for row in rows:
        value = float(row[device])
        out.append(dataclasses.replace(imported[model_stem(row)], platform_id=device,
                                       values={"latency_ms": value}, repeats={"latency_ms": (value,)}))
    return out
