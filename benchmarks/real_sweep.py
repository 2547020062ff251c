"""A real sweep end to end, and the measurement-noise ceiling per platform.

1. Build a zoo (all families, seed 1, ONNX + TFLite) — ``--models`` architectures.
2. Start a controller and three real agents on this machine: onnxruntime 1 thread,
   onnxruntime 2 threads, LiteRT 1 thread (one host: they take turns).
3. Upload every file and sweep every model over every platform that can run it.
   Reported: wall time, measurements, failures grouped by kind and reason.
4. Noise: the first ``--noise-models`` architectures again with ``repeats=2``;
   per platform, the share of models whose two medians differ by more than 5 %
   and by more than 10 % (|a-b| / mean(a, b)). That is the ceiling any predictor
   of that platform can reach.

    python benchmarks/real_sweep.py --models 500 --noise-models 50
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import submit_and_wait  # noqa: E402

from fleetmeter.local_fleet import LocalFleet  # noqa: E402
from fleetmeter.modeler.zoo.build import build_zoo  # noqa: E402
from fleetmeter.modeler.zoo.families import family_names  # noqa: E402
from fleetmeter.v1 import common_pb2, fleet_pb2  # noqa: E402

AGENTS = (("ort-t1", ("--runtime", "onnxruntime", "--threads", "1")),
          ("ort-t2", ("--runtime", "onnxruntime", "--threads", "2")),
          ("litert-t1", ("--runtime", "litert", "--threads", "1")))


def _sweep(client, shas, platform_ids, settings, repeats=1, name="real", cooldown_s=0.0):
    spec = fleet_pb2.SweepSpec(
        name=name, models=shas, repeats=repeats, settings=settings, cooldown_s=cooldown_s,
        platforms=fleet_pb2.PlatformSelector(platform_ids=platform_ids))
    return submit_and_wait(client, spec, timeout_s=6 * 3600, report_every_s=30)


def _parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=500, help="zoo architectures (each in ONNX and TFLite)")
    parser.add_argument("--noise-models", type=int, default=50)
    parser.add_argument("--min-duration-ms", type=float, default=100.0)
    parser.add_argument("--quick", action="store_true", help="12 models, 6 for noise")
    parser.add_argument("--pin", action="store_true",
                        help="pin the 1-thread agents to CPU 1 (the controller and Ray keep CPU 0 to themselves)")
    parser.add_argument("--cooldown-s", type=float, default=0.0, help="pause between jobs on a device")
    parser.add_argument("--noise-only", action="store_true", help="skip the big sweep; only the noise study")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "real_sweep.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.noise_models = 12, 6
    return args


def build_files(zoo_dir: Path, args: argparse.Namespace, report: dict) -> Tuple[List[str], Dict[str, Dict[str, Path]]]:
    """Step 1: the zoo; the architectures to sweep, in order, and each one's file per format."""
    families = family_names()
    t0 = time.monotonic()
    entries = build_zoo(families, math.ceil(args.models / len(families)), 1, ("onnx", "tflite"), zoo_dir)
    report["zoo_build_s"] = round(time.monotonic() - t0, 1)
    by_arch: Dict[str, Dict[str, Path]] = collections.defaultdict(dict)
    # Round-robin over families (index 0 of every family, then index 1, ...), so any prefix — the
    # noise subset too — spans every family.
    order = sorted({(e["index"], e["family"], e["name"]) for e in entries})
    names_in_order = [name for _, _, name in order]
    if args.noise_only:
        keep = set(names_in_order[: args.noise_models])
        entries = [e for e in entries if e["name"] in keep]
    for e in entries:
        by_arch[e["name"]][e["format"]] = zoo_dir / e["file"]
    archs = [n for n in names_in_order if n in by_arch][: args.models]
    report["models"] = len(archs)
    return archs, by_arch


