#!/usr/bin/env python
"""Controller latency: from a job's end on the agent to its record committed in the store.

A real controller (``LocalFleet``: ``fleetmeter controller`` + its local Ray)
and 3 real agents (``fleetmeter-agent run --runtime onnxruntime --threads 1``,
so all three serve one platform as a pool) run a sweep of one tiny model
(built-in ``tiny_mlp.onnx``, ~0.05 ms per inference) repeated N times with
short settings (warm-up 2, min 5 runs, min 20 ms), so jobs are many and short.

Per job, from ``<controller data dir>/fleetmeter.sqlite`` (read-only):

    latency = measurements.received_unix - record_json.finished_at_unix

``finished_at_unix`` is ``time.time()`` on the agent when ``run_benchmark``
returns; ``received_unix`` is ``time.time()`` in the controller's store just
before the INSERT's transaction (it commits within the same call). Both are
this machine's wall clock, so no clock skew is involved. The interval covers:
the agent's spool write (fsync + rename), the outgoing gRPC stream, the
controller's gateway, one Ray actor call into the fleet actor, and the SQLite
transaction.

Also reported: end-to-end sweep throughput (jobs / seconds from SubmitSweep
to the sweep reported done). The scheduler runs one job at a time per host
("one benchmark at a time per device"), and all agents here share one host,
so jobs run back to back: the idle time between one job's end and the next
job's start on the host (result stored, ack, next lease through the Ray
fleet actor, assignment sent, job thread and model cache lookup) bounds the
throughput together with the job duration itself.

    python benchmarks/controller_latency.py           # 150 jobs, 3 agents: ~45 s
    python benchmarks/controller_latency.py --quick   # 12 jobs, 2 agents: ~25 s
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

NAME = "controller_latency"


def pct(values: List[float]) -> Dict[str, float]:
    return {"p50": _common.percentile(values, 50), "p90": _common.percentile(values, 90),
            "p99": _common.percentile(values, 99), "max": max(values), "min": min(values),
            "mean": sum(values) / len(values), "n": len(values)}


def read_store(db_path: Path, sweep_id: str) -> List[Dict[str, Any]]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT m.measurement_id, m.job_id, m.agent_id, m.received_unix, m.failure_kind,"
                          " m.record_json, j.state FROM measurements m LEFT JOIN jobs j ON j.job_id = m.job_id"
                          " WHERE m.sweep_id = ? ORDER BY m.received_unix", (sweep_id,)).fetchall()
    finally:
        db.close()
    out = []
    for mid, job_id, agent_id, received, failure, record_json, state in rows:
        record = json.loads(record_json)
        out.append({"measurement_id": mid, "job_id": job_id, "agent_id": agent_id, "job_state": state,
                    "failure_kind": failure or "", "received_unix": received,
                    "started_at_unix": record.get("started_at_unix"),
                    "finished_at_unix": record.get("finished_at_unix"),
                    "n_samples": (record.get("latency_ms") or {}).get("n")})
    return out


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Agent job end -> stored record latency, and sweep throughput.",
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke mode: 12 jobs on 2 agents")
    p.add_argument("--jobs", type=int, default=None, help="jobs in the sweep (default 150; quick 12)")
    p.add_argument("--agents", type=int, default=None, help="agents in the pool (default 3; quick 2)")
    p.add_argument("--min-duration-ms", type=float, default=20.0, help="per-job timed duration (default 20)")
    p.add_argument("--model", default="tiny_mlp", help="built-in ONNX model to sweep (default tiny_mlp)")
    _common.add_out_dir_argument(p)
    return p.parse_args(argv)


def run_sweep(model_path: Path, settings: Any, n_jobs: int, n_agents: int) -> Dict[str, Any]:
    """Start a controller and ``n_agents`` agents, sweep the model ``n_jobs`` times, read the stored rows.

    Returns ``rows`` (:func:`read_store`), ``sweep_s`` (submit -> done, monotonic), ``submitted_unix``
    and ``done_unix``."""
    from fleetmeter.local_fleet import LocalFleet
    from fleetmeter.v1 import fleet_pb2

    with tempfile.TemporaryDirectory(prefix="fleetmeter-ctl-latency-") as tmp:
        fleet = LocalFleet(Path(tmp) / "fleet")
        try:
            print("controller_latency: starting a controller (local Ray) ...", file=sys.stderr)
            fleet.start_controller(None, 180.0, "--reference-interval-s", "0")  # no canary jobs in the count
            names = [f"lat-agent-{i + 1}" for i in range(n_agents)]
            for name in names:
                fleet.start_agent(name, "--runtime", "onnxruntime", "--threads", "1", "--no-power")
            fleet.wait_agents_connected(names)
            with fleet.client() as client:
                platform_ids = sorted({pid for d in client.list_devices() for pid in d.platform_ids})
                sha = client.upload_model(model_path, name=model_path.name).model.sha256
                print(f"controller_latency: {n_agents} agents on {len(platform_ids)} platform(s); "
                      f"sweep of {n_jobs} jobs", file=sys.stderr)
                spec = fleet_pb2.SweepSpec(name="controller-latency", models=[sha],
                                           platforms=fleet_pb2.PlatformSelector(platform_ids=platform_ids),
                                           repeats=n_jobs, settings=settings, repeat_sample=-1.0)
                submitted_unix = time.time()
                t0 = time.monotonic()
                sweep = client.submit_sweep(spec)
                if sweep.progress.total != n_jobs:
                    raise RuntimeError(f"sweep has {sweep.progress.total} jobs, expected {n_jobs} "
                                       f"(platforms: {platform_ids})")
                final = None
                for progress in client.watch_sweep(sweep.sweep_id, timeout_s=600):
                    final = progress
                    if progress.state == "done":
                        break
                sweep_s = time.monotonic() - t0
                done_unix = time.time()
                if final is None or final.state != "done":
                    raise RuntimeError(f"sweep did not finish: {final}")
            rows = read_store(fleet.data_dir / "fleetmeter.sqlite", sweep.sweep_id)
        finally:
            fleet.close()
    return {"rows": rows, "sweep_s": sweep_s, "submitted_unix": submitted_unix, "done_unix": done_unix}


def summarize_jobs(ok: List[Dict[str, Any]], n_agents: int, sweep_s: float) -> Dict[str, Any]:
    """Latency, throughput and the gaps between jobs, from the stored rows of the jobs that succeeded."""
    lat_ms = [(r["received_unix"] - r["finished_at_unix"]) * 1000.0 for r in ok]
    job_ms = [(r["finished_at_unix"] - r["started_at_unix"]) * 1000.0 for r in ok]
    gaps_ms: List[float] = []
    per_agent: Dict[str, int] = {}
    for agent_id in sorted({r["agent_id"] for r in ok}):
        mine = sorted((r for r in ok if r["agent_id"] == agent_id), key=lambda r: r["started_at_unix"])
        per_agent[agent_id] = len(mine)
        gaps_ms += [(b["started_at_unix"] - a["finished_at_unix"]) * 1000.0 for a, b in zip(mine, mine[1:])]
    # The scheduler runs one job at a time per host (DESIGN.md: "one benchmark at a time per device"), and
    # all agents here share this host: jobs run one after another, so the gaps between consecutive jobs
    # on the host are the controller's turnaround: result -> store -> ack -> next lease -> job start.
    seq = sorted(ok, key=lambda r: r["started_at_unix"])
    host_gaps_ms = [(b["started_at_unix"] - a["finished_at_unix"]) * 1000.0 for a, b in zip(seq, seq[1:])]
    stored_to_next_ms = [(b["started_at_unix"] - a["received_unix"]) * 1000.0 for a, b in zip(seq, seq[1:])]
    busy_s = sum(job_ms) / 1000.0
    first_start = min(r["started_at_unix"] for r in ok)
    last_received = max(r["received_unix"] for r in ok)
    return {
        "jobs": len(ok), "agents": n_agents,
        "latency_ms": pct(lat_ms),
        "throughput_jobs_per_s": len(ok) / sweep_s,
        "sweep_wall_s": sweep_s,
        "store_span_s": last_received - first_start,
        "throughput_jobs_per_s_store_span": len(ok) / (last_received - first_start),
        "job_duration_ms": pct(job_ms),
        "host_gap_ms": pct(host_gaps_ms) if host_gaps_ms else None,
        "stored_to_next_start_ms": pct(stored_to_next_ms) if stored_to_next_ms else None,
        "per_agent_gap_ms": pct(gaps_ms) if gaps_ms else None,
        "overlapping_jobs_on_host": sum(1 for g in host_gaps_ms if g < 0),
        "host_busy_fraction": busy_s / sweep_s,
        "jobs_per_agent": per_agent,
        "negative_latencies": sum(1 for x in lat_ms if x < 0),
    }


def print_report(summary: Dict[str, Any]) -> None:
    lat = summary["latency_ms"]
    print(_common.table(["METRIC", "p50", "p90", "p99", "max", "n"], [
        ("job end on agent -> stored (ms)", *(f"{lat[k]:.1f}" for k in ("p50", "p90", "p99", "max")), lat["n"]),
        ("job duration on agent (ms)", *(f"{summary['job_duration_ms'][k]:.1f}" for k in ("p50", "p90", "p99", "max")),
         summary["job_duration_ms"]["n"]),
        *([(label, *(f"{summary[key][k]:.1f}" for k in ("p50", "p90", "p99", "max")), summary[key]["n"])
           for label, key in (("host idle: job end -> next job start (ms)", "host_gap_ms"),
                              ("  of which stored -> next job start (ms)", "stored_to_next_start_ms"))
           if summary[key]]),
    ]))
    print(f"\nthroughput: {summary['throughput_jobs_per_s']:.1f} jobs/s end to end ({summary['jobs']} jobs in "
          f"{summary['sweep_wall_s']:.1f} s, submit -> done, {summary['agents']} agents on one host; a job was "
          f"running {summary['host_busy_fraction'] * 100:.0f}% of that time)")
    print(f"the scheduler ran jobs one at a time on this host: {summary['overlapping_jobs_on_host']} "
          f"overlapping job pair(s)")
    if lat["n"] < 100:
        print(f"note: with {lat['n']} jobs, p99 is an interpolation between the two largest values")


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse_args(argv)
    n_jobs = args.jobs or (12 if args.quick else 150)
    n_agents = args.agents or (2 if args.quick else 3)

    from fleetmeter.modeler.builtin import get_builtin_model
    from fleetmeter.v1 import common_pb2

    model = get_builtin_model(args.model, "onnx")
    settings = common_pb2.BenchSettings(warmup_runs=2, min_runs=5, min_duration_ms=args.min_duration_ms,
                                        max_runs=30000, max_duration_ms=max(1000.0, 10 * args.min_duration_ms),
                                        stable_rel_tol=0.05)
    started = time.monotonic()
    machine = _common.machine_info()
    sweep = run_sweep(model.path, settings, n_jobs, n_agents)
    rows = sweep["rows"]
    ok = [r for r in rows if not r["failure_kind"] and r["finished_at_unix"]]
    if len(ok) < n_jobs:
        raise RuntimeError(f"only {len(ok)} of {n_jobs} jobs produced a measurement "
                           f"(failures: {[r['failure_kind'] for r in rows if r['failure_kind']]})")
    summary = summarize_jobs(ok, n_agents, sweep["sweep_s"])
    summary["wall_s"] = round(time.monotonic() - started, 1)
    summary["load_average_at_end"] = _common.loadavg()
    payload = {
        "benchmark": NAME, "quick": args.quick, "machine": machine,
        "settings": {"jobs": n_jobs, "agents": n_agents, "model": model.path.name,
                     "bench_settings": {"warmup_runs": settings.warmup_runs, "min_runs": settings.min_runs,
                                        "min_duration_ms": settings.min_duration_ms,
                                        "max_duration_ms": settings.max_duration_ms,
                                        "stable_rel_tol": settings.stable_rel_tol},
                     "agent_command": "fleetmeter-agent run --runtime onnxruntime --threads 1 --no-power",
                     "latency_definition": "measurements.received_unix - record_json.finished_at_unix",
                     "submitted_unix": sweep["submitted_unix"], "done_unix": sweep["done_unix"]},
        "summary": summary,
        "jobs": [{**r, "latency_ms": (r["received_unix"] - r["finished_at_unix"]) * 1000.0} for r in ok],
    }
    print_report(summary)
    _common.write_and_close(NAME, payload, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
