"""Per-operator profiles: a separate profiled pass with onnxruntime's profiler.

Profiling slows every run, so it happens in its own session after the latency
measurement and never touches ``samples_ms``. Each operator record carries the
(possibly fused) node name, op type, provider, input/output shapes and the
median/mean kernel time over the profiled runs (warm-up runs excluded) — the
data kernel-level predictors learn from.

LiteRT exposes no per-operator profiler to Python, so only onnxruntime
platforms return profiles; others return an empty list.
"""
from __future__ import annotations

import json
import logging
import statistics
import tempfile
from typing import Any, Mapping, Optional, Sequence

log = logging.getLogger(__name__)


def _shapes(items: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for item in items or []:
        for dims in item.values():  # {"float": [1, 3, 224, 224]}
            out.append("x".join(str(d) for d in dims))
    return out


def parse_ort_profile(events: Sequence[Mapping[str, Any]], skip_runs: int = 0) -> list[dict]:
    """onnxruntime profile events (Chrome trace JSON) → one record per node, in first-seen order.

    The first ``skip_runs`` occurrences of every node (warm-up) are dropped.
    """
    by_node: dict[str, dict] = {}
    for ev in events:
        name = ev.get("name", "")
        if ev.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        args = ev.get("args") or {}
        rec = by_node.setdefault(node, {"node_name": node, "op_type": args.get("op_name", ""),
                                        "provider": args.get("provider", ""),
                                        "input_shapes": _shapes(args.get("input_type_shape")),
                                        "output_shapes": _shapes(args.get("output_type_shape")), "_us": []})
        rec["_us"].append(float(ev.get("dur", 0.0)))
    out = []
    for rec in by_node.values():
        times = rec.pop("_us")[skip_runs:]
        if not times:
            continue
        out.append({**rec, "median_us": statistics.median(times), "mean_us": statistics.fmean(times),
                    "runs": len(times)})
    return out


def profile_operators(model_path: str, *, threads: int, provider: Optional[str] = None,
                      shapes: Optional[Mapping[str, Sequence[int]]] = None,
                      fills: Optional[Mapping[str, float]] = None, runs: int = 20, warmup_runs: int = 3,
                      seed: int = 0) -> list[dict]:
    """Run the model ``warmup_runs + runs`` times under onnxruntime's profiler; per-node records."""
    from .runtimes import OnnxRuntime, make_inputs

    with tempfile.TemporaryDirectory(prefix="fleetmeter-profile-") as tmp:
        session = OnnxRuntime().load(model_path, threads, provider, profile_dir=tmp)
        try:
            feeds = make_inputs(session.inputs, shapes or {}, fills or {}, seed)
            for _ in range(warmup_runs + runs):
                session.run(feeds)
            with open(session.end_profiling()) as f:
                events = json.load(f)
        finally:
            session.close()
    return parse_ort_profile(events, skip_runs=warmup_runs)
