"""Predictor accuracy on real measurements: >= 1,000 zoo models per local platform.

1. Measure (skipped with ``--reuse`` when ``--data`` already holds a store):
   build ``--models`` zoo architectures (all families, seed 7, ONNX + TFLite),
   start a controller and three real agents (onnxruntime 1 and 2 threads,
   LiteRT 1 thread; one host, so they take turns), sweep every file over
   every platform that runs it, with per-operator profiles on onnxruntime
   (the kernel-level predictors' data). Then the first ``--noise-models``
   architectures once more: their two medians give each platform's noise
   ceiling.
2. Train through the controller (``PredictorService.Train``: one Ray task per
   platform and target, random 80/20 and leave-one-family-out evaluations,
   baselines side by side) and write every platform's held-out metrics.

The store stays in ``--data`` so training can be re-run on the same
measurements (``--reuse``) after the modeler changes.

    python benchmarks/accuracy.py --models 1000 --noise-models 100
    python benchmarks/accuracy.py --reuse            # retrain on the kept measurements
    python benchmarks/accuracy.py --reuse --remeasure-disturbed --no-train   # top up what the guard flagged
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, submit_and_wait, table, write_json  # noqa: E402

from fleetmeter.local_fleet import LocalFleet  # noqa: E402
from fleetmeter.v1 import common_pb2, fleet_pb2  # noqa: E402

AGENTS = (("ort-t1", ("--runtime", "onnxruntime", "--threads", "1", "--pin-cpus", "1")),
          ("ort-t2", ("--runtime", "onnxruntime", "--threads", "2")),
          ("litert-t1", ("--runtime", "litert", "--threads", "1", "--pin-cpus", "1")))
TOKENS_FILE = "tokens.json"


def _sweep(client, shas, settings, name, profile=False, reading=None):
    platform_ids = sorted({pid for d in client.list_devices() for pid in d.platform_ids})
    spec = fleet_pb2.SweepSpec(
        name=name, models=shas, settings=settings, profile_operators=profile, reading=reading,
        platforms=fleet_pb2.PlatformSelector(platform_ids=platform_ids))
    return submit_and_wait(client, spec, timeout_s=8 * 3600, report_every_s=60)[1]


def _start_agents(fleet: LocalFleet, args) -> tuple:
    """The three agents, connected; the sweeps' ``(BenchSettings, ReadingSettings or None)``."""
    for name, extra in AGENTS:
        fleet.start_agent(name, *extra)
    fleet.wait_agents_connected([n for n, _ in AGENTS])
    settings = common_pb2.BenchSettings(warmup_runs=3, min_runs=10, min_duration_ms=args.min_duration_ms,
                                        max_duration_ms=max(2000.0, 10 * args.min_duration_ms))
    return settings, (common_pb2.ReadingSettings(sessions=args.sessions) if args.sessions else None)


