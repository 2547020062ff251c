#!/usr/bin/env python
"""Measurement fidelity: does the agent report what a plain timing loop measures?

For each model file, the agent's median latency is compared with that of a
*plain* loop, each in its own process, with identical settings:

* agent side (``benchmarks/_agent_worker.py``): ``run_benchmark`` called
  exactly as ``fleetmeter-agent bench`` calls it (default power sensor and
  thermal reader included), with ``min_runs = max_runs = N`` and
  ``min_duration_ms = 0`` so that its timed loop is a fixed count;
* plain side (``benchmarks/_plain_worker.py``, no fleetmeter import): the
  bare ``sess.run(None, feeds)`` (onnxruntime) or ``interpreter.invoke()``
  (LiteRT, inputs ``set_tensor``'d once) between two
  ``time.perf_counter()`` calls;
* onnxruntime: intra-op threads 1, inter-op threads 1, sequential
  execution, CPU provider; LiteRT: ``Interpreter(num_threads=1)`` with the
  default XNNPACK delegate (the agent's default provider);
* the same fixed-seed input (fleetmeter's ``make_inputs`` recipe, seed 0);
* per block: a fresh session, one first run, the same number of untimed
  warm-up runs (5, the agent's default), then N timed runs with the garbage
  collector off;
* both processes pinned to the same single CPU core
  (``os.sched_setaffinity`` in an exec wrapper, before the interpreter
  starts); this script pins itself to the other core(s).

Both worker processes stay alive for one model and run blocks on request,
alternating agent (A) and plain (B), counterbalanced: A B, B A, A B, ...
(24 pairs per model, each block sized to ~60 ms of timed runs, after one
calibration block and one discarded block per process). Fine-grained
alternation matters on a shared machine: load from other processes comes in
bursts of seconds, and hits both sides alike only if they take turns often.
Per pair the ratio agent median / plain median is taken; the report gives
the median of those ratios, their IQR and range, and the plain loop's own
block-to-block IQR (the noise floor). Target: within +-3 %.

A diagnostic follows for every model under 1 ms (``benchmarks/_overhead_worker.py``):
in one process, on the agent's own session, the per-call cost of the bare
runtime call, of ``set_tensor`` + ``invoke()`` (LiteRT) and of the agent's
``Session.run`` as ``measure_latency`` times it, alternated in short blocks.

Models: the 6 built-in models in ONNX and TFLite (12 files, 0.02-0.7 ms),
plus 3 larger zoo models generated into a temporary directory (both
formats, about 2-15 ms on one core) where timer and harness overhead matter
less.

    python benchmarks/fidelity.py            # full: ~3-4 min on 2 cores
    python benchmarks/fidelity.py --quick    # tiny_convnet only, 3 pairs: ~5 s
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
AGENT_WORKER = Path(__file__).resolve().parent / "_agent_worker.py"
OVERHEAD_WORKER = Path(__file__).resolve().parent / "_overhead_worker.py"
# The per-call diagnostic resolves a few microseconds; on slower models that is below the noise.
OVERHEAD_MAX_MS = 1.0
# Re-exec under a CPU affinity mask, so the child's interpreter starts already pinned.
PIN_EXEC = "import os,sys; os.sched_setaffinity(0,{int(sys.argv[1])}); os.execv(sys.argv[2], sys.argv[2:])"


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


class Worker:
    """A long-lived worker process that runs one benchmark block per request (JSON lines)."""

    def __init__(self, side: str, model: Dict[str, Any], warmup: int, core: Optional[int]) -> None:
        script = AGENT_WORKER if side == "agent" else PLAIN_WORKER
        argv = [sys.executable, str(script), model["runtime"], model["path"], "--warmup", str(warmup),
                "--threads", "1", "--seed", "0"]
        self.side = side
        self.model = model
        self.proc = subprocess.Popen(_pinned(argv, core), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=_common.worker_env())

    def block(self, runs: int) -> Dict[str, Any]:
        self.proc.stdin.write(json.dumps({"runs": runs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"{self.side} worker for {self.model['path']} exited {self.proc.returncode}:\n"
                               f"{self.proc.stderr.read()[-2000:]}")
        data = json.loads(line)
        if "error" in data:
            raise RuntimeError(f"{self.side} worker failed on {self.model['path']}: {data['error']}")
        return data

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


def measure_model(model: Dict[str, Any], pairs: int, target_ms: float, min_runs: int, max_runs: int,
                  warmup: int, core: Optional[int]) -> Dict[str, Any]:
    """Calibrate, warm both workers once (discarded), then ``pairs`` alternating agent/plain blocks."""
    agent = Worker("agent", model, warmup, core)
    plain = Worker("plain", model, warmup, core)
    try:
        est = float(plain.block(30)["median"])
        runs = int(min(max_runs, max(min_runs, math.ceil(target_ms / max(est, 1e-3)))))
        agent.block(runs)  # first block of a fresh process: page faults, lazy init; discarded
        plain.block(runs)
        a_blocks, b_blocks = [], []
        for i in range(pairs):
            first, second = (agent, plain) if i % 2 == 0 else (plain, agent)
            for w in (first, second):
                (a_blocks if w is agent else b_blocks).append(w.block(runs))
    finally:
        agent.close()
        plain.close()
    return {"calibration_median_ms": est, "runs": runs, "agent": a_blocks, "plain": b_blocks}


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
def measure_overhead(model: Dict[str, Any], core: Optional[int]) -> Dict[str, Any]:
    """In-process per-call cost of the agent's Session.run vs the bare runtime call (diagnostic)."""
    argv = [sys.executable, str(OVERHEAD_WORKER), model["runtime"], model["path"]]
    proc = subprocess.run(_pinned(argv, core), capture_output=True, text=True, timeout=300,
                          env=_common.worker_env())
    if proc.returncode != 0:
        raise RuntimeError(f"overhead worker failed on {model['path']}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def _iqr(values: List[float]) -> Tuple[float, float]:
    return _common.percentile(values, 25), _common.percentile(values, 75)


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Agent vs plain-loop latency fidelity (target: +-3 %).",
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: tiny_convnet (ONNX + TFLite) only, 3 rounds of short blocks")
    p.add_argument("--rounds", type=int, default=None,
                   help="agent/plain block pairs per model (default 24; quick 3)")
    p.add_argument("--target-ms", type=float, default=None,
                   help="timed length each block is sized for (default 60; quick 20)")
    p.add_argument("--min-runs", type=int, default=None, help="fewest timed runs per block (default 20; quick 10)")
    p.add_argument("--max-runs", type=int, default=3000, help="most timed runs per block (default 3000)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs per block, both sides "
                                                         "(the agent's default: 5)")
    p.add_argument("--no-zoo", action="store_true", help="built-in models only")
    p.add_argument("--no-pin", action="store_true", help="do not pin to a CPU core")
    p.add_argument("--no-overhead", action="store_true",
                   help="skip the in-process per-call overhead diagnostic (skipped in --quick)")
    _common.add_out_dir_argument(p)
    return p.parse_args(argv)


def model_result(m: Dict[str, Any], warmup: int, rounds: int) -> Dict[str, Any]:
    """One model file's comparison: the agent/plain ratio of the block medians, and the blocks themselves."""
    a = [x["median"] for x in m["agent"]]
    b = [x["median"] for x in m["plain"]]
    ratios = [x / y for x, y in zip(a, b)]
    min_ratios = [x["min"] / y["min"] for x, y in zip(m["agent"], m["plain"])]
    rmed = _common.median(ratios)
    q1, q3 = _iqr(ratios)
    plain_med = _common.median(b)
    pq1, pq3 = _iqr(b)
    return {
        "model": m["name"], "format": m["format"], "runtime": m["runtime"], "source": m["source"],
        "runs_per_block": m["runs"], "warmup_runs": warmup, "rounds": rounds,
        "calibration_median_ms": m["calibration_median_ms"],
        "agent_median_ms": _common.median(a), "plain_median_ms": plain_med,
        "ratio_median": rmed, "ratio_q1": q1, "ratio_q3": q3, "ratio_min": min(ratios), "ratio_max": max(ratios),
        "deviation_pct": (rmed - 1.0) * 100.0,
        "pooled_ratio": _common.median(a) / plain_med,
        # Ratio of the per-block minimum latencies: much less sensitive to other load on the machine.
        "min_ratio_median": _common.median(min_ratios),
        # How much the plain loop itself moves between blocks: the noise floor of this comparison.
        "plain_block_iqr_pct": (pq3 - pq1) / plain_med * 100.0,
        "within_target": abs(rmed - 1.0) * 100.0 <= TARGET_PCT,
        "agent_medians_ms": a, "plain_medians_ms": b, "ratios": ratios,
        "agent_n": sorted({x["n"] for x in m["agent"]}), "plain_n": sorted({x["n"] for x in m["plain"]}),
        "agent_cpu_affinity": m["agent"][0]["cpu_affinity"], "plain_cpu_affinity": m["plain"][0]["cpu_affinity"],
        "same_input_shapes": m["agent"][0]["input_shapes"] == m["plain"][0]["input_shapes"],
        "agent_stop_reason": m["agent"][0]["stop_reason"],
        "agent_power_sensor": m["agent"][0]["power_sensor"],
        "overhead": m.get("overhead"),
    }


def summarize(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """How many model files are within the target, the deviations, the median ratio per runtime."""
    devs = [abs(r["deviation_pct"]) for r in results]

    def by_runtime(rt: str) -> Optional[float]:
        vals = [r["ratio_median"] for r in results if r["runtime"] == rt]
        return _common.median(vals) if vals else None

    return {
        "model_files": len(results),
        "within_target": sum(r["within_target"] for r in results),
        "all_within_target": all(r["within_target"] for r in results),
        "target_pct": TARGET_PCT,
        "max_abs_deviation_pct": max(devs),
        "median_abs_deviation_pct": _common.median(devs),
        "onnxruntime_ratio_median": by_runtime("onnxruntime"),
        "litert_ratio_median": by_runtime("litert"),
    }


def print_report(results: List[Dict[str, Any]], summary: Dict[str, Any], rounds: int, pin_note: str) -> None:
    rows = [(r["model"], r["format"], r["runs_per_block"], f"{r['agent_median_ms']:.4f}",
             f"{r['plain_median_ms']:.4f}", f"{r['ratio_median']:.3f}",
             f"{r['ratio_q1']:.3f}..{r['ratio_q3']:.3f}", f"{r['ratio_min']:.2f}..{r['ratio_max']:.2f}",
             f"{r['min_ratio_median']:.3f}", f"{r['deviation_pct']:+.1f}%", f"{r['plain_block_iqr_pct']:.1f}%",
             "yes" if r["within_target"] else "NO") for r in results]
    print(_common.table(["MODEL", "FMT", "RUNS/BLK", "AGENT ms", "PLAIN ms", "RATIO", "RATIO IQR", "RATIO RANGE",
                         "MIN RATIO", "DEV", "PLAIN IQR", f"<={TARGET_PCT:g}%"], rows))
    print(f"\n{summary['within_target']}/{summary['model_files']} model files within +-{TARGET_PCT:g}% "
          f"(max |dev| {summary['max_abs_deviation_pct']:.1f}%, median |dev| "
          f"{summary['median_abs_deviation_pct']:.1f}%). RATIO = median over {rounds} block pairs of "
          f"agent median / plain median.\n{pin_note}")
    over = [r for r in results if r["overhead"]]
    if over:
        print(f"\nPer-call harness cost, in one process on one session (median of alternating blocks, us; "
              f"models under {OVERHEAD_MAX_MS:g} ms only):")
        orow = []
        for r in over:
            o, med = r["overhead"], r["overhead"]["median_us"]
            orow.append((r["model"], r["format"], f"{med['bare']:.2f}", f"{med['set+invoke']:.2f}" if "set+invoke" in med else "-",
                         f"{med['agent']:.2f}", f"{o['agent_minus_bare_us']:+.2f}",
                         f"{o['agent_minus_bare_us'] / med['bare'] * 100:+.1f}%"))
        print(_common.table(["MODEL", "FMT", "BARE us", "SET+INVOKE us", "AGENT us", "AGENT-BARE", "REL"], orow))


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 24)
    target_ms = args.target_ms or (20.0 if args.quick else 60.0)
    min_runs = args.min_runs or (10 if args.quick else 20)

    started = time.monotonic()
    machine = _common.machine_info()
    worker_core, own_cores, pin_note = choose_cores(args.no_pin)
    print(f"fidelity: {pin_note}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="fleetmeter-fidelity-") as tmp:
        models = collect_models(Path(tmp), args.quick, not args.no_zoo)
        print(f"fidelity: {len(models)} model files, {rounds} alternating agent/plain block pairs each",
              file=sys.stderr)
        for i, m in enumerate(models):
            m.update(measure_model(m, rounds, target_ms, min_runs, args.max_runs, args.warmup, worker_core))
            if not (args.quick or args.no_overhead) and m["calibration_median_ms"] < OVERHEAD_MAX_MS:
                m["overhead"] = measure_overhead(m, worker_core)
            print(f"fidelity: [{i + 1}/{len(models)}] {m['name']}.{m['format']} done "
                  f"({time.monotonic() - started:.0f} s)", file=sys.stderr)

    results = [model_result(m, args.warmup, rounds) for m in models]
    summary = summarize(results)
    summary["wall_s"] = round(time.monotonic() - started, 1)
    summary["load_average_at_end"] = _common.loadavg()
    payload = {
        "benchmark": NAME, "quick": args.quick, "machine": machine,
        "settings": {"rounds": rounds, "target_block_ms": target_ms, "warmup_runs": args.warmup,
                     "min_runs_per_block": min_runs, "max_runs_per_block": args.max_runs, "threads": 1, "seed": 0,
                     "order": "per model: one agent and one plain worker process; a calibration block and one "
                              "discarded block each, then `rounds` pairs of blocks, A B in even pairs, B A in odd",
                     "agent_side": "benchmarks/_agent_worker.py: run_benchmark() with the arguments "
                                   "`fleetmeter-agent bench` passes, fixed run count per block",
                     "plain_side": "benchmarks/_plain_worker.py: perf_counter around sess.run / invoke()"},
        "pinning": {"worker_cpu": worker_core, "script_cpus": own_cores, "note": pin_note},
        "results": results, "summary": summary,
    }
    print_report(results, summary, rounds, pin_note)
    _common.write_and_close(NAME, payload, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
