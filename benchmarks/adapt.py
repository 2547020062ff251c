"""Transfer to a new platform from 5–50 measurements, on real-device NAS-Bench-201 latencies (issue 13).

Leave one device out: the target device is "new"; every other device of the table is a source with a
predictor trained on ``--pool`` networks of its own (the additive model, what serves most NB201 devices
in ``benchmarks/nb201.py``). On the target, ``budget`` networks (5, 10, 20, 50) are chosen among the same
pool — by :func:`fleetmeter.modeler.transfer.select_models` (spread over the sources' predictions) or at
random — and "measured" (their table value); each method is then scored on ``--test`` other networks
(±10 % accuracy, MAPE, Spearman), 20 seeds per budget:

* ``adapt`` — what ``fleetmeter adapt`` serves (:func:`~fleetmeter.modeler.transfer.train_transfer`): the
  best transfer map, unless the additive model on the budget alone does better by leave-one-out;
* ``transfer`` — the maps only (:func:`~fleetmeter.modeler.transfer.fit_transfer`: the best of ``stacked``,
  ``mix`` and ``loglinear`` by leave-one-out on the budget); each map alone too;
* ``scratch`` — the additive model trained on the budget alone (no sources);
* ``loglinear_measured`` — the published 10-shot baseline: the source whose *measured* latencies rank
  the budget best, ``log y = a log s + b`` on them, applied to that source's measured latencies;
* ``transfer_measured`` — fleetmeter's map on the sources' measured latencies (HELP's setting: every
  device measured every network), to separate the map from the source predictors' error;
* ``reference`` — the same additive model trained on all ``--pool`` networks of the target.

Network building and features are ``benchmarks/nb201.py``'s (imported, not copied).

    python benchmarks/adapt.py --data ../shared/data/nb201/latency_ms.csv.gz
    python benchmarks/adapt.py --data FILE --targets all --seeds 20
    python benchmarks/adapt.py --data FILE --quick          # smoke: 2 targets, 2 seeds, small pool
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT_DIR, add_out_dir_argument, machine_info, table, write_json  # noqa: E402
from nb201 import build_models, connected, import_samples, read_table, samples_for, scores  # noqa: E402

import numpy as np  # noqa: E402

from fleetmeter.modeler.methods import AdditiveCost, train_predictor  # noqa: E402
from fleetmeter.modeler.metrics import evaluate  # noqa: E402
from fleetmeter.modeler.transfer import (MAP_FITS, MIN_OWN_SAMPLES, TRANSFER_METHODS, fit_loglinear,  # noqa: E402
                                         fit_transfer, own_leave_one_out, scores_better, select_models)
from fleetmeter.modeler.zoo.fam_nasbench201 import index_of_arch  # noqa: E402

BUDGETS = (5, 10, 20, 50)
#: The devices the issue's Spearman target is over: phones, server CPUs, the FPGA and the ASIC.
TARGET_GROUPS = {
    "phone": ("pixel2", "samsung_a50", "samsung_s7", "essential_ph_1"),
    "cpu": ("gold_6226", "gold_6240", "silver_4114", "silver_4210r"),
    "fpga/asic": ("fpga", "eyeriss"),
}
SELECTIONS = ("spread", "random")


def _group(device: str) -> str:
    return next((g for g, ds in TARGET_GROUPS.items() if device in ds), "gpu")


class Table:
    """Every device's source predictions and measured values on the pool and the test networks."""

    def __init__(self, devices: Sequence[str], pool_rows, test_rows, imported: Dict[str, Any]) -> None:
        self.devices = list(devices)
        self.pool: Dict[str, List[Any]] = {}
        self.test: Dict[str, List[Any]] = {}
        self.pred_pool, self.pred_test, self.true_pool, self.true_test = {}, {}, {}, {}
        for d in self.devices:
            self.pool[d] = samples_for(d, pool_rows, imported)
            self.test[d] = samples_for(d, test_rows, imported)
            model = train_predictor(self.pool[d], "latency_ms", method="additive", calibrate=False)
            self.pred_pool[d] = model.log_predict(self.pool[d])
            self.pred_test[d] = model.log_predict(self.test[d])
            self.true_pool[d] = np.log([s.values["latency_ms"] for s in self.pool[d]])
            self.true_test[d] = np.log([s.values["latency_ms"] for s in self.test[d]])
        self.keys = [s.model_sha256 for s in self.pool[self.devices[0]]]

    def matrices(self, sources: Sequence[str], measured: bool):
        pool = self.true_pool if measured else self.pred_pool
        test = self.true_test if measured else self.pred_test
        return np.column_stack([pool[s] for s in sources]), np.column_stack([test[s] for s in sources])