def measure(fleet: LocalFleet, args, report: dict) -> None:
    from fleetmeter.modeler.zoo.build import build_zoo
    from fleetmeter.modeler.zoo.families import family_names

    families = family_names()
    zoo_dir = Path(args.data) / "zoo"
    t0 = time.monotonic()
    entries = build_zoo(families, math.ceil(args.models / len(families)), 7, ("onnx", "tflite"), zoo_dir)
    report["zoo_build_s"] = round(time.monotonic() - t0, 1)
    order = sorted({(e["index"], e["family"], e["name"]) for e in entries})  # round-robin over families
    archs = [name for _, _, name in order][: args.models]
    files = collections.defaultdict(dict)
    for e in entries:
        files[e["name"]][e["format"]] = zoo_dir / e["file"]
    settings, reading = _start_agents(fleet, args)
    with fleet.client() as c:
        t0 = time.monotonic()
        sha_of = {(a, fmt): c.upload_model(path).model.sha256 for a in archs for fmt, path in files[a].items()}
        report["upload_s"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        progress = _sweep(c, sorted(set(sha_of.values())), settings, "accuracy", profile=True, reading=reading)
        report["sweep"] = {"wall_s": round(time.monotonic() - t0, 1), "jobs": progress.total,
                           "done": progress.done, "failed": progress.failed}
        noise = sorted({sha_of[(a, f)] for a in archs[: args.noise_models] for f in files[a]})
        t0 = time.monotonic()
        progress = _sweep(c, noise, settings, "noise-repeat", reading=reading)
        report["noise_sweep"] = {"wall_s": round(time.monotonic() - t0, 1), "jobs": progress.total,
                                 "done": progress.done, "failed": progress.failed}
    report["models"] = len(archs)
    report["settings"] = {"warmup_runs": 3, "min_runs": 10, "min_duration_ms": args.min_duration_ms,
                          "sessions_per_reading": args.sessions or "fleet default (3)"}
    for name, _ in AGENTS:
        fleet.stop_agent(name)


def remeasure_disturbed(fleet: LocalFleet, args, report: dict) -> None:
    """Measure again every (model, platform) of the kept store that has no reading a predictor may train on
    (all of its readings flagged ``disturbed`` by the interference guard, or failed): one sweep per platform,
    the same settings, the same agents."""
    from fleetmeter.controller.readside import ReadOnlyStore
    from fleetmeter.modeler.dataset import usable_for_training

    store = ReadOnlyStore(Path(args.data) / "fleet" / "controller" / "fleetmeter.sqlite")
    try:
        records = [r for r in store.list_measurements(include_samples=False) if r.get("job_kind") != "reference"]
    finally:
        store.close()
    usable = {(r["model_sha256"], r["platform_id"]) for r in records if usable_for_training(r)}
    redo: dict = collections.defaultdict(set)
    for r in records:
        if (r["model_sha256"], r["platform_id"]) not in usable:
            redo[r["platform_id"]].add(r["model_sha256"])
    settings, reading = _start_agents(fleet, args)
    report["remeasured"] = {}
    with fleet.client() as c:
        for pid, shas in sorted(redo.items()):
            t0 = time.monotonic()
            spec = fleet_pb2.SweepSpec(name="remeasure-disturbed", models=sorted(shas), settings=settings,
                                       profile_operators=True, reading=reading,
                                       platforms=fleet_pb2.PlatformSelector(platform_ids=[pid]))
            progress = submit_and_wait(c, spec, timeout_s=8 * 3600, report_every_s=60)[1]
            report["remeasured"][pid] = {"jobs": progress.total, "done": progress.done, "failed": progress.failed,
                                         "wall_s": round(time.monotonic() - t0, 1)}
    for name, _ in AGENTS:
        fleet.stop_agent(name)


def train_and_evaluate(fleet: LocalFleet, args, report: dict) -> None:
    from fleetmeter.predict_cli import eval_rows

    with fleet.client() as c:
        names = {}
        for d in c.list_devices():
            for pid in d.platform_ids:
                names[pid] = d.name
        t0 = time.monotonic()
        last = None
        for msg in c.train(targets=["latency_ms"], seed=args.seed, timeout_s=6 * 3600):
            if msg.stage != "training" or (msg.done, msg.total) != last:
                print(f"  train: {msg.stage} {msg.done}/{msg.total} {msg.message}", flush=True)
                last = (msg.done, msg.total)
        report["train_wall_s"] = round(time.monotonic() - t0, 1)
        predictors = c.list_predictors(targets=["latency_ms"])
    report["platforms"] = {}
    for split in ("random", "family"):
        for row in eval_rows(predictors, split):
            entry = report["platforms"].setdefault(row["platform"], {
                "agent": names.get(row["platform"], ""), "granularity": row["granularity"],
                "method": row.get("method"), "warnings": row.get("warnings"),
                "chosen_because": row["chosen_because"], "noise_ceiling": row["noise_ceiling"],
                "interval_level": row["interval_level"], "interval_coverage": row["interval_coverage"]})
            entry[split] = {"n_train": row["n_train"], "n_test": row["n_test"], "methods": row["methods"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000, help="zoo architectures (each in ONNX and TFLite)")
    parser.add_argument("--noise-models", type=int, default=100, help="architectures measured twice")
    parser.add_argument("--min-duration-ms", type=float, default=150.0)
    parser.add_argument("--sessions", type=int, default=0,
                        help="sessions per reading (default: the fleet's, 3; 1 is about 3x cheaper)")
    parser.add_argument("--seed", type=int, default=0, help="split and training seed")
    parser.add_argument("--data", default="/tmp/fleetmeter-accuracy", help="where the store and zoo are kept")
    parser.add_argument("--reuse", action="store_true", help="train on the measurements already in --data")
    parser.add_argument("--remeasure-disturbed", action="store_true",
                        help="with --reuse: first measure again what has no undisturbed reading in the kept store")
    parser.add_argument("--no-train", action="store_true", help="measure only (e.g. for benchmarks/adapt_local.py)")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    data = Path(args.data)
    tokens_path = data / TOKENS_FILE
    reuse = args.reuse and (data / "fleet" / "controller" / "fleetmeter.sqlite").exists()
    if args.reuse and not reuse:
        parser.error(f"--reuse: no store under {data}/fleet; run without --reuse first")
    data.mkdir(parents=True, exist_ok=True)
    tokens = json.loads(tokens_path.read_text()) if reuse else {"agent": secrets.token_hex(8),
                                                                 "api": secrets.token_hex(8)}
    tokens_path.write_text(json.dumps(tokens))
    measured = data / "measure.json"  # absent when the measuring run was stopped before it ended
    previous = json.loads(measured.read_text()) if reuse and measured.exists() else {}
    report: dict = {"machine": machine_info(), "reused_measurements": reuse, **previous}
    fleet = LocalFleet(data / "fleet", agent_token=tokens["agent"], api_token=tokens["api"])
    try:
        fleet.start_controller()
        if not reuse:
            measure(fleet, args, report)
            (data / "measure.json").write_text(json.dumps({k: v for k, v in report.items() if k != "machine"}))
        elif args.remeasure_disturbed:
            remeasure_disturbed(fleet, args, report)
            (data / "measure.json").write_text(json.dumps({k: v for k, v in report.items() if k != "machine"}))
        if args.no_train:
            return 0
        train_and_evaluate(fleet, args, report)
    finally:
        fleet.close()
    path = write_json("accuracy", report, args.out_dir)
    rows = []
    for pid, e in sorted(report["platforms"].items()):
        for split in ("random", "family"):
            methods = e.get(split, {}).get("methods", {})
            rows.append((e["agent"] or pid, split, e.get(split, {}).get("n_test"), e.get("method") or "-",
                         *(f"{100 * methods[m]['acc_10']:.1f}" if m in methods and methods[m].get("acc_10") is not None
                           else "-" for m in ("predictor", "additive", "additive_lgbm", "kernel", "opcount_lgbm",
                                              "flops_linear")),
                         f"{100 * (e['noise_ceiling'] or {}).get('share_within_10') or 0:.1f}"))
    print(table(["PLATFORM", "SPLIT", "N TEST", "SERVES", "±10% LGBM", "±10% ADDITIVE", "±10% ADD+LGBM",
                 "±10% KERNEL", "±10% OPCOUNT", "±10% FLOPS", "NOISE ±10%"], rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
