"""Fidelity of the path users take: a fleet reading vs a plain runtime loop.

A real controller and a real agent (onnxruntime, 1 thread; optionally a
LiteRT agent too) run on this machine, as in the demo. For every zoo model
and every round, interleaved:

1. the plain side: ``benchmarks/_plain_worker.py`` in a fresh process (a
   bare ``sess.run`` / ``invoke()`` loop, no fleetmeter code), one block of
   about ``--plain-ms`` of timed runs; its median;
2. the fleet side: a one-model sweep through the controller with the
   default reading settings; the stored reading's median.

Per model: ratio = median of the fleet readings / median of the plain
blocks, and ``ratio_fastest`` = fastest fleet reading / fastest plain block
(on a host with slow phases a plain block lands in one at random, while a
fleet reading is built to avoid them; the fastest of several rounds is each
side's estimate of the host at its usual speed). Reported for both: the
median ratio over models, the range, the share within ±3 % / ±10 %; the
readings' flags, and wall time per fleet job.

    python benchmarks/fidelity_fleet.py                 # 24 ONNX models x 3 rounds
    python benchmarks/fidelity_fleet.py --models 12 --rounds 2 --litert
"""
from __future__ import annotations

import argparse
import json
import math
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
from fleetmeter.local_fleet import LocalFleet
from fleetmeter.modeler.zoo.build import build_zoo
from fleetmeter.modeler.zoo.families import family_names
from fleetmeter.v1 import fleet_pb2

PLAIN = Path(__file__).resolve().parent / "_plain_worker.py"


def plain_block(runtime: str, path: Path, est_ms: float, plain_ms: float) -> float:
    runs = int(min(20000, max(10, math.ceil(plain_ms / max(est_ms, 1e-3)))))
    out = subprocess.run([sys.executable, str(PLAIN), runtime, str(path), "--warmup", "5", "--threads", "1",
                          "--seed", "0", "--runs", str(runs)], capture_output=True, text=True, check=True,
                         env=_common.worker_env())
    return float(json.loads(out.stdout.strip().splitlines()[-1])["median"])


def fleet_reading(c, sha: str, platform_id: str):
    sweep = c.submit_sweep(fleet_pb2.SweepSpec(models=[sha], repeat_sample=-1.0,
                                               platforms=fleet_pb2.PlatformSelector(platform_ids=[platform_id])))
    for _ in c.watch_sweep(sweep.sweep_id, timeout_s=600):
        pass
    ms = [m for m in c.list_measurements(sweep_id=sweep.sweep_id) if m.job_kind != "reference"]
    return ms[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=24, help="zoo architectures, round-robin over the families")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain-ms", type=float, default=600.0, help="timed duration of one plain block")
    parser.add_argument("--litert", action="store_true", help="also TFLite models on a LiteRT agent")
    parser.add_argument("--zoo", default=str(_common.OUT_DIR / "zoo-fidelity-fleet"))
    parser.add_argument("--out", default=str(_common.OUT_DIR / "fidelity_fleet.json"))
    args = parser.parse_args(argv)
    formats = ("onnx", "tflite") if args.litert else ("onnx",)
    fams = family_names()
    entries = build_zoo(fams, math.ceil(args.models / len(fams)), 1, formats, Path(args.zoo))
    order = sorted({(e["index"], e["family"], e["name"]) for e in entries})[: args.models]
    keep = {name for _, _, name in order}
    files = [(e["name"], e["format"], Path(args.zoo) / e["file"]) for e in entries if e["name"] in keep]
    report: dict = {"machine": _common.machine_info(),
                    "models": len(keep), "files": len(files), "rounds": args.rounds, "per_model": []}
    with tempfile.TemporaryDirectory(prefix="fleetmeter-fid-") as tmp:
        fleet = LocalFleet(Path(tmp), agent_token=secrets.token_hex(8), api_token=secrets.token_hex(8))
        try:
            fleet.start_controller()
            agents = [("ort", "onnxruntime")] + ([("lite", "litert")] if args.litert else [])
            for name, rt in agents:
                fleet.start_agent(name, "--runtime", rt, "--threads", "1", "--no-power")
            fleet.wait_agents_connected([n for n, _ in agents])
            with fleet.client() as c:
                pid_of = {d.info.runtimes[0].name: d.platform_ids[0] for d in c.list_devices()}
                job_walls = []
                for i, (name, fmt, path) in enumerate(files):
                    runtime = "onnxruntime" if fmt == "onnx" else "litert"
                    sha = c.upload_model(path).model.sha256
                    plain, fleet_medians, flags = [], [], []
                    est = None
                    for _ in range(args.rounds):
                        t0 = time.monotonic()
                        m = fleet_reading(c, sha, pid_of[runtime])
                        job_walls.append(time.monotonic() - t0)
                        if m.failure_kind:
                            raise RuntimeError(f"{name}.{fmt}: {m.failure_kind}: {m.failure_message}")
                        fleet_medians.append(m.latency_ms.median)
                        flags += list(m.flags)
                        est = est or m.latency_ms.median
                        plain.append(plain_block(runtime, path, est, args.plain_ms))
                    ratio = statistics.median(fleet_medians) / statistics.median(plain)
                    row = {"model": name, "format": fmt, "ratio": round(ratio, 4),
                           "ratio_fastest": round(min(fleet_medians) / min(plain), 4),
                           "fleet_ms": [round(x, 4) for x in fleet_medians], "plain_ms": [round(x, 4) for x in plain],
                           "flags": flags}
                    report["per_model"].append(row)
                    print(f"[{i + 1}/{len(files)}] {name}.{fmt}: ratio {ratio:.3f}  fleet {row['fleet_ms']}  "
                          f"plain {row['plain_ms']}  {flags or ''}", flush=True)
        finally:
            fleet.close()
    def summary(key: str) -> dict:
        ratios = [r[key] for r in report["per_model"]]
        return {"median_ratio": round(statistics.median(ratios), 4), "min_ratio": min(ratios),
                "max_ratio": max(ratios),
                "within_3": round(sum(abs(r - 1) <= 0.03 for r in ratios) / len(ratios), 3),
                "within_10": round(sum(abs(r - 1) <= 0.10 for r in ratios) / len(ratios), 3)}

    report["summary"] = {
        "median_of_rounds": summary("ratio"), "fastest_of_rounds": summary("ratio_fastest"),
        "wall_per_fleet_job_s": round(statistics.mean(job_walls), 3),
        "models_with_a_flagged_reading": sum(bool(r["flags"]) for r in report["per_model"]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