def _chosen(tab: Table, sources: Sequence[str], selection: str, budget: int, seed: int) -> List[int]:
    if selection == "spread":
        return select_models(tab.matrices(sources, False)[0], tab.keys, budget, seed=seed)
    return sorted(random.Random(f"adapt/{seed}").sample(range(len(tab.keys)), budget))


def one_trial(tab: Table, target: str, budget: int, seed: int, selection: str) -> Dict[str, Dict[str, float]]:
    """Scores of every method for one (target, budget, seed, selection)."""
    sources = [d for d in tab.devices if d != target]
    idx = _chosen(tab, sources, selection, budget, seed)
    y = tab.true_pool[target][idx]
    true = np.exp(tab.true_test[target])
    pool_p, test_p = tab.matrices(sources, False)
    out: Dict[str, Dict[str, float]] = {}
    fitted, cv, _, _ = fit_transfer(pool_p[idx], y)
    out["transfer"] = {**scores(np.exp(fitted.apply(test_p)), true), "map": fitted.method}
    train = [tab.pool[target][i] for i in idx]
    scratch = scores(AdditiveCost.fit(train, "latency_ms").predict(tab.test[target]), true)
    # what `fleetmeter adapt` serves (train_transfer): the best map, unless the additive model on the budget
    # alone does better by leave-one-out
    own = evaluate(np.exp(own_leave_one_out(train, "latency_ms")), np.array([s.values["latency_ms"] for s in train]))
    better = len(train) >= MIN_OWN_SAMPLES and scores_better(own, cv[fitted.method])
    out["adapt"] = {**(scratch if better else out["transfer"]), "map": "additive_own" if better else fitted.method}
    if selection == "spread":
        for method in TRANSFER_METHODS:
            out[method] = scores(np.exp(MAP_FITS[method](pool_p[idx], y).apply(test_p)), true)
        pool_m, test_m = tab.matrices(sources, True)
        base = fit_loglinear(pool_m[idx], y)
        out["loglinear_measured"] = scores(np.exp(base.apply(test_m)), true)
        measured_map = fit_transfer(pool_m[idx], y)[0]
        out["transfer_measured"] = scores(np.exp(measured_map.apply(test_m)), true)
        out["scratch"] = scratch
    return out


def _mean(trials: Sequence[Dict[str, Dict[str, float]]], method: str) -> Dict[str, float]:
    got = [t[method] for t in trials if method in t]
    return {k: float(np.mean([g[k] for g in got])) for k in ("acc_10", "mape", "spearman")} if got else {}


