"""Repeatability through the fleet: the same model measured again agrees?

One real controller on this machine (it shares the host, as in the demo or
a lab box) and one real onnxruntime 1-thread agent per *variant* (a way of
measuring). The agents share the host, so they take turns: the variants'
jobs interleave in time and see the same machine. Zoo models of every
family are swept once per variant with ``--repeats`` (repeat-major order: a
model's repeats are a whole pass apart). Reported per variant:

- share of repeat pairs within ±5 % / ±10 % (|a-b| / mean(a,b)), per model
  (the model's worst pair) and over all pairs; median pair difference; the
  worst models;
- device-busy seconds per reading (first session start to last session end)
  and, for all variants together, wall time per job — the cost of a reading;
- CPU used by the controller + Ray, each agent and each measurement worker;
- readings flagged ``unstable`` / ``disturbed``, sessions per reading.

Variants (``--variants``, any subset, run one after another in the same
process run so they share the machine's state):

- ``before``: what the fleet did before isolation: the timed loop in the
  agent's own process (``--isolation thread``), one session of >= 500 ms,
  agent threads at nice 0, no guard verdicts or re-runs.
- ``isolated``: the same single 500 ms session without verdicts, but in a
  forked measurement process, agent threads at nice 5.
- ``sessions``: isolated + 3 sessions per reading, re-measure when they
  spread > 5 %, re-runs when the process-counter guard says disturbed — but
  no speed probe (no probe verdicts, no waiting for a fast machine).
- ``default``: whatever the agent and the sweep default to today (no
  flags at all) — the path users take.

(The controller runs at its default ``--nice 10`` for all of them.)

``--hog-at 0.5`` starts a CPU hog (a busy process, not pinned) when half
of all jobs are done and stops it at the end: readings whose
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
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common
from fleetmeter.local_fleet import LocalFleet
from fleetmeter.modeler.zoo.build import build_zoo
from fleetmeter.modeler.zoo.families import family_names
from fleetmeter.v1 import common_pb2, fleet_pb2

VARIANTS = {
    # name: (agent flags, unused, reading settings, bench settings)
    "before": (("--isolation", "thread", "--control-nice", "0"), (),
               dict(sessions=1, isolate=False, max_disturbed_reruns=0, max_other_cpu_cores=1e9,
                    max_steal_share=1.0, max_probe_slowdown=1e9, max_speed_wait_s=0.0),
               dict(min_duration_ms=500.0)),
    "isolated": ((), (), dict(sessions=1, max_disturbed_reruns=0, max_other_cpu_cores=1e9, max_steal_share=1.0,
                             max_probe_slowdown=1e9, max_speed_wait_s=0.0),
                 dict(min_duration_ms=500.0)),
    "sessions": ((), (), dict(sessions=3, max_probe_slowdown=1e9, max_speed_wait_s=0.0), {}),
    "default": ((), (), None, {}),
}


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


def variant_stats(ms: list, sha_name: dict) -> dict:
    ok = [m for m in ms if not m.failure_kind]
    medians, clean = collections.defaultdict(list), collections.defaultdict(list)
    for m in ok:
        name = sha_name.get(m.model_sha256, m.model_sha256)
        medians[name].append(m.latency_ms.median)
        if "disturbed" not in m.flags:
            clean[name].append(m.latency_ms.median)
    busy = [m.finished_at_unix - m.started_at_unix for m in ok if m.finished_at_unix > m.started_at_unix]
    return {
        "jobs": len(ms), "failed": len(ms) - len(ok),
        "busy_s_per_reading": round(statistics.mean(busy), 3) if busy else None,
        "sessions_per_reading": round(statistics.mean(len(m.sessions) or 1 for m in ok), 2) if ok else None,
        "flags": dict(collections.Counter(f for m in ok for f in m.flags)), **pair_stats(medians),
        "undisturbed_only": {k: v for k, v in pair_stats(clean).items() if k != "worst_models"},
        "medians_ms": {k: [round(v, 4) for v in vs] for k, vs in sorted(medians.items())},
        "readings": [{"model": sha_name.get(m.model_sha256, ""), "median_ms": round(m.latency_ms.median, 4),
                      "flags": list(m.flags), "spread": round(m.session_spread, 4),
                      "sessions": [(round(s.median_ms, 4), s.accepted,
                                    round(s.interference.probe_slowdown, 3)
                                    if s.interference.HasField("probe_slowdown") else None,
                                    round(s.interference.other_cpu_cores, 3)
                                    if s.interference.HasField("other_cpu_cores") else None,
                                    round(s.started_at_unix, 2), round(s.finished_at_unix, 2))
                                   for s in m.sessions]} for m in ok],
    }


def run_interleaved(variants: list, files: list, args, root: Path) -> dict:
    """One controller; one agent per variant on this host (so they take turns, interleaving the
    variants' jobs in time); one sweep per variant, all submitted together."""
    fleet = LocalFleet(root, agent_token=secrets.token_hex(8), api_token=secrets.token_hex(8))
    out: dict = {"variants": []}
    try:
        fleet.start_controller()
        for v in variants:
            fleet.start_agent(f"ag-{v}", "--runtime", "onnxruntime", "--threads", "1", "--no-power",
                              "--label", f"variant={v}", *VARIANTS[v][0])
        fleet.wait_agents_connected([f"ag-{v}" for v in variants])
        with fleet.client() as c:
            pid_of = {d.name[3:]: d.platform_ids[0] for d in c.list_devices()}
            sha_name = {c.upload_model(path).model.sha256: path.stem for path in files}
            ctl_pid = fleet.controller.popen.pid
            procs = {v: fleet.agents[f"ag-{v}"].popen.pid for v in variants}
            workers = {v: tuple(p for p, (pp, _) in _proc_table().items() if pp == procs[v]) for v in variants}

            def cpu() -> dict:
                d = {"controller_and_ray": tree_cpu_s(ctl_pid)}
                for v in variants:
                    d[f"{v}:agent_process"] = tree_cpu_s(procs[v], workers[v])
                    d[f"{v}:measurement_worker"] = sum(map(tree_cpu_s, workers[v]))
                return d

            cpu0, t0 = cpu(), time.monotonic()
            sweeps = {}
            for v in variants:
                _, _, reading, settings = VARIANTS[v]
                spec = fleet_pb2.SweepSpec(name=v, models=sorted(sha_name), repeats=args.repeats,
                                           platforms=fleet_pb2.PlatformSelector(platform_ids=[pid_of[v]]),
                                           repeat_sample=-1.0, settings=common_pb2.BenchSettings(**settings))
                if reading is not None:
                    spec.reading.CopyFrom(common_pb2.ReadingSettings(**reading))
                sweeps[v] = c.submit_sweep(spec).sweep_id
            hog, hog_window, last = None, None, 0.0
            while True:
                progress = [c.get_sweep(sid).progress for sid in sweeps.values()]
                done = sum(p.done + p.failed + p.cancelled for p in progress)
                total = sum(p.total for p in progress)
                if args.hog_at and hog is None and done >= args.hog_at * total:
                    hog = multiprocessing.Process(target=_hog, args=(time.time() + 3600,), daemon=True)
                    hog.start()
                    hog_window = [time.time(), None]
                    print(f"  CPU hog started at {done}/{total}", flush=True)
                if done >= total:
                    break
                if time.monotonic() - last > 30:
                    last = time.monotonic()
                    print(f"  {done}/{total} jobs", flush=True)
                time.sleep(1.0)
            wall = time.monotonic() - t0
            cpu1 = cpu()
            out["wall_s"] = round(wall, 1)
            out["wall_per_job_s_all_variants"] = round(wall / max(1, total), 3)
            out["cpu_cores_during_sweeps"] = {k: round((cpu1[k] - cpu0[k]) / wall, 3) for k in cpu0}
            if hog is not None:
                hog.terminate()
                hog.join()
                hog_window[1] = time.time()
            for v, sid in sweeps.items():
                ms = [m for m in c.list_measurements(sweep_id=sid) if m.job_kind != "reference"]
                res = {"variant": v, "agent_flags": list(VARIANTS[v][0]), "reading": VARIANTS[v][2],
                       "settings": VARIANTS[v][3], **variant_stats(ms, sha_name)}
                if hog_window:
                    res["hog"] = hog_stats(ms, hog_window, sha_name)
                out["variants"].append(res)
    finally:
        fleet.close()
    return out


def hog_stats(ms: list, window: list, sha_name: dict) -> dict:
    """Readings with an accepted session overlapping the hog; those not flagged 'disturbed' were stored clean."""
    during = []
    for m in ms:
        if m.failure_kind:
            continue
        spans = [(s.started_at_unix, s.finished_at_unix) for s in m.sessions if s.accepted] or \
            [(m.started_at_unix, m.finished_at_unix)]
        if any(a < window[1] and b > window[0] for a, b in spans):
            during.append(m)
    clean = [m for m in during if "disturbed" not in m.flags]
    return {"readings_overlapping_hog": len(during), "flagged_disturbed": len(during) - len(clean),
            "stored_clean": len(clean), "stored_clean_models": [sha_name.get(m.model_sha256, "") for m in clean]}


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
    report = {"machine": _common.machine_info(), "models": len(files), "repeats": args.repeats,
              "zoo_build_s": round(time.monotonic() - t0, 1), "variants": []}
    print(f"{len(files)} models; variants {variants}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fleetmeter-rep-") as tmp:
        run = run_interleaved(variants, files, args, Path(tmp))
    report.update({k: v for k, v in run.items() if k != "variants"})
    report["variants"] = run["variants"]
    for res in report["variants"]:
        print(json.dumps({k: v for k, v in res.items() if k not in ("medians_ms", "readings")}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wall {report['wall_s']} s for all variants; CPU in cores: {report['cpu_cores_during_sweeps']}")
    print(f"{'variant':10} {'pairs±10':>8} {'pairs±5':>8} {'models±10':>9} {'med diff':>8} {'busy s':>6} flags")
    for r in report["variants"]:
        print(f"{r['variant']:10} {r.get('pairs_within_10', '-'):>8} {r.get('pairs_within_5', '-'):>8} "
              f"{r.get('models_within_10', '-'):>9} {r.get('median_pair_diff', '-'):>8} "
              f"{r['busy_s_per_reading']:>6} {r['flags']}" + (f" hog: {r['hog']}" if "hog" in r else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
