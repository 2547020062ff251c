"""Repeatability through the fleet: the same model measured again agrees?

For each *variant* (a way of running the fleet) this starts a real
controller and one real onnxruntime 1-thread agent on this machine (the
controller shares the host, as in the demo or a lab box), uploads zoo
models of every family and sweeps them with ``--repeats`` (repeat-major
order: a model's repeats are a whole pass apart). Reported per variant:

- share of repeat pairs within ±5 % / ±10 % (|a-b| / mean(a,b)), per model
  (the model's worst pair) and over all pairs; median pair difference; the
  worst models;
- wall time per job (sweep wall / jobs) — the cost of a reading;
- readings flagged ``unstable`` / ``disturbed``, sessions per reading.

Variants (``--variants``, any subset, run one after another in the same
process run so they share the machine's state):

- ``before``: what the fleet did before isolation: the timed loop in the
  agent's own process (``--isolation thread``), one session of >= 500 ms,
  no priorities (agent and controller at nice 0), no guard re-runs.
- ``isolated``: the same single 500 ms session, but in a forked
  measurement process, agent threads at nice 5, controller at nice 10.
- ``sessions``: isolated + 3 sessions of >= 200 ms per reading (the
  default), re-measure when they spread > 5 %, guard re-runs.
- ``default``: whatever the agent and the sweep default to today (no
  flags at all) — the path users take.

``--hog-at 0.5`` starts a CPU hog (a busy process, not pinned) when half
of each variant's jobs are done and stops it at the end: readings whose
accepted sessions overlap the hog must be flagged ``disturbed`` (or have
been re-run outside it) — none stored as clean.

    python benchmarks/repeatability.py                    # 36 models x 3 repeats, variants before + default
    python benchmarks/repeatability.py --variants before,isolated,sessions,default
    python benchmarks/repeatability.py --models 12 --variants default --hog-at 0.5
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import math
import multiprocessing
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fleetmeter.local import LocalFleet
from fleetmeter.modeler.zoo.build import build_zoo
from fleetmeter.modeler.zoo.families import family_names
from fleetmeter.v1 import common_pb2, fleet_pb2

VARIANTS = {
    # name: (agent flags, controller flags, reading settings, bench settings)
    "before": (("--isolation", "thread", "--control-nice", "0"), ("--nice", "0"),
               dict(sessions=1, isolate=False, max_disturbed_reruns=0, max_other_cpu_cores=1e9,
                    max_steal_share=1.0), dict(min_duration_ms=500.0)),
    "isolated": ((), (), dict(sessions=1, max_disturbed_reruns=0, max_other_cpu_cores=1e9, max_steal_share=1.0),
                 dict(min_duration_ms=500.0)),
    "sessions": ((), (), dict(sessions=3), {}),
    "default": ((), (), None, {}),
}


def machine() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_avg_at_start": os.getloadavg()}


def _hog(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def _proc_table() -> dict:
    """pid -> (ppid, cpu seconds incl. reaped children) for every process."""
    tck = os.sysconf("SC_CLK_TCK")
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(d)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / tck)
    return out


def tree_cpu_s(root_pid: int, exclude: tuple = ()) -> float:
    """CPU seconds of ``root_pid`` and its live descendants (minus the subtrees in ``exclude``)."""
    table = _proc_table()
    kids: dict = collections.defaultdict(list)
    for pid, (ppid, _) in table.items():
        kids[ppid].append(pid)
    total, stack = 0.0, [root_pid]
    while stack:
        pid = stack.pop()
        if pid in exclude or pid not in table:
            continue
        total += table[pid][1]
        stack += kids[pid]
    return total


def pair_stats(medians: dict) -> dict:
    """medians: model -> [median per repeat]."""
    pairs, per_model = [], {}
    for model, values in medians.items():
        rel = [abs(a - b) / ((a + b) / 2) for a, b in itertools.combinations(values, 2)]
        if rel:
            pairs += rel
            per_model[model] = max(rel)
    if not pairs:
        return {"pairs": 0}
    worst = sorted(per_model.items(), key=lambda kv: -kv[1])[:5]
    return {
        "models": len(per_model), "pairs": len(pairs),
        "models_within_10": round(sum(v <= 0.10 for v in per_model.values()) / len(per_model), 3),
        "models_within_5": round(sum(v <= 0.05 for v in per_model.values()) / len(per_model), 3),
        "pairs_within_10": round(sum(v <= 0.10 for v in pairs) / len(pairs), 3),
        "pairs_within_5": round(sum(v <= 0.05 for v in pairs) / len(pairs), 3),
        "median_pair_diff": round(statistics.median(pairs), 4),
        "worst_models": [(m, round(1 + v, 3)) for m, v in worst],
    }


def run_variant(name: str, files: list, args, root: Path) -> dict:
    agent_flags, controller_flags, reading, settings = VARIANTS[name]
    fleet = LocalFleet(root / name, agent_token=secrets.token_hex(8), api_token=secrets.token_hex(8))
    out: dict = {"variant": name, "agent_flags": list(agent_flags), "controller_flags": list(controller_flags),
                 "reading": reading, "settings": settings}
    try:
        fleet.start_controller(None, 180.0, *controller_flags)
        fleet.start_agent("ort-t1", "--runtime", "onnxruntime", "--threads", "1", "--no-power", *agent_flags)
        fleet.wait_agents_connected(["ort-t1"])
        with fleet.client() as c:
            pid = c.list_devices()[0].platform_ids[0]
            sha_name = {}
            for path in files:
                sha_name[c.upload_model(path).model.sha256] = path.stem
            spec = fleet_pb2.SweepSpec(name=name, models=sorted(sha_name), repeats=args.repeats,
                                       platforms=fleet_pb2.PlatformSelector(platform_ids=[pid]),
                                       repeat_sample=-1.0,
                                       settings=common_pb2.BenchSettings(**settings))
            if reading is not None:
                spec.reading.CopyFrom(common_pb2.ReadingSettings(**reading))
            ctl_pid, agent_pid = fleet.controller.popen.pid, fleet.agents["ort-t1"].popen.pid
            worker_pids = tuple(p for p, (pp, _) in _proc_table().items() if pp == agent_pid)
            cpu0 = (tree_cpu_s(ctl_pid), tree_cpu_s(agent_pid, worker_pids), sum(map(tree_cpu_s, worker_pids)))
            t0 = time.monotonic()
            sweep = c.submit_sweep(spec)
            hog, hog_window = None, None
            for p in c.watch_sweep(sweep.sweep_id, timeout_s=4 * 3600):
                if args.hog_at and hog is None and p.done + p.failed >= args.hog_at * p.total:
                    stop_at = time.time() + 3600
                    hog = multiprocessing.Process(target=_hog, args=(stop_at,), daemon=True)
                    hog.start()
                    hog_window = [time.time(), None]
                    print(f"  {name}: CPU hog started at {p.done + p.failed}/{p.total}", flush=True)
            wall = time.monotonic() - t0
            cpu1 = (tree_cpu_s(ctl_pid), tree_cpu_s(agent_pid, worker_pids), sum(map(tree_cpu_s, worker_pids)))
            out["cpu_cores_during_sweep"] = {
                name: round((b - a) / wall, 3) for name, a, b in zip(
                    ("controller_and_ray", "agent_process", "measurement_worker"), cpu0, cpu1)}
            if hog is not None:
                hog.terminate()
                hog.join()
                hog_window[1] = time.time()
            ms = [m for m in c.list_measurements(sweep_id=sweep.sweep_id, include_samples=False)
                  if m.job_kind != "reference"]
    finally:
        fleet.close()
    ok = [m for m in ms if not m.failure_kind]
    medians = collections.defaultdict(list)
    for m in ok:
        medians[sha_name.get(m.model_sha256, m.model_sha256)].append(m.latency_ms.median)
    flags = collections.Counter(f for m in ok for f in m.flags)
    out.update({
        "jobs": len(ms), "failed": len(ms) - len(ok), "wall_s": round(wall, 1),
        "wall_per_job_s": round(wall / max(1, len(ms)), 3),
        "sessions_per_reading": round(statistics.mean(len(m.sessions) or 1 for m in ok), 2) if ok else None,
        "flags": dict(flags), **pair_stats(medians),
        "medians_ms": {k: [round(v, 4) for v in vs] for k, vs in sorted(medians.items())},
        "readings": [{"model": sha_name.get(m.model_sha256, ""), "median_ms": round(m.latency_ms.median, 4),
                      "flags": list(m.flags), "spread": round(m.session_spread, 4),
                      "sessions": [(round(s.median_ms, 4), s.accepted,
                                    round(s.interference.probe_slowdown, 3)
                                    if s.interference.HasField("probe_slowdown") else None,
                                    round(s.interference.other_cpu_cores, 3)
                                    if s.interference.HasField("other_cpu_cores") else None)
                                   for s in m.sessions]} for m in ok],
    })
    if hog_window:
        during = []
        for m in ok:
            acc = [s for s in m.sessions if s.accepted] or []
            spans = [(s.started_at_unix, s.finished_at_unix) for s in acc] or [(m.started_at_unix,
                                                                                 m.finished_at_unix)]
            if any(a < hog_window[1] and b > hog_window[0] for a, b in spans):
                during.append(m)
        clean = [m for m in during if "disturbed" not in m.flags]
        out["hog"] = {"readings_overlapping_hog": len(during), "flagged_disturbed": len(during) - len(clean),
                      "stored_clean": len(clean),
                      "stored_clean_models": [sha_name.get(m.model_sha256, "")[:40] for m in clean]}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=36, help="zoo architectures, round-robin over the 12 families")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="before,default", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--hog-at", type=float, default=0.0, help="start a CPU hog at this share of the jobs")
    parser.add_argument("--zoo", default=str(Path(__file__).parent / "out" / "zoo-repeatability"),
                        help="where the zoo is built (reused when present)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "repeatability.json"))
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    families = family_names()
    per_family = math.ceil(args.models / len(families))
    zoo = Path(args.zoo)
    t0 = time.monotonic()
    entries = build_zoo(families, per_family, 1, ("onnx",), zoo)
    order = sorted((e["index"], e["family"], e["file"]) for e in entries)
    files = [zoo / f for _, _, f in order][: args.models]
    report = {"machine": machine(), "models": len(files), "repeats": args.repeats,
              "zoo_build_s": round(time.monotonic() - t0, 1), "variants": []}
    print(f"{len(files)} models; variants {variants}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fleetmeter-rep-") as tmp:
        for name in variants:
            res = run_variant(name, files, args, Path(tmp))
            report["variants"].append(res)
            brief = {k: v for k, v in res.items() if k not in ("medians_ms", "readings")}
            print(json.dumps(brief), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{'variant':10} {'pairs±10':>8} {'pairs±5':>8} {'models±10':>9} {'med diff':>8} {'s/job':>6} flags")
    for r in report["variants"]:
        print(f"{r['variant']:10} {r.get('pairs_within_10', '-'):>8} {r.get('pairs_within_5', '-'):>8} "
              f"{r.get('models_within_10', '-'):>9} {r.get('median_pair_diff', '-'):>8} {r['wall_per_job_s']:>6} "
              f"{r['flags']}" + (f" hog: {r['hog']}" if "hog" in r else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
