#!/usr/bin/env python
"""Feature extraction speed: milliseconds per model for 50/100/200-node models.

Models are generated with ``fleetmeter.modeler.zoo`` into a temporary folder,
so the numbers include reading the file:

* ``mobilenet`` — MobileNetV1-style chains (64x64 input, 32-256 channels),
  as many depthwise-separable blocks as it takes to reach the node count in
  *that format* (TFLite fuses ReLU6, so it needs twice the blocks);
* ``resnet`` — basic-block ResNets (56x56 input, 32-256 channels); their
  weights are larger (up to ~40 MB for 200 ONNX nodes), which shows what
  parsing the file costs on top of the graph walk.

Each model is extracted once (warm-up: imports, caches) and then ``--repeat``
times; the wall-clock median, minimum and p90 and the median process CPU
time are reported (on a shared machine the CPU time and the minimum show
the cost, the median and p90 the cost plus interference).
Target: < 50 ms wall-clock median for a 200-node model.

    python benchmarks/features_speed.py           # ~20 s
    python benchmarks/features_speed.py --quick   # ~8 s: 3 timed runs per model
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

NAME = "features_speed"
NODE_COUNTS = (50, 100, 200)
TARGET_MS = 50.0


def _mobilenet(blocks: int) -> Any:
    from fleetmeter.modeler.zoo.tiny import mobilenet_v1

    widths = [32, 64, 128, 256]
    spec = []
    for i in range(blocks):
        stage = min(i * len(widths) // max(blocks, 1), len(widths) - 1)
        first = i == 0 or stage != min((i - 1) * len(widths) // max(blocks, 1), len(widths) - 1)
        spec.append((widths[stage], 2 if first and stage > 0 else 1))
    return mobilenet_v1(f"mobilenet_{blocks}", input_size=64, stem_width=32, blocks=tuple(spec))


def _resnet(blocks_per_stage: int) -> Any:
    from fleetmeter.modeler.zoo.tiny import resnet

    return resnet(f"resnet_{blocks_per_stage}", input_size=56, stem_width=32,
                  stages=((32, 1), (64, 2), (128, 2), (256, 2)), blocks_per_stage=blocks_per_stage)


def _node_count(fmt: str, data: bytes) -> int:
    from fleetmeter.modeler.features import extract_features

    return len(extract_features(data, fmt, fuse=False).raw_nodes)


def _build(family: str, fmt: str, target: int) -> bytes:
    """The smallest model of ``family`` with at least ``target`` nodes in ``fmt``."""
    from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes
    from fleetmeter.modeler.zoo.tflite_emit import build_tflite

    emit = (lambda a: onnx_bytes(build_onnx(a))) if fmt == "onnx" else build_tflite
    make = _mobilenet if family == "mobilenet" else _resnet
    # nodes per block: mobilenet 4 (ONNX) / 2 (TFLite) per block; resnet ~4 stages x 5-6 / 3-4.
    per_unit = {("mobilenet", "onnx"): 4, ("mobilenet", "tflite"): 2,
                ("resnet", "onnx"): 21, ("resnet", "tflite"): 13}[(family, fmt)]
    units = max(1, target // per_unit - 1)
    while True:
        data = emit(make(units))
        if _node_count(fmt, data) >= target:
            return data
        units += 1


def _time(path: Path, fmt: str, repeat: int) -> Tuple[List[float], List[float]]:
    """(wall ms, process CPU ms) per extraction; CPU time is less disturbed by other load."""
    from fleetmeter.modeler.features import extract_features

    extract_features(path, fmt)  # warm-up
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        extract_features(path, fmt)
        cpu.append((time.process_time() - start_cpu) * 1e3)
        wall.append((time.perf_counter() - start) * 1e3)
    return wall, cpu


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=20, help="timed extractions per model (default 20)")
    p.add_argument("--quick", action="store_true", help="3 timed extractions per model (a smoke run)")
    p.add_argument("--json", action="store_true", help="print the JSON payload instead of a table")
    _common.add_out_dir_argument(p)
    args = p.parse_args(argv)
    repeat = 3 if args.quick else args.repeat

    import fleetmeter.modeler.features  # noqa: F401  (the import is not timed)

    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("mobilenet", "resnet"):
            for fmt in ("onnx", "tflite"):
                for target in NODE_COUNTS:
                    data = _build(family, fmt, target)
                    path = Path(tmp) / f"{family}_{target}.{fmt}"
                    path.write_bytes(data)
                    wall, cpu = _time(path, fmt, repeat)
                    rows.append({
                        "family": family, "format": fmt, "target_nodes": target,
                        "nodes": _node_count(fmt, data), "size_bytes": len(data),
                        "median_ms": round(_common.median(wall), 3), "min_ms": round(min(wall), 3),
                        "p90_ms": round(_common.percentile(wall, 90), 3),
                        "cpu_median_ms": round(_common.median(cpu), 3), "repeat": repeat,
                    })
    worst_200 = max(r["median_ms"] for r in rows if r["target_nodes"] == 200)
    payload = {
        "benchmark": NAME,
        "machine": _common.machine_info(),
        "settings": {"repeat": repeat, "node_counts": list(NODE_COUNTS), "quick": args.quick},
        "summary": {"target_ms": TARGET_MS, "worst_200_node_median_ms": worst_200,
                    "worst_200_node_cpu_median_ms": max(r["cpu_median_ms"] for r in rows if r["target_nodes"] == 200),
                    "within_target": worst_200 < TARGET_MS},
        "rows": rows,
    }
    path = _common.write_json(NAME, payload, args.out_dir)
    if args.json:
        import json

        print(json.dumps(payload, indent=2))
        return 0
    print(_common.table(
        ["FAMILY", "FORMAT", "NODES", "SIZE_MB", "MEDIAN_MS", "MIN_MS", "P90_MS", "CPU_MEDIAN_MS"],
        [(r["family"], r["format"], r["nodes"], f"{r['size_bytes'] / 1e6:.1f}", f"{r['median_ms']:.2f}",
          f"{r['min_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['cpu_median_ms']:.2f}") for r in rows],
    ))
    verdict = "meets" if worst_200 < TARGET_MS else "MISSES"
    print(f"\nworst 200-node median: {worst_200:.2f} ms ({verdict} the {TARGET_MS:.0f} ms target); wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