def run_target(tab: Table, target: str, budgets: Sequence[int], seeds: int) -> Dict[str, Any]:
    t0 = time.monotonic()
    ref_model = train_predictor(tab.pool[target], "latency_ms", method="additive", calibrate=False)
    reference = scores(ref_model.predict(tab.test[target]), np.exp(tab.true_test[target]))
    out: Dict[str, Any] = {"device": target, "group": _group(target), "reference": reference, "budgets": {}}
    for budget in budgets:
        entry: Dict[str, Any] = {}
        for selection in SELECTIONS:
            trials = [one_trial(tab, target, budget, seed, selection) for seed in range(seeds)]
            methods = ("adapt", "transfer") if selection == "random" else (
                "adapt", "transfer", *TRANSFER_METHODS, "scratch", "loglinear_measured", "transfer_measured")
            entry[selection] = {m: _mean(trials, m) for m in methods}
            if selection == "spread":
                maps = [t["adapt"]["map"] for t in trials]
                entry["maps_chosen"] = {m: maps.count(m) for m in sorted(set(maps))}
        out["budgets"][str(budget)] = entry
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def summarize(results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    named = [r for r in results if r["group"] != "gpu"]
    summary: Dict[str, Any] = {}
    for budget in sorted({int(b) for r in results for b in r["budgets"]}):
        key = str(budget)
        for method in ("adapt", "transfer", "scratch", "loglinear_measured", "transfer_measured"):
            vals = [r["budgets"][key]["spread"][method]["spearman"] for r in named
                    if method in r["budgets"][key]["spread"]]
            if vals:
                summary[f"mean_spearman_{method}_at_{budget}"] = float(np.mean(vals))
        rnd = [r["budgets"][key]["random"]["adapt"]["spearman"] for r in named]
        if rnd:
            summary[f"mean_spearman_adapt_random_selection_at_{budget}"] = float(np.mean(rnd))
    gaps = {r["device"]: r["reference"]["acc_10"] - r["budgets"]["20"]["spread"]["adapt"]["acc_10"]
            for r in results if "20" in r["budgets"]}
    summary["acc_10_gap_to_reference_at_20_points"] = {d: round(100 * g, 1) for d, g in gaps.items()}
    summary["devices_within_5_points_at_20"] = sorted(d for d, g in gaps.items() if g <= 0.05)
    summary["devices_beyond_5_points_at_20"] = sorted(d for d, g in gaps.items() if g > 0.05)
    return summary


def _rows(results: Sequence[Dict[str, Any]]) -> List[tuple]:
    out = []
    for r in results:
        for budget, entry in r["budgets"].items():
            s, rnd = entry["spread"], entry["random"]["adapt"]
            out.append((r["device"], budget, f"{s['adapt']['acc_10']:.3f}", f"{s['adapt']['spearman']:.3f}",
                        f"{s['adapt']['mape']:.3f}", f"{rnd['acc_10']:.3f}/{rnd['spearman']:.3f}",
                        f"{s['transfer']['acc_10']:.3f}/{s['transfer']['spearman']:.3f}",
                        f"{s['scratch']['acc_10']:.3f}/{s['scratch']['spearman']:.3f}",
                        f"{s['loglinear_measured']['acc_10']:.3f}/{s['loglinear_measured']['spearman']:.3f}",
                        f"{s['transfer_measured']['acc_10']:.3f}/{s['transfer_measured']['spearman']:.3f}",
                        f"{r['reference']['acc_10']:.3f}/{r['reference']['spearman']:.3f}",
                        ",".join(f"{k}:{v}" for k, v in entry["maps_chosen"].items())))
    return out


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="the NB201 latency table (CSV, .gz accepted)")
    parser.add_argument("--targets", default="named",
                        help="comma-separated target devices; 'named' (phones, CPUs, FPGA, ASIC) or 'all'")
    parser.add_argument("--pool", type=int, default=900, help="networks each source trains on and the target "
                        "chooses from (default: %(default)s)")
    parser.add_argument("--test", type=int, default=2000, help="held-out networks (0: all the rest)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    parser.add_argument("--models-dir", type=Path, default=OUT_DIR / "nb201-models")
    parser.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 targets, 2 seeds, pool 120, test 60")
    add_out_dir_argument(parser)
    args = parser.parse_args(list(argv) or None)
    if args.quick:
        args.pool, args.test, args.seeds = 120, 60, 2
    rows, devices = read_table(args.data)
    named = [d for g in TARGET_GROUPS.values() for d in g if d in devices]
    targets = devices if args.targets == "all" else named if args.targets == "named" else [
        t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(devices))
    if unknown:
        raise SystemExit(f"unknown target device(s) {unknown}; the table has: {', '.join(devices)}")
    if args.quick:
        targets = targets[:2]
    budgets = [int(b) for b in args.budgets.split(",")]
    usable = [r for r in rows if connected(r["arch_str"])]
    order = list(range(len(usable)))
    random.Random(0).shuffle(order)
    pool_rows = [usable[i] for i in order[:args.pool]]
    rest = [usable[i] for i in order[args.pool:]]
    test_rows = rest if args.test == 0 else rest[:args.test]
    build_models([index_of_arch(r["arch_str"]) for r in pool_rows + test_rows], args.models_dir, args.workers)
    imported = import_samples(devices[0], pool_rows + test_rows, args.models_dir)
    t0 = time.monotonic()
    tab = Table(devices, pool_rows, test_rows, imported)
    print(f"{len(devices)} devices: source predictors on {len(pool_rows)} networks in {time.monotonic() - t0:.0f} s; "
          f"{len(test_rows)} test networks", file=sys.stderr)
    results = []
    for target in targets:
        res = run_target(tab, target, budgets, args.seeds)
        results.append(res)
        ten = res["budgets"].get("10", next(iter(res["budgets"].values())))["spread"]["adapt"]
        print(f"  {target}: rho {ten['spearman']:.3f} ±10% {ten['acc_10']:.3f} at 10 ({res['seconds']} s)",
              file=sys.stderr)
    summary = summarize(results)
    print(table(["TARGET", "BUDGET", "±10%", "RHO", "MAPE", "RANDOM SEL ±10%/RHO", "MAPS ONLY", "SCRATCH",
                 "LOGLIN MEASURED", "TRANSFER MEASURED", "REFERENCE (POOL)", "SERVED"], _rows(results)))
    print(json.dumps(summary, indent=2))
    path = write_json("adapt", {"machine": machine_info(), "data": str(args.data), "pool": len(pool_rows),
                                "n_test": len(test_rows), "seeds": args.seeds, "budgets": budgets,
                                "summary": summary, "targets": results}, args.out_dir)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
