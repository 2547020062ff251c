"""Hardware-aware search (``fleetmeter search`` / :func:`fleetmeter.hwsearch.search`) against random search and a
search that uses FLOPs as the latency proxy.

**NAS-Bench-201** (``--data``, the development table of ``shared/data/nb201/README.md``): maximise
``accuracy_cifar100`` under latency budgets on three devices at once, each budget at the 30th percentile of
that device's latencies (over the connected cells). Per device, a predictor is trained the way ``fleetmeter
train`` trains one (:func:`fleetmeter.modeler.train.run_train_task`) on ``--train`` (200) networks measured
there, with features from fleetmeter's own ONNX build of each network; the search asks those predictors
through the same ``predict_batch`` contract a controller answers, and verifies its finalists against the
table's latencies (standing in for measurements). Methods, each run with ``--seeds`` seeds:

* ``fleetmeter``: the search, interval-aware (``--risk``), ``--trials`` candidates, ``--verify`` K finalists;
* ``flops_proxy``: the same loop, costs predicted by a least-squares line latency = a * MACs + b per device
  fitted on the same training networks (no interval), verified the same way;
* ``random``: ``--trials`` networks drawn at random, every one measured on every device (what a search
  without predictors measures), the best that fits picked;
* ``random_same_measurements``: random search given as many device measurements as ``fleetmeter`` used.

Figures: regret (accuracy of the true best feasible network in the table minus the pick's, in points),
share of verified picks that break a budget when measured (target <= 5 %), device measurements used for the
search vs measuring every candidate the search looked at (target >= 10x fewer; the training measurements,
``--train`` x 3, are a fixed cost reported apart).

**Local platforms** (``--local``): a ``fleetmeter demo``-like fleet on this machine (controller and its three
agents: onnxruntime 1 and 2 threads, LiteRT 1 thread); ``--local-train`` networks of a zoo family (input size
fixed, ``--local-input-size``) are measured on all three by a real sweep and latency predictors trained, budgets
at the 30th percentile of those readings; the search runs through a real :class:`~fleetmeter.client.Client` at
each ``--local-risks`` value and verifies by real sweeps; then every candidate whose prediction interval reaches
below every budget (the only ones that can fit) is measured too, so that regret is known.

    python benchmarks/search.py --data ../shared/data/nb201/latency_ms.csv.gz
    python benchmarks/search.py --data FILE --local          # both
    python benchmarks/search.py --local --local-family mobilenetv2 --local-trials 24
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT_DIR, add_out_dir_argument, machine_info, table, write_json  # noqa: E402
from _nb201_data import build_models, connected, import_samples, read_table, samples_for  # noqa: E402

import numpy as np  # noqa: E402

from fleetmeter.client import Prediction  # noqa: E402
from fleetmeter.hwsearch import Candidate, NasBench201Space, search  # noqa: E402

DEFAULT_DEVICES = "pixel2,gold_6240,titanxp_1"
OBJECTIVE = "accuracy_cifar100"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ NB201: candidates, predictors, measurements
class _FileCandidate(Candidate):
    """An NB201 candidate whose ONNX file is kept in ``models_dir`` (the name ``build_models`` uses), so the
    searches and seeds build each network once."""

    models_dir = OUT_DIR / "nb201-models"

    def model(self, fmt: str = "onnx") -> bytes:
        path = self.models_dir / f"nasbench201-arch{self.info['arch_index']:05d}.onnx"
        if not path.is_file():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(super().model(fmt))
            tmp.replace(path)
        return path.read_bytes()


class CachedNb201Space(NasBench201Space):
    def suggest(self, trial) -> Candidate:
        c = super().suggest(trial)
        return _FileCandidate(**{f.name: getattr(c, f.name) for f in dataclasses.fields(c)})


class LocalPredictors:
    """``predict_batch`` (the controller's contract) answered by per-device functions of a model's features,
    each giving ``(value, lower, upper)`` in ms (``lower``/``upper`` None without an interval)."""

    def __init__(self, predict: Dict[str, Callable[[Any], tuple]], level: float = 0.0) -> None:
        self.predict, self.level, self.asked = predict, level, 0

    def predict_batch(self, models, platforms, targets, *, shapes=None):
        from fleetmeter.modeler.features import extract_features

        for data in models:
            self.asked += 1
            features = extract_features(data)
            out = []
            for p in platforms:
                value, lower, upper = self.predict[p](features)
                out.append(Prediction(platform=p, target="latency_ms", value=value, lower=lower, upper=upper,
                                      unit="ms", predictor_version=1, interval_level=self.level))
            yield out


def _interval_fn(predictor) -> Callable[[Any], tuple]:
    def fn(features) -> tuple:
        value, low, high = (float(v[0]) for v in predictor.predict_interval([features]))
        return (value, None if math.isnan(low) else low, None if math.isnan(high) else high)
    return fn


def train_predictors(devices: Sequence[str], train_rows: Sequence[Dict[str, str]], imported, seed: int):
    """Per device: fleetmeter's served predictor and the FLOPs (MACs) line, both on ``train_rows``."""
    from fleetmeter.modeler.train import TrainTask, run_train_task

    ours, flops, info = {}, {}, {}
    for device in devices:
        samples = samples_for(device, train_rows, imported)
        result = run_train_task(TrainTask(device, "latency_ms", tuple(samples), seed, leave_family_out=False))
        ours[device] = _interval_fn(result.predictor)
        macs = np.array([s.features["macs"] for s in samples])
        y = np.array([s.values["latency_ms"] for s in samples])
        a, b = np.polyfit(macs, y, 1)
        flops[device] = (lambda a, b: lambda f: (float(a * f.model["macs"] + b), None, None))(a, b)
        info[device] = {"served_method": result.method, "interval_level": result.predictor.interval_level,
                        "flops_line_ms_per_gmac": float(a * 1e9), "flops_line_ms": float(b)}
        log(f"  {device}: serves {result.method}; FLOPs line {a * 1e9:.3g} ms/GMAC + {b:.3g} ms")
    return ours, flops, info


def table_measure(by_arch: Dict[str, Dict[str, str]]):
    def measure(candidates, budgets) -> List[Dict[str, float]]:
        return [{b.name: float(by_arch[c.key][b.platform]) for b in budgets} for c in candidates]
    return measure


# ------------------------------------------------------------------ NB201: the methods
def _outcome(pick_acc: Optional[float], best_acc: float, verified: int, broke: int, used: int,
             looked_at: int) -> Dict[str, Any]:
    return {"pick_accuracy": pick_acc, "regret": None if pick_acc is None else best_acc - pick_acc,
            "verified": verified, "broke": broke, "measurements_used": used, "measurements_if_all": looked_at,
            "fewer_x": looked_at / used if used else None}


def run_search(space, predictors: LocalPredictors, budgets: Sequence[str], by_arch, best_acc: float,
               args, seed: int) -> Dict[str, Any]:
    t0 = time.monotonic()
    r = search(space, None, budgets, client=predictors, trials=args.trials, verify=args.verify, risk=args.risk,
               objective_table=args.data, objective_column=OBJECTIVE, seed=seed, batch=16, pareto=True,
               measure=table_measure(by_arch))
    limits = {b["platform"]: b["limit"] for b in r["budgets"]}
    truly = [p["objective"] for p in r["points"]
             if all(float(by_arch[p["key"]][d]) <= limit for d, limit in limits.items())]
    broke = sum(not v["passed"] for v in r["verified"])
    out = _outcome(r["pick"]["objective"] if r["pick"] else None, best_acc, len(r["verified"]), broke,
                   r["measurements_used"], r["measurements_if_all"])
    # Where regret comes from: the best network the search looked at that truly fits (exploration) vs the pick.
    out.update(candidates=r["candidates"], predicted_feasible=r["feasible"], seconds=round(time.monotonic() - t0, 1),
               truly_feasible_looked_at=len(truly), regret_of_best_looked_at=best_acc - max(truly) if truly else None,
               pick=r["pick"]["key"] if r["pick"] else None,
               broken=[{"key": v["key"], "predicted": v["predicted"], "measured": v["measured"]}
                       for v in r["verified"] if not v["passed"]])
    return out


def random_search(rows: Sequence[Dict[str, str]], n: int, devices: Sequence[str], limits: Dict[str, float],
                  best_acc: float, rng: random.Random) -> Dict[str, Any]:
    """Measure ``n`` networks drawn at random on every device; the best that fits."""
    drawn = rng.sample(list(rows), n)
    fits = [float(r[OBJECTIVE]) for r in drawn if all(float(r[d]) <= limits[d] for d in devices)]
    used = n * len(devices)
    return _outcome(max(fits) if fits else None, best_acc, 0, 0, used, used)


def nb201_seed(seed: int, ctx: Dict[str, Any], args) -> Dict[str, Any]:
    devices, limits, best_acc = ctx["devices"], ctx["limits"], ctx["best_acc"]
    budgets = [f"{d}:latency_ms<={limits[d]!r}" for d in devices]
    space = CachedNb201Space()
    level = ctx["predictors"][devices[0]]["interval_level"]
    ours = run_search(space, LocalPredictors(ctx["ours"], level), budgets, ctx["by_arch"], best_acc, args, seed)
    log(f"  seed {seed} fleetmeter: regret {ours['regret']}, broke {ours['broke']}/{ours['verified']}, "
        f"{ours['measurements_used']} vs {ours['measurements_if_all']} measurements ({ours['seconds']} s)")
    flops = run_search(space, LocalPredictors(ctx["flops"]), budgets, ctx["by_arch"], best_acc, args, seed)
    log(f"  seed {seed} flops_proxy: regret {flops['regret']}, broke {flops['broke']}/{flops['verified']}")
    rng = random.Random(1000 + seed)
    return {"seed": seed, "fleetmeter": ours, "flops_proxy": flops,
            "random": random_search(ctx["rows"], args.trials, devices, limits, best_acc, rng),
            "random_same_measurements": random_search(
                ctx["rows"], max(1, ours["measurements_used"] // len(devices)), devices, limits, best_acc, rng)}


def summarize(runs: Sequence[Dict[str, Any]], method: str) -> Dict[str, Any]:
    outs = [r[method] for r in runs]
    regrets = [o["regret"] for o in outs if o["regret"] is not None]
    verified = sum(o["verified"] for o in outs)
    used = sum(o["measurements_used"] for o in outs)
    return {"method": method, "runs": len(outs), "no_pick": sum(o["regret"] is None for o in outs),
            "mean_regret": statistics.mean(regrets) if regrets else None,
            "mean_regret_of_best_looked_at": _mean([o.get("regret_of_best_looked_at") for o in outs]),
            "max_regret": max(regrets) if regrets else None,
            "break_share": sum(o["broke"] for o in outs) / verified if verified else None,
            "verified": verified, "measurements_used_mean": used / len(outs),
            "fewer_x": sum(o["measurements_if_all"] for o in outs) / used if used else None}


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def nb201_context(args) -> Dict[str, Any]:
    rows, all_devices = read_table(args.data)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    unknown = sorted(set(devices) - set(all_devices))
    if unknown or len(devices) < 1:
        raise SystemExit(f"unknown device column(s) {unknown}; the table has: {', '.join(all_devices)}")
    usable = [r for r in rows if connected(r["arch_str"])]
    limits = {d: float(np.percentile([float(r[d]) for r in usable], args.percentile)) for d in devices}
    feasible = [r for r in usable if all(float(r[d]) <= limits[d] for d in devices)]
    best = max(feasible, key=lambda r: float(r[OBJECTIVE]))
    rng = random.Random(args.seed)
    train_rows = rng.sample(usable, args.train)
    from fleetmeter.modeler.zoo.fam_nasbench201 import index_of_arch

    _FileCandidate.models_dir = args.models_dir
    build_models([index_of_arch(r["arch_str"]) for r in train_rows], args.models_dir, args.workers)
    ours, flops, info = train_predictors(devices, train_rows, import_samples(devices[0], train_rows,
                                                                              args.models_dir), args.seed)
    log(f"budgets (p{args.percentile:g}): {limits}; {len(feasible)} of {len(usable)} networks fit all; best "
        f"{best[OBJECTIVE]} ({best['arch_str']})")
    return {"rows": rows, "devices": devices, "limits": limits, "best_acc": float(best[OBJECTIVE]),
            "best_arch": best["arch_str"], "n_feasible": len(feasible), "n_usable": len(usable),
            "by_arch": {r["arch_str"]: r for r in rows}, "ours": ours, "flops": flops, "predictors": info}


def run_nb201(args) -> Dict[str, Any]:
    ctx = nb201_context(args)
    runs = [nb201_seed(args.seed + k, ctx, args) for k in range(args.seeds)]
    methods = ("fleetmeter", "flops_proxy", "random", "random_same_measurements")
    summary = [summarize(runs, m) for m in methods]

    def cell(v, fmt):
        return "-" if v is None else format(v, fmt)
    print(table(["METHOD", "MEAN REGRET", "MAX REGRET", "SEEN REGRET", "NO PICK", "BREAK SHARE", "MEASUREMENTS",
                 "FEWER"],
                [(s["method"], cell(s["mean_regret"], ".2f"), cell(s["max_regret"], ".2f"),
                  cell(s["mean_regret_of_best_looked_at"], ".2f"), s["no_pick"],
                  cell(s["break_share"], ".1%"), cell(s["measurements_used_mean"], ".1f"), cell(s["fewer_x"], ".1f"))
                 for s in summary]))
    return {"devices": ctx["devices"], "budgets_ms": ctx["limits"], "percentile": args.percentile,
            "best_feasible_accuracy": ctx["best_acc"], "best_feasible_arch": ctx["best_arch"],
            "n_feasible": ctx["n_feasible"], "n_usable": ctx["n_usable"], "n_train": args.train,
            "training_measurements": args.train * len(ctx["devices"]), "trials": args.trials,
            "verify": args.verify, "risk": args.risk, "predictors": ctx["predictors"], "summary": summary,
            "runs": runs}


# ------------------------------------------------------------------ local platforms
def _local_fixed(args) -> Dict[str, Any]:
    return {"input_size": args.local_input_size, "num_classes": 10}


def _local_measure(client, args):
    """Real sweeps. On a host other work shares, the interference guard flags nearly every window
    ``disturbed`` (kept out of training); without ``--local-guard`` its limits are wide open, and the
    readings carry that host's noise."""
    from fleetmeter.hwsearch import SweepMeasure
    from fleetmeter.v1 import common_pb2

    reading = None if args.local_guard else common_pb2.ReadingSettings(
        sessions=2, max_other_cpu_cores=1e6, max_steal_share=1.0, max_probe_slowdown=1e6, max_speed_wait_s=0.0,
        max_session_spread=1e6)
    settings = common_pb2.BenchSettings(warmup_runs=3, min_runs=10, min_duration_ms=100, max_duration_ms=2000)
    return SweepMeasure(client, settings, say=log, reading=reading)


def _local_train(client, args, platforms: Sequence[str]) -> Dict[str, float]:
    """Measure ``--local-train`` networks of the family on every platform (a real sweep), train latency
    predictors; the budgets: the 30th percentile of each platform's measured latencies."""
    import optuna

    from fleetmeter.hwsearch import ZooSpace, parse_budget

    space = ZooSpace(args.local_family, _local_fixed(args))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed + 99))
    cands = {}
    while len(cands) < args.local_train:
        c = space.suggest(study.ask())
        cands.setdefault(c.key, c)
    loose = [parse_budget(f"{p}:latency_ms<=1e9") for p in platforms]
    measured = _local_measure(client, args)(list(cands.values()), loose)
    results = list(client.train(list(platforms), ["latency_ms"], skip_family_split=True, min_samples=10,
                                timeout_s=900))[-1].results
    log(f"  trained: {[(r.platform, r.method, r.version) for r in results]}")
    return {p: float(np.percentile([m[f"latency_ms@{p}"] for m in measured if m[f"latency_ms@{p}"]],
                                   args.percentile)) for p in platforms}


def _plausible(points: Sequence[Dict[str, Any]], limits: Dict[str, float]) -> List[Dict[str, Any]]:
    """The candidates whose prediction interval reaches below every budget (its lower end, or its value without
    one): the only ones that can fit unless the interval misses; measuring them tells the best that truly fits
    (regret) without measuring every candidate."""
    def low(p: Dict[str, Any], name: str) -> float:
        pred = p["predicted"][name]
        return pred["lower"] if pred["lower"] is not None else pred["value"]
    return [p for p in points if all(low(p, f"latency_ms@{pid}") <= limit for pid, limit in limits.items())]


def _best_that_fits(c, args, space, ranked: Sequence[Dict[str, Any]], budgets: Sequence[str],
                    limits: Dict[str, float], chunk: int = 10) -> tuple:
    """Measure ``ranked`` (best objective first), ``chunk`` at a time, until one fits every budget: ``(its
    objective or None, candidates measured)``."""
    from fleetmeter.hwsearch import parse_budget

    parsed = [parse_budget(b) for b in budgets]
    for start in range(0, len(ranked), chunk):
        batch = ranked[start:start + chunk]
        truth = _local_measure(c, args)([space.candidate(p["params"]) for p in batch], parsed)
        for p, m in zip(batch, truth):
            if all(m[f"latency_ms@{pid}"] is not None and m[f"latency_ms@{pid}"] <= lim for pid, lim in limits.items()):
                return p["objective"], start + len(batch)
    return None, len(ranked)


def _local_searches(c, args, space, budgets: Sequence[str], limits: Dict[str, float]) -> Dict[str, Any]:
    """The search at each of ``--local-risks`` (same predictors), then the candidates any of them found plausible
    (:func:`_plausible`), measured best first until one fits: the truth its regret is measured against."""
    runs = {}
    for risk in args.local_risks:
        t0 = time.monotonic()
        r = search(space, "params", budgets, client=c, trials=args.local_trials, verify=args.local_verify, risk=risk,
                   seed=args.seed, pareto=True, measure=_local_measure(c, args), progress=log)
        runs[risk] = (r, time.monotonic() - t0)
    plausible = {p["key"]: p for r, _ in runs.values() for p in _plausible(r["points"], limits)}
    best, measured = _best_that_fits(c, args, space, sorted(plausible.values(), key=lambda p: -p["objective"]),
                                     budgets, limits)
    out = {"plausible": len(plausible), "plausible_measured": measured, "best_feasible_params": best, "by_risk": {}}
    for risk, (r, seconds) in runs.items():
        pick = r["pick"]["objective"] if r["pick"] else None
        out["by_risk"][str(risk)] = {
            "candidates": r["candidates"], "predicted_feasible": r["feasible"], "pick_params": pick,
            "regret_share": None if pick is None or not best else (best - pick) / best,
            "verified": len(r["verified"]), "broke": sum(not v["passed"] for v in r["verified"]),
            "measurements_used": r["measurements_used"], "measurements_if_all": r["measurements_if_all"],
            "search_seconds": round(seconds, 1), "verified_detail": r["verified"]}
    return out


def run_local(args) -> Dict[str, Any]:
    """Search a zoo family under budgets on the three demo platforms, verified by real sweeps; then measure the
    candidates that could fit (:func:`_plausible`), so the best that truly fits (regret) is known."""
    import secrets

    from fleetmeter.demo import DEMO_AGENTS
    from fleetmeter.hwsearch import ZooSpace
    from fleetmeter.local_fleet import LocalFleet

    with tempfile.TemporaryDirectory(prefix="fm-search-bench-") as root, \
            LocalFleet(root, agent_token=secrets.token_hex(8), api_token=secrets.token_hex(8)) as fleet:
        fleet.start_controller()
        for name, agent_args in DEMO_AGENTS:
            fleet.start_agent(name, *agent_args)
        fleet.wait_agents_connected([name for name, _ in DEMO_AGENTS])
        with fleet.client() as c:
            platforms = sorted({pid for d in c.list_devices() for pid in d.platform_ids})
            limits = _local_train(c, args, platforms)
            budgets = [f"{p}:latency_ms<={limits[p]!r}" for p in platforms]
            summary = _local_searches(c, args, ZooSpace(args.local_family, _local_fixed(args)), budgets, limits)
            predictors = [{"platform": p.platform, "method": p.method, "version": p.version,
                           "interval_coverage": p.interval_coverage if p.HasField("interval_coverage") else None}
                          for p in c.list_predictors()]
    return {"family": args.local_family, "platforms": platforms, "budgets_ms": limits, "predictors": predictors,
            "training_measurements": args.local_train * len(platforms), "trials": args.local_trials,
            "summary": summary}


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, default=None, help="the NB201 table (CSV, .gz accepted)")
    parser.add_argument("--devices", default=DEFAULT_DEVICES, help="three device columns (default: %(default)s)")
    parser.add_argument("--percentile", type=float, default=30.0, help="budget percentile (default: %(default)s)")
    parser.add_argument("--train", type=int, default=200, help="measured networks per device (default: 200)")
    parser.add_argument("--trials", type=int, default=300, help="candidates per search (default: %(default)s)")
    parser.add_argument("--verify", type=int, default=3, help="finalists that must pass (default: %(default)s)")
    parser.add_argument("--risk", type=float, default=0.0, help="the interval rule's risk (default: 0)")
    parser.add_argument("--seeds", type=int, default=5, help="runs of each search (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models-dir", type=Path, default=OUT_DIR / "nb201-models")
    parser.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument("--local", action="store_true", help="also search on local platforms (real sweeps)")
    parser.add_argument("--local-family", default="mobilenetv2")
    parser.add_argument("--local-train", type=int, default=40, help="networks measured to train (default: 40)")
    parser.add_argument("--local-trials", type=int, default=150)
    parser.add_argument("--local-input-size", type=int, default=96,
                        help="the family's input size, fixed (default: %(default)s; smaller nets are timer noise)")
    parser.add_argument("--local-verify", type=int, default=2)
    parser.add_argument("--local-risks", type=float, nargs="+", default=[0.0, 0.5],
                        help="the local search's --risk values, one search each (default: 0 0.5)")
    parser.add_argument("--local-guard", action="store_true",
                        help="keep the interference guard's default limits (a quiet host)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 train, 30 trials, 1 seed")
    add_out_dir_argument(parser)
    args = parser.parse_args(list(argv) or None)
    if args.data is None and not args.local:
        parser.error("give --data (NAS-Bench-201) and/or --local")
    if args.quick:
        args.train, args.trials, args.seeds, args.local_train, args.local_trials = 60, 30, 1, 16, 8
        args.local_input_size = 32
    out: Dict[str, Any] = {"machine": machine_info()}
    if args.data is not None:
        out["nb201"] = run_nb201(args)
    if args.local:
        out["local"] = run_local(args)
    print(json.dumps({k: v.get("summary") for k, v in out.items() if isinstance(v, dict) and "summary" in v},
                     indent=2))
    path = write_json("search", out, args.out_dir)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
