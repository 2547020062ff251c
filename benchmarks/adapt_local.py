"""Transfer between this machine's platforms (issue 13): onnxruntime 1 thread is the source; onnxruntime 2
threads and LiteRT 1 thread are adapted from 20 zoo models each and compared with predictors trained on
>= 1,000 models there.

It reuses a store in which ``benchmarks/accuracy.py`` measured the zoo on the three platforms
(``python benchmarks/accuracy.py --models 1300 --sessions 1 --data DIR``: about 80 min on 2 cores):

1. A controller starts on DIR's store. The source platform is trained through ``PredictorService.Train``
   (``fleetmeter train --platform``) unless its serving version already holds a model-level predictor
   (where kernel-level serves, the best model-level candidate is kept beside it: the transfer's source).
2. Per target, the architectures measured (not ``disturbed``) on both the source and the target split,
   hashed by name, into ``--test`` held-out ones and the pool (the rest: what a predictor may learn from).
3. **The fleet path**, as a user runs it: ``Client.adapt(target, from=[source], budget=B, models=POOL,
   from_readings=True)`` — the controller chooses B of the pool's readings, fits and saves the transferred
   version — then every test model is predicted through ``PredictBatch`` (by sha256) and scored.
4. **In process, ``--seeds`` seeds per budget** (``one_trial`` of ``benchmarks/adapt.py``, not copied):
   the spread selection vs random selection, each map, the additive model on the budget alone
   (``scratch``), and the published 10-shot baseline (``loglinear_measured``: ``log y = a log s + b`` on
   the source's *measured* latencies).
5. **Reference**: every model-level method trained on the whole pool (>= 1,000 models), scored on the same
   test models; the best of them (kernel-level is left out: it needs a profile of every model).

    python benchmarks/accuracy.py --models 1300 --noise-models 50 --sessions 1 --data /tmp/fleetmeter-accuracy
    python benchmarks/adapt_local.py --data /tmp/fleetmeter-accuracy
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_out_dir_argument, machine_info, table, write_json  # noqa: E402
from adapt import SELECTIONS, Table, _mean, one_trial  # noqa: E402
from nb201 import scores  # noqa: E402

import numpy as np  # noqa: E402

from fleetmeter.local_fleet import LocalFleet  # noqa: E402
from fleetmeter.modeler.methods import METHODS, train_predictor  # noqa: E402
from fleetmeter.modeler.transfer import TRANSFER_METHODS  # noqa: E402

SOURCE = "ort-t1"
TARGETS = ("ort-t2", "litert-t1")
BUDGETS = (5, 10, 20, 50)
FLEET_BUDGETS = (10, 20)


def _arch(sample) -> str:
    return Path(sample.model_name).stem


class LocalTable(Table):
    """:class:`adapt.Table` for one source and one target of this machine: the source predictor's ``log``
    predictions of the target's models (their own files: TFLite for LiteRT), and both platforms' measured
    latencies of the same architectures."""

    def __init__(self, source: str, target: str, pairs_pool, pairs_test, predictor) -> None:  # noqa: D107
        self.devices = [source, target]
        self.pool = {target: [t for t, _ in pairs_pool]}
        self.test = {target: [t for t, _ in pairs_test]}
        self.pred_pool = {source: predictor.log_predict(self.pool[target])}
        self.pred_test = {source: predictor.log_predict(self.test[target])}

        def logs(pairs, side):
            return np.log([p[side].values["latency_ms"] for p in pairs])

        self.true_pool = {target: logs(pairs_pool, 0), source: logs(pairs_pool, 1)}
        self.true_test = {target: logs(pairs_test, 0), source: logs(pairs_test, 1)}
        self.keys = [t.model_sha256 for t, _ in pairs_pool]


def split_pairs(target: List[Any], source: List[Any], n_test: int) -> Tuple[List[tuple], List[tuple]]:
    """``(pool, test)`` pairs ``(target sample, source sample)`` of the architectures both measured; the test
    architectures are the ``n_test`` first by a hash of their name (the same for every target); the pool
    is sorted by the target model's sha256 (the order the controller's ``Adapt`` chooses in)."""
    by_arch = {_arch(s): s for s in source}
    pairs = [(t, by_arch[_arch(t)]) for t in target if _arch(t) in by_arch]
    ranked = sorted(pairs, key=lambda p: hashlib.sha256(f"adapt-local/{_arch(p[0])}".encode()).hexdigest())
    test, pool = ranked[:n_test], ranked[n_test:]
    return sorted(pool, key=lambda p: p[0].model_sha256), test


def reference(pool: Sequence[Any], test: Sequence[Any]) -> Dict[str, Any]:
    """Every model-level method trained on the whole pool, scored on ``test``; ``best``: the highest ±10 %."""
    true = np.array([s.values["latency_ms"] for s in test])
    out: Dict[str, Any] = {}
    for method in METHODS:
        model = train_predictor(list(pool), "latency_ms", method=method, calibrate=False)
        out[method] = scores(model.predict(list(test)), true)
    best = max(METHODS, key=lambda m: (out[m]["acc_10"], -out[m]["mape"]))
    return {"methods": out, "best": best, **out[best]}


def fleet_adapt(client: Any, target_pid: str, source_pid: str, pool, test, zoo: Path, budget: int
                ) -> Dict[str, Any]:
    """``Client.adapt`` on the pool's readings, then the test models predicted through the controller."""
    t0 = time.monotonic()
    res = client.adapt(target_pid, from_platforms=[source_pid], budget=budget, targets=["latency_ms"],
                       models=[t.model_sha256 for t, _ in pool], from_readings=True, seed=0)
    result = res["results"][0]
    if result.skipped:
        raise SystemExit(f"adapt {target_pid}: {result.skipped}")
    metrics = json.loads(result.metrics_json)
    adapt_s = time.monotonic() - t0
    t0 = time.monotonic()
    files = [zoo / t.model_name for t, _ in test]
    got = list(client.predict_batch(files, platforms=[target_pid]))
    bad = [str(g) for g in got if isinstance(g, Exception)]
    if bad:
        raise SystemExit(f"predict on {target_pid}: {bad[0]} ({len(bad)} failed)")
    pred = np.array([g[0].value for g in got])
    assert all(g[0].granularity == result.granularity for g in got), "the adapted version does not serve"
    true = np.array([t.values["latency_ms"] for t, _ in test])
    return {"budget": budget, "version": result.version, "granularity": result.granularity,
            "method": result.method, "chosen_because": result.chosen_because,
            "cv": (metrics.get("served") or {}).get("random_split"),
            "models": (metrics.get("transfer") or {}).get("models") or [],
            "adapt_s": round(adapt_s, 2), "predict_s": round(time.monotonic() - t0, 2), **scores(pred, true)}


