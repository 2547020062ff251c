"""Predictors on real-device NAS-Bench-201 latencies, against the one-hot LightGBM baseline.

For every device column of the table (``--data``, the CSV described in
``shared/data/nb201/README.md``: one row per architecture, an ``arch_str``
and one latency column per device setting):

1. build the NB201 network of each architecture used with fleetmeter's own
   ``nasbench201`` zoo family (ONNX; ``fleetmeter zoo build --family
   nasbench201 --arch-index I`` writes the same files; kept in
   ``--models-dir`` so reruns only extract features);
2. write the device's rows in ``fleetmeter import``'s CSV format and read
   them back with :func:`fleetmeter.modeler.dataset.load_csv` (what
   ``fleetmeter import`` validates with), features from the model files;
3. train with :func:`fleetmeter.modeler.train.run_train_task` — what
   ``fleetmeter train`` runs in the controller for one (platform, target):
   every candidate method and baseline evaluated on an inner held-out split,
   the best trained on all ``--train`` networks — and predict the held-out
   networks with the predictor it chose;
4. the baseline, trained on the same ``--train`` networks: a LightGBM
   regressor on log latency over the 30-column one-hot encoding (6 edges x
   5 ops), as the data's README describes it;
5. the ablation: every candidate method trained on the same ``--train``
   networks and scored on the same held-out ones.

Architectures whose cells disconnect input from output (341 of 15,625) are
left out of training and test, as most NB201 predictors do. ``--test N``
held-out networks are drawn at random from the rest (``0``: all of them).

    python benchmarks/nb201.py --data ../shared/data/nb201/latency_ms.csv.gz
    python benchmarks/nb201.py --data FILE --devices pixel2,gold_6240 --test 0
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

import numpy as np  # noqa: E402

from fleetmeter.modeler.metrics import acc_within, mape, spearman  # noqa: E402
from fleetmeter.modeler.zoo.fam_nasbench201 import OPS, index_of_arch, parse_arch  # noqa: E402

from _nb201_data import build_models, connected, import_samples, read_table, samples_for  # noqa: E402


def one_hot(arch: str) -> List[float]:
    return [1.0 if op == o else 0.0 for op in parse_arch(arch) for o in OPS]


def scores(pred: np.ndarray, true: np.ndarray) -> Dict[str, float]:
    return {"acc_10": acc_within(pred, true, 0.10), "acc_5": acc_within(pred, true, 0.05),
            "mape": mape(pred, true), "spearman": spearman(pred, true)}


def one_hot_baseline(train: Sequence[Dict[str, str]], test: Sequence[Dict[str, str]], device: str,
                     seed: int) -> np.ndarray:
    import lightgbm as lgb

    params = {"objective": "regression", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 10,
              "verbosity": -1, "num_threads": 1, "seed": seed, "deterministic": True, "force_col_wise": True}
    x = np.array([one_hot(r["arch_str"]) for r in train])
    y = np.log([float(r[device]) for r in train])
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=500)
    return np.exp(booster.predict(np.array([one_hot(r["arch_str"]) for r in test])))


def run_device(device: str, train_rows: Sequence[Dict[str, str]], test_rows: Sequence[Dict[str, str]],
               imported: Dict[str, Any], seed: int, ablation: bool) -> Dict[str, Any]:
    from fleetmeter.modeler.methods import METHOD_KEYS, METHODS, train_predictor
    from fleetmeter.modeler.train import TrainTask, run_train_task

    t0 = time.monotonic()
    train = samples_for(device, train_rows, imported)
    test = samples_for(device, test_rows, imported)
    true = np.array([s.values["latency_ms"] for s in test])
    result = run_train_task(TrainTask(device, "latency_ms", tuple(train), seed, leave_family_out=False))
    predictor = result.predictor
    pred, low, high = predictor.predict_interval(test)
    served = scores(pred, true)
    served["interval_coverage"] = float(np.mean((true >= low) & (true <= high))) if not np.isnan(low).any() else None
    baseline = scores(one_hot_baseline(train_rows, test_rows, device, seed), true)
    out: Dict[str, Any] = {
        "device": device, "n_train": len(train), "n_test": len(test), "served_method": result.method,
        "chosen_because": result.chosen_because, "warnings": result.metrics.get("warnings", []),
        "fleetmeter": served, "one_hot_lgbm": baseline,
        "gain_acc_10": served["acc_10"] - baseline["acc_10"],
    }
    if ablation:
        out["methods"] = {}
        for method in METHODS:
            model = train_predictor(train, "latency_ms", seed=seed, calibrate=False, method=method)
            out["methods"][METHOD_KEYS[method]] = scores(model.predict(test), true)
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="the NB201 latency table (CSV, .gz accepted)")
    parser.add_argument("--devices", default="", help="comma-separated device columns (default: every one)")
    parser.add_argument("--train", type=int, default=900, help="training networks (default: %(default)s)")
    parser.add_argument("--test", type=int, default=2000,
                        help="held-out networks drawn from the rest; 0 for all of them (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models-dir", type=Path, default=OUT_DIR / "nb201-models",
                        help="where the built ONNX networks are kept between runs")
    parser.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument("--no-ablation", action="store_true", help="skip the per-method ablation")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 devices, 60 train, 40 test")
    add_out_dir_argument(parser)
    args = parser.parse_args(list(argv) or None)
    if args.quick:
        args.train, args.test = 60, 40
    rows, devices = read_table(args.data)
    if args.devices:
        wanted = [d.strip() for d in args.devices.split(",") if d.strip()]
        unknown = sorted(set(wanted) - set(devices))
        if unknown:
            raise SystemExit(f"unknown device column(s) {unknown}; the table has: {', '.join(devices)}")
        devices = wanted
    elif args.quick:
        devices = devices[:2]
    usable = [r for r in rows if connected(r["arch_str"])]
    rng = random.Random(args.seed)
    order = list(range(len(usable)))
    rng.shuffle(order)
    train_rows = [usable[i] for i in order[:args.train]]
    rest = [usable[i] for i in order[args.train:]]
    test_rows = rest if args.test == 0 else rest[:args.test]
    info = machine_info()
    print(f"{len(rows)} architectures, {len(usable)} connected; {len(train_rows)} train, {len(test_rows)} test, "
          f"{len(devices)} devices", file=sys.stderr)
    build_models([index_of_arch(r["arch_str"]) for r in train_rows + test_rows], args.models_dir, args.workers)
    imported = import_samples(devices[0], train_rows + test_rows, args.models_dir)
    results = []
    for device in devices:
        res = run_device(device, train_rows, test_rows, imported, args.seed, not args.no_ablation)
        results.append(res)
        f, b = res["fleetmeter"], res["one_hot_lgbm"]
        print(f"  {device}: fleetmeter ({res['served_method']}) {f['acc_10']:.3f} / rho {f['spearman']:.3f}; "
              f"one-hot {b['acc_10']:.3f} / {b['spearman']:.3f} ({res['seconds']} s)", file=sys.stderr)
    gains = [r["gain_acc_10"] for r in results]
    hard = [r["gain_acc_10"] for r in results if r["one_hot_lgbm"]["acc_10"] < 0.9]
    summary = {
        "devices": len(results),
        "beats_baseline_on": sum(1 for g in gains if g > 0),
        "ties_or_loses_on": [r["device"] for r in results if r["gain_acc_10"] <= 0],
        "median_gain_acc_10": float(np.median(gains)) if gains else None,
        "median_gain_acc_10_where_baseline_below_0.9": float(np.median(hard)) if hard else None,
        "min_spearman": min(r["fleetmeter"]["spearman"] for r in results) if results else None,
        "devices_with_spearman_below_0.95": [r["device"] for r in results if r["fleetmeter"]["spearman"] < 0.95],
    }
    rows_out = [(r["device"], r["served_method"], f"{r['fleetmeter']['acc_10']:.3f}",
                 f"{r['one_hot_lgbm']['acc_10']:.3f}", f"{r['gain_acc_10']:+.3f}",
                 f"{r['fleetmeter']['spearman']:.3f}", f"{r['one_hot_lgbm']['spearman']:.3f}",
                 "-" if r["fleetmeter"]["interval_coverage"] is None else f"{r['fleetmeter']['interval_coverage']:.2f}")
                for r in results]
    print(table(["DEVICE", "SERVES", "±10% FM", "±10% ONE-HOT", "GAIN", "RHO FM", "RHO ONE-HOT", "COVER"], rows_out))
    print(json.dumps(summary, indent=2))
    path = write_json("nb201", {"machine": info, "data": str(args.data), "n_train": len(train_rows),
                                "n_test": len(test_rows), "seed": args.seed, "summary": summary,
                                "devices": results}, args.out_dir)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
