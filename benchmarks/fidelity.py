#!/usr/bin/env python
"""Measurement fidelity: does the agent report what a plain timing loop measures?

For each model file, the agent's median latency (``fleetmeter-agent bench
--json``, i.e. ``run_benchmark`` exactly as the agent runs it, in its own
process) is compared with a *plain* loop (``benchmarks/_plain_worker.py``:
the bare onnxruntime ``sess.run`` / LiteRT ``interpreter.invoke()`` between
two ``time.perf_counter()`` calls), in its own process, with identical
settings:

* onnxruntime: intra-op threads 1, inter-op threads 1, sequential
  execution, CPU provider; LiteRT: ``Interpreter(num_threads=1)`` with the
  default XNNPACK delegate (the agent's default provider);
* the same fixed-seed input (fleetmeter's ``make_inputs`` recipe, seed 0);
* one first run, then the same number of untimed warm-up runs;
* the same fixed number of timed runs (the agent gets ``--min-runs N
  --max-runs N --min-duration-ms 0``, which makes its loop a fixed count),
  garbage collector off in both;
* both pinned to the same single CPU core (``os.sched_setaffinity`` in an
  exec wrapper, before the interpreter starts); this script pins itself to
  the other core(s).

Agent (A) and plain (B) runs alternate, counterbalanced per round (A B in
even rounds, B A in odd rounds), and models are interleaved within a round,
so slow drift of the machine hits both sides alike. Per model and round the
ratio agent median / plain median is taken; the report gives the median of
those ratios and their spread (min..max). Target: within +-3 %.

Models: the 6 built-in models in ONNX and TFLite (12 files, 0.02-0.7 ms),
plus 3 larger zoo models generated into a temporary directory (both
formats, about 2-15 ms on one core) where timer and harness overhead matter
less.

    python benchmarks/fidelity.py            # full: ~3-4 min on 2 cores
    python benchmarks/fidelity.py --quick    # 2 files, 2 rounds: ~10 s
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

NAME = "fidelity"
TARGET_PCT = 3.0
PLAIN_WORKER = Path(__file__).resolve().parent / "_plain_worker.py"
# Re-exec under a CPU affinity mask, so the child's interpreter starts already pinned.
PIN_EXEC = "import os,sys; os.sched_setaffinity(0,{int(sys.argv[1])}); os.execv(sys.argv[2], sys.argv[2:])"
BIG_MS = 600000.0


# ---------------------------------------------------------------------- models
def zoo_architectures():
    """Larger zoo models, about 2-15 ms per inference on one core of a server CPU."""
    from fleetmeter.modeler.zoo.tiny import convnet, mobilenet_v1, resnet

    return [
        mobilenet_v1("zoo_mobilenet_v1_128", input_size=128, stem_width=32,
                     blocks=((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2))),
        convnet("zoo_convnet_96", input_size=96, widths=(32, 64, 128), dense_units=128),
        resnet("zoo_resnet_64", input_size=64, stem_width=32, stages=((32, 1), (64, 2), (128, 2)),
               blocks_per_stage=2),
    ]


def collect_models(tmp: Path, quick: bool, zoo: bool) -> List[Dict[str, Any]]:
    from fleetmeter.modeler.builtin import list_builtin_models

    models = []
    for m in list_builtin_models():
        if quick and m.name != "tiny_convnet":
            continue
        models.append({"name": m.name, "format": m.format, "path": str(m.path), "source": "builtin",
                       "runtime": "onnxruntime" if m.format == "onnx" else "litert"})
    if zoo and not quick:
        from fleetmeter.modeler.zoo.onnx_emit import write_onnx
        from fleetmeter.modeler.zoo.tflite_emit import write_tflite

        for arch in zoo_architectures():
            for fmt, write in (("onnx", write_onnx), ("tflite", write_tflite)):
                path = tmp / f"{arch.name}.{fmt}"
                write(arch, path)
                models.append({"name": arch.name, "format": fmt, "path": str(path), "source": "zoo",
                               "runtime": "onnxruntime" if fmt == "onnx" else "litert",
                               "hyperparameters": arch.hyperparameters})
    return models


# ------------------------------------------------------------------ processes
def _pinned(argv: List[str], core: Optional[int]) -> List[str]:
    if core is None:
        return argv
    return [sys.executable, "-c", PIN_EXEC, str(core), *argv]


def _run_json(argv: List[str], timeout_s: float) -> Dict[str, Any]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=_common.worker_env())
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"{' '.join(argv[-12:])} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def run_agent(model: Dict[str, Any], runs: int, warmup: int, core: Optional[int]) -> Dict[str, Any]:
    argv = [sys.executable, "-m", "fleetmeter.agent.cli", "bench", model["path"], "--json",
            "--runtime", model["runtime"], "--threads", "1", "--seed", "0", "--warmup", str(warmup),
            "--min-runs", str(runs), "--max-runs", str(runs), "--min-duration-ms", "0",
            "--max-duration-ms", str(BIG_MS)]
    data = _run_json(_pinned(argv, core), timeout_s=300)
    if data.get("failure_kind"):
        raise RuntimeError(f"agent failed on {model['path']}: {data['failure_message']}")
    lat = data["latency_ms"]
    return {"median": lat["median"], "mean": lat["mean"], "min": lat["min"], "n": lat["n"],
            "stop_reason": data.get("stop_reason"), "cpu_affinity": data.get("cpu_affinity"),
            "input_shapes": data.get("input_shapes"), "power_sensor": data.get("power_sensor"),
            "runtime_version": data.get("runtime_version")}


def run_plain(model: Dict[str, Any], runs: int, warmup: int, core: Optional[int]) -> Dict[str, Any]:
    argv = [sys.executable, str(PLAIN_WORKER), model["runtime"], model["path"], "--runs", str(runs),
            "--warmup", str(warmup), "--threads", "1", "--seed", "0"]
    data = _run_json(_pinned(argv, core), timeout_s=300)
    data.pop("samples_ms", None)
    return data


def calibrate(model: Dict[str, Any], warmup: int, core: Optional[int]) -> float:
    """Median latency (ms) from a short plain run, to size the fixed run count."""
    return float(run_plain(model, runs=30, warmup=warmup, core=core)["median"])


# ------------------------------------------------------------------- pinning
def choose_cores(no_pin: bool) -> Tuple[Optional[int], Optional[List[int]], str]:
    """(worker core, cores left for this script, description)."""
    if no_pin or not hasattr(os, "sched_setaffinity"):
        return None, None, "not pinned" + (" (--no-pin)" if no_pin else " (no sched_setaffinity here)")
    allowed = sorted(os.sched_getaffinity(0))
    worker = allowed[-1]
    rest = [c for c in allowed if c != worker] or None
    if rest:
        os.sched_setaffinity(0, set(rest))
    how = (f"agent and plain processes both pinned to CPU {worker} via os.sched_setaffinity before their "
           f"interpreter starts; this orchestrating script pinned to CPU(s) {rest or allowed}")
    return worker, rest, how


# ---------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Agent vs plain-loop latency fidelity (target: +-3 %).",
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: tiny_convnet (ONNX + TFLite) only, 2 rounds, short loops")
    p.add_argument("--rounds", type=int, default=None, help="agent/plain rounds per model (default 5; quick 2)")
    p.add_argument("--target-ms", type=float, default=None,
                   help="timed loop length each run is sized for (default 250; quick 40)")
    p.add_argument("--min-runs", type=int, default=50, help="fewest timed runs per process (default 50)")
    p.add_argument("--max-runs", type=int, default=5000, help="most timed runs per process (default 5000)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs, both sides (agent default: 5)")
    p.add_argument("--no-zoo", action="store_true", help="built-in models only")
    p.add_argument("--no-pin", action="store_true", help="do not pin to a CPU core")
    _common.add_out_dir_argument(p)
    args = p.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    target_ms = args.target_ms or (40.0 if args.quick else 250.0)
    min_runs = min(args.min_runs, 20) if args.quick else args.min_runs

    started = time.monotonic()
    machine = _common.machine_info()
    worker_core, own_cores, pin_note = choose_cores(args.no_pin)
    print(f"fidelity: {pin_note}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="fleetmeter-fidelity-") as tmp:
        models = collect_models(Path(tmp), args.quick, not args.no_zoo)
        for m in models:
            est = calibrate(m, args.warmup, worker_core)
            m["calibration_median_ms"] = est
            m["runs"] = int(min(args.max_runs, max(min_runs, math.ceil(target_ms / max(est, 1e-3)))))
        print(f"fidelity: {len(models)} model files, {rounds} rounds, agent/plain alternating", file=sys.stderr)
        for m in models:
            m["agent"], m["plain"] = [], []
        for r in range(rounds):
            for m in models:
                order = ("agent", "plain") if r % 2 == 0 else ("plain", "agent")
                for side in order:
                    fn = run_agent if side == "agent" else run_plain
                    m[side].append(fn(m, m["runs"], args.warmup, worker_core))
            print(f"fidelity: round {r + 1}/{rounds} done ({time.monotonic() - started:.0f} s)", file=sys.stderr)

    results = []
    for m in models:
        a = [x["median"] for x in m["agent"]]
        b = [x["median"] for x in m["plain"]]
        ratios = [x / y for x, y in zip(a, b)]
        rmed = _common.median(ratios)
        plain_med = _common.median(b)
        results.append({
            "model": m["name"], "format": m["format"], "runtime": m["runtime"], "source": m["source"],
            "runs_per_process": m["runs"], "warmup_runs": args.warmup, "rounds": rounds,
            "agent_median_ms": _common.median(a), "plain_median_ms": plain_med,
            "agent_medians_ms": a, "plain_medians_ms": b, "ratios": ratios,
            "ratio_median": rmed, "ratio_min": min(ratios), "ratio_max": max(ratios),
            "deviation_pct": (rmed - 1.0) * 100.0,
            # How much the plain loop itself moves between rounds: the noise floor of this comparison.
            "plain_round_spread_pct": (max(b) - min(b)) / plain_med * 100.0,
            "within_target": abs(rmed - 1.0) * 100.0 <= TARGET_PCT,
            "agent_n": [x["n"] for x in m["agent"]], "plain_n": [x["n"] for x in m["plain"]],
            "agent_cpu_affinity": m["agent"][0]["cpu_affinity"], "plain_cpu_affinity": m["plain"][0]["cpu_affinity"],
            "same_input_shapes": m["agent"][0]["input_shapes"] == m["plain"][0]["input_shapes"],
            "agent_stop_reason": m["agent"][0]["stop_reason"],
        })
    devs = [abs(r["deviation_pct"]) for r in results]
    summary = {
        "model_files": len(results),
        "within_target": sum(r["within_target"] for r in results),
        "target_pct": TARGET_PCT,
        "max_abs_deviation_pct": max(devs),
        "median_abs_deviation_pct": _common.median(devs),
        "onnxruntime_ratio_median": _common.median([r["ratio_median"] for r in results if r["runtime"] == "onnxruntime"]
                                                   or [float("nan")]),
        "litert_ratio_median": _common.median([r["ratio_median"] for r in results if r["runtime"] == "litert"]
                                              or [float("nan")]),
        "all_within_target": all(r["within_target"] for r in results),
        "wall_s": round(time.monotonic() - started, 1),
    }
    payload = {
        "benchmark": NAME, "quick": args.quick, "machine": machine,
        "settings": {"rounds": rounds, "target_timed_ms": target_ms, "warmup_runs": args.warmup,
                     "min_runs": min_runs, "max_runs": args.max_runs, "threads": 1, "seed": 0,
                     "order": "alternating, counterbalanced: A B in even rounds, B A in odd rounds; "
                              "models interleaved within a round",
                     "agent_command": "python -m fleetmeter.agent.cli bench MODEL --json --runtime R --threads 1 "
                                      "--warmup W --min-runs N --max-runs N --min-duration-ms 0",
                     "plain_command": "python benchmarks/_plain_worker.py R MODEL --runs N --warmup W"},
        "pinning": {"worker_cpu": worker_core, "script_cpus": own_cores, "note": pin_note},
        "results": results, "summary": summary,
    }
    path = _common.write_json(NAME, payload, args.out_dir)

    rows = [(r["model"], r["format"], r["runs_per_process"], f"{r['agent_median_ms']:.4f}",
             f"{r['plain_median_ms']:.4f}", f"{r['ratio_median']:.4f}",
             f"{r['ratio_min']:.3f}..{r['ratio_max']:.3f}", f"{r['deviation_pct']:+.1f}%",
             f"{r['plain_round_spread_pct']:.1f}%", "yes" if r["within_target"] else "NO") for r in results]
    print(_common.table(["MODEL", "FMT", "RUNS", "AGENT ms", "PLAIN ms", "RATIO", "RATIO RANGE", "DEV",
                         "PLAIN SPREAD", f"<= {TARGET_PCT:g}%"], rows))
    print(f"\n{summary['within_target']}/{summary['model_files']} model files within +-{TARGET_PCT:g}% "
          f"(max |dev| {summary['max_abs_deviation_pct']:.1f}%, median |dev| "
          f"{summary['median_abs_deviation_pct']:.1f}%); {pin_note}")
    print(f"wrote {path} in {summary['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