def full_sweep(c, sha_of: dict, platform_ids: List[str], names: Dict[str, str], settings, args, report: dict) -> None:
    """Step 3: every file over every platform; wall time, counts and failures grouped by reason."""
    t0 = time.monotonic()
    sweep_id, progress = _sweep(c, sorted(set(sha_of.values())), platform_ids, settings,
                                cooldown_s=args.cooldown_s)
    report["sweep_wall_s"] = round(time.monotonic() - t0, 1)
    ms = c.list_measurements(sweep_id=sweep_id)
    fails = collections.Counter(f"{names.get(m.platform_id, m.platform_id)}: {m.failure_kind}: "
                                f"{m.failure_message[:120]}" for m in ms if m.failure_kind)
    report["sweep"] = {"jobs": progress.total, "done": progress.done, "failed": progress.failed,
                       "measurements": len(ms), "failures": dict(fails.most_common(20)),
                       "jobs_per_s": round(progress.total / report["sweep_wall_s"], 2)}
    print(json.dumps(report["sweep"], indent=2), flush=True)


def noise_study(c, shas: List[str], platform_ids: List[str], names: Dict[str, str], settings, args,
                report: dict) -> None:
    """Step 4: the noise subset twice; per platform, how often the two medians differ by > 5 % and > 10 %."""
    t0 = time.monotonic()
    noise_id, _ = _sweep(c, shas, platform_ids, settings, repeats=2, name="noise", cooldown_s=args.cooldown_s)
    report["noise_wall_s"] = round(time.monotonic() - t0, 1)
    medians = collections.defaultdict(list)
    for m in c.list_measurements(sweep_id=noise_id):
        if not m.failure_kind:
            medians[(m.platform_id, m.model_sha256)].append(m.latency_ms.median)
    noise = {}
    for pid in platform_ids:
        diffs = [abs(v[0] - v[1]) / ((v[0] + v[1]) / 2) for (p, _), v in medians.items()
                 if p == pid and len(v) == 2]
        if diffs:
            noise[names.get(pid, pid)] = {
                "models": len(diffs), "share_over_5pct": round(sum(d > 0.05 for d in diffs) / len(diffs), 3),
                "share_over_10pct": round(sum(d > 0.10 for d in diffs) / len(diffs), 3),
                "median_rel_diff": round(sorted(diffs)[len(diffs) // 2], 4), "platform_id": pid}
    report["noise"] = noise


def main(argv=None) -> int:
    args = _parse_args(argv)
    settings = common_pb2.BenchSettings(warmup_runs=3, min_runs=10, min_duration_ms=args.min_duration_ms,
                                        max_duration_ms=max(2000.0, 10 * args.min_duration_ms))
    report: dict = {"models_requested": args.models, "pin": args.pin, "cooldown_s": args.cooldown_s,
                    "settings": {"warmup_runs": 3, "min_runs": 10, "min_duration_ms": args.min_duration_ms}}
    with tempfile.TemporaryDirectory(prefix="fleetmeter-real-") as tmp:
        archs, by_arch = build_files(Path(tmp) / "zoo", args, report)
        fleet = LocalFleet(Path(tmp) / "fleet", agent_token=secrets.token_hex(8), api_token=secrets.token_hex(8))
        try:
            fleet.start_controller()
            for name, extra in AGENTS:
                pin = ("--pin-cpus", "1") if args.pin and "1" == extra[-1] else ()
                fleet.start_agent(name, *extra, *pin)
            fleet.wait_agents_connected([n for n, _ in AGENTS])
            with fleet.client() as c:
                platform_ids = sorted({pid for d in c.list_devices() for pid in d.platform_ids})
                names = {d.platform_ids[0]: d.name for d in c.list_devices()}
                t0 = time.monotonic()
                sha_of = {}
                for arch in archs:
                    for fmt, path in by_arch[arch].items():
                        sha_of[(arch, fmt)] = c.upload_model(path).model.sha256
                report["upload_s"] = round(time.monotonic() - t0, 1)
                report["files"] = len(sha_of)
                if not args.noise_only:
                    full_sweep(c, sha_of, platform_ids, names, settings, args, report)
                noise_archs = archs[: args.noise_models]
                noise_shas = sorted({sha_of[(a, f)] for a in noise_archs for f in by_arch[a]})
                noise_study(c, noise_shas, platform_ids, names, settings, args, report)
        finally:
            fleet.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