def ensure_source(client: Any, registry_root: Path, source_pid: str, retrain: bool) -> Dict[str, Any]:
    from fleetmeter.modeler.registry import Registry

    reg = Registry(registry_root)
    loaded = None
    if not retrain and reg.list_versions(source_pid, "latency_ms"):
        loaded = reg.load(source_pid, "latency_ms")
    trained_s = None
    if loaded is None or loaded.model_level is None:
        t0 = time.monotonic()
        for msg in client.train(platforms=[source_pid], targets=["latency_ms"], skip_family_split=True,
                                timeout_s=3 * 3600):
            print(f"  train {SOURCE}: {msg.stage} {msg.done}/{msg.total} {msg.message}", file=sys.stderr, flush=True)
        trained_s = round(time.monotonic() - t0, 1)
        loaded = reg.load(source_pid, "latency_ms")
    return {"predictor": loaded.model_level, "version": loaded.version, "granularity": loaded.manifest["granularity"],
            "model_level_method": loaded.model_level.method, "n_samples": loaded.manifest.get("n_samples"),
            "train_s": trained_s}


def run_target(name: str, tab: LocalTable, budgets: Sequence[int], seeds: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for budget in budgets:
        entry: Dict[str, Any] = {}
        for selection in SELECTIONS:
            trials = [one_trial(tab, name, budget, seed, selection) for seed in range(seeds)]
            methods = ("adapt", "transfer") if selection == "random" else (
                "adapt", "transfer", *TRANSFER_METHODS, "scratch", "loglinear_measured")
            entry[selection] = {m: _mean(trials, m) for m in methods}
            if selection == "spread":
                maps = [t["adapt"]["map"] for t in trials]
                entry["maps_chosen"] = {m: maps.count(m) for m in sorted(set(maps))}
        out[str(budget)] = entry
    return out


def _fmt(s: Dict[str, float]) -> str:
    return f"{100 * s['acc_10']:.1f}/{s['mape']:.3f}/{s['spearman']:.3f}" if s else "-"


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, default=Path("/tmp/fleetmeter-accuracy"),
                        help="the --data of benchmarks/accuracy.py (store, zoo, tokens)")
    parser.add_argument("--test", type=int, default=200, help="held-out architectures per target")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    parser.add_argument("--retrain-source", action="store_true", help="train the source even if it has a version")
    add_out_dir_argument(parser)
    args = parser.parse_args(list(argv) or None)
    from fleetmeter.controller.store import Store
    from fleetmeter.modeler.dataset import load_from_store

    tokens = json.loads((args.data / "tokens.json").read_text())
    controller_dir = args.data / "fleet" / "controller"
    fleet = LocalFleet(args.data / "fleet", agent_token=tokens["agent"], api_token=tokens["api"])
    report: Dict[str, Any] = {"machine": machine_info(), "data": str(args.data), "source": SOURCE, "targets": {}}
    try:
        fleet.start_controller()
        with fleet.client() as c:
            pid_of = {d.name: pid for d in c.list_devices() for pid in d.platform_ids}
            missing = [n for n in (SOURCE, *TARGETS) if n not in pid_of]
            if missing:
                raise SystemExit(f"{args.data}: no readings of {missing}; run benchmarks/accuracy.py first")
            t0 = time.monotonic()
            samples = load_from_store(Store(controller_dir / "fleetmeter.sqlite"), controller_dir / "blobs",
                                      ["latency_ms"], platform_ids=[pid_of[n] for n in (SOURCE, *TARGETS)])
            by_pid: Dict[str, List[Any]] = {}
            for s in samples:
                by_pid.setdefault(s.platform_id, []).append(s)
            print(f"{len(samples)} readings loaded in {time.monotonic() - t0:.0f} s: " + ", ".join(
                f"{n} {len(by_pid.get(pid_of[n], []))}" for n in (SOURCE, *TARGETS)), file=sys.stderr)
            source = ensure_source(c, controller_dir / "predictors", pid_of[SOURCE], args.retrain_source)
            report["source_predictor"] = {k: v for k, v in source.items() if k != "predictor"}
            for name in TARGETS:
                pool, test = split_pairs(by_pid[pid_of[name]], by_pid[pid_of[SOURCE]], args.test)
                tab = LocalTable(SOURCE, name, pool, test, source["predictor"])
                t0 = time.monotonic()
                entry: Dict[str, Any] = {"platform_id": pid_of[name], "pool": len(pool), "n_test": len(test),
                                         "reference": reference([t for t, _ in pool], [t for t, _ in test])}
                entry["fleet"] = [fleet_adapt(c, pid_of[name], pid_of[SOURCE], pool, test, args.data / "zoo", b)
                                  for b in FLEET_BUDGETS if b < len(pool)]
                budgets = [int(b) for b in args.budgets.split(",") if int(b) < len(pool)]
                entry["budgets"] = run_target(name, tab, budgets, args.seeds)
                if FLEET_BUDGETS[-1] < len(pool):  # the same choice and fit as the fleet path's: a cross-check
                    entry["in_process_seed0_at_fleet_budget"] = one_trial(tab, name, FLEET_BUDGETS[-1], 0,
                                                                          "spread")["adapt"]
                entry["seconds"] = round(time.monotonic() - t0, 1)
                report["targets"][name] = entry
                print(f"  {name}: pool {len(pool)}, test {len(test)}, {entry['seconds']} s", file=sys.stderr)
    finally:
        fleet.close()
    rows = []
    for name, e in report["targets"].items():
        for f in e["fleet"]:
            rows.append((name, f["budget"], "fleet adapt (seed 0)", _fmt(f), f"{f['method']}/{f['granularity']}"))
        for budget, b in e["budgets"].items():
            for method in ("adapt", "scratch", "loglinear_measured"):
                rows.append((name, budget, f"{method} (mean of {args.seeds})", _fmt(b["spread"][method]),
                             ",".join(f"{k}:{v}" for k, v in b["maps_chosen"].items()) if method == "adapt" else ""))
            rows.append((name, budget, "adapt, random selection", _fmt(b["random"]["adapt"]), ""))
        rows.append((name, e["pool"], "reference (whole pool)", _fmt(e["reference"]), e["reference"]["best"]))
    print(table(["TARGET", "MODELS", "WHAT", "±10% / MAPE / RHO", "SERVED"], rows))
    path = write_json("adapt_local", report, args.out_dir)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
