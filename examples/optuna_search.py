"""The largest network of a zoo family that fits latency (energy, memory) budgets on three platforms at once.

Each trial proposes one network of the family: Optuna suggests the family's documented hyper-parameters
(``fleetmeter zoo families`` lists them; :func:`fleetmeter.optuna.suggest_architecture`), the network is
emitted as ONNX, and the controller predicts what it costs on every platform
(:class:`fleetmeter.optuna.FleetConstraints`: ``predict_batch``, cached by sha256, one stream for the
trials asked together). The objective is the network's size (parameters, or MACs with ``--objective
macs``), maximized; the budgets are Optuna constraints, so the answer is the largest network predicted to
fit all of them. Nothing is measured: a search of 100 candidates takes seconds of controller time.
``fleetmeter search`` (:mod:`fleetmeter.hwsearch`) is the full loop as a command: NAS-Bench-201 too, the
prediction intervals, verification of the finalists by real sweeps, resuming, the Pareto front.

Run it against a controller that has predictors (``FLEETMETER_CONTROLLER``, ``FLEETMETER_API_TOKEN`` and,
for TLS, ``FLEETMETER_TLS_CA`` / ``_CERT`` / ``_KEY`` say where and how). A ``fleetmeter demo``-like fleet
on this machine, trained once::

    fleetmeter controller --data-dir /tmp/fm &              # prints nothing; listens on 127.0.0.1:50051
    fleetmeter-agent run --runtime onnxruntime --threads 1 --name ort-t1 --data-dir /tmp/fm-a1 &
    fleetmeter-agent run --runtime onnxruntime --threads 2 --name ort-t2 --data-dir /tmp/fm-a2 &
    fleetmeter-agent run --runtime litert --threads 1 --name lite-t1 --data-dir /tmp/fm-a3 &
    fleetmeter zoo build --family mobilenetv2 --count 30 --out /tmp/fm-zoo
    fleetmeter sweep submit --wait --model /tmp/fm-zoo/*.onnx /tmp/fm-zoo/*.tflite
    fleetmeter train

then the search, one command (the three platforms with latency predictors are taken by default)::

    python examples/optuna_search.py --family mobilenetv2 --latency-ms 4 --trials 60

Budgets: ``--latency-ms 4`` for every platform, ``--latency-ms PLATFORM=4`` for one (repeatable; mix
both), and the same for ``--energy-mj`` and ``--memory-bytes``. ``--fix input_size=96`` pins a
hyper-parameter. ``--json`` prints every trial (its parameters, size, predictions, constraint values
and whether it fits) and the best; ``--out best.onnx`` writes the best network. Needs ``pip install
'fleetmeter[optuna,zoo]'``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Dict, List, Optional, Sequence


def _parse_budget(values: Optional[List[str]], flag: str):
    """``None``, one number for every platform, or ``{platform: number}`` (a bare number under the key ``""``)."""
    if not values:
        return None
    out: Dict[str, float] = {}
    for value in values:
        platform, _, number = value.rpartition("=")
        try:
            out[platform] = float(number)
        except ValueError:
            raise SystemExit(f"{flag} {value!r}: expected a number or PLATFORM=NUMBER") from None
    return out


def _resolve_budget(parsed, platforms: Sequence[str]):
    if parsed is None:
        return None
    everywhere = parsed.get("")
    per = {p: v for p, v in parsed.items() if p}
    if everywhere is None:
        return per
    return {p: per.get(p, everywhere) for p in platforms}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="mobilenetv2", help="zoo family (default: %(default)s)")
    p.add_argument("--platform", action="append", metavar="ID",
                   help="platform id or unique prefix; repeatable (default: 3 platforms with a latency predictor)")
    p.add_argument("--latency-ms", action="append", metavar="[PLATFORM=]MS")
    p.add_argument("--energy-mj", action="append", metavar="[PLATFORM=]MJ")
    p.add_argument("--memory-bytes", action="append", metavar="[PLATFORM=]BYTES")
    p.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE", help="pin a hyper-parameter")
    p.add_argument("--objective", choices=("params", "macs"), default="params", help="what 'largest' means")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--batch", type=int, default=4, help="trials asked together (one predict_batch stream)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--use-upper", action="store_true", help="budget the upper end of each prediction's interval")
    p.add_argument("--out", default=None, metavar="FILE.onnx", help="write the best network here")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.trials < 1 or args.batch < 1:
        p.error("--trials and --batch must be at least 1")
    return args


def _default_platforms(client, count: int = 3) -> List[str]:
    platforms = sorted({p.platform for p in client.list_predictors(targets=["latency_ms"])})
    if not platforms:
        raise SystemExit("no latency predictor on this controller: measure and `fleetmeter train` first")
    return platforms[:count]


def _trial_record(trial, budgets) -> Dict[str, Any]:
    return {"number": trial.number, "params": trial.params, "size": trial.value,
            "parameters": trial.user_attrs.get("parameters"), "macs": trial.user_attrs.get("macs"),
            "predicted": {name: trial.user_attrs.get(f"fleetmeter.{name}") for name in budgets.names},
            "constraints": budgets.constraints_func(trial), "feasible": budgets.feasible(trial)}


def search(client, args: argparse.Namespace) -> Dict[str, Any]:
    """Run the study; its report (what ``--json`` prints)."""
    import optuna

    from fleetmeter.modeler.zoo.arch import ArchitectureError
    from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes
    from fleetmeter.optuna import FleetConstraints, suggest_architecture, tpe_sampler
    from fleetmeter.search_cli import parse_fixed

    platforms = args.platform or _default_platforms(client)
    budgets = FleetConstraints(
        client, platforms, use_upper=args.use_upper,
        **{key: _resolve_budget(_parse_budget(getattr(args, key), flag), platforms) for key, flag in
           (("latency_ms", "--latency-ms"), ("energy_mj", "--energy-mj"), ("memory_bytes", "--memory-bytes"))})
    fixed = parse_fixed(args.fix)
    study = optuna.create_study(direction="maximize", sampler=tpe_sampler(budgets, seed=args.seed))
    archs: Dict[int, Any] = {}
    while len(study.trials) < args.trials:
        asked = [study.ask() for _ in range(min(args.batch, args.trials - len(study.trials)))]
        built = []
        for trial in asked:
            try:
                built.append((trial, suggest_architecture(trial, args.family, fixed)))
            except ArchitectureError as exc:  # a combination the family cannot build
                trial.set_user_attr("error", str(exc))
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        budgets.evaluate_batch([t for t, _ in built], [onnx_bytes(build_onnx(a)) for _, a in built])
        for trial, arch in built:
            archs[trial.number] = arch
            trial.set_user_attr("parameters", arch.param_count())
            trial.set_user_attr("macs", arch.mac_count())
            study.tell(trial, arch.param_count() if args.objective == "params" else arch.mac_count())
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    feasible = [t for t in done if budgets.feasible(t)]
    best = max(feasible, key=lambda t: t.value) if feasible else None
    if best is not None and args.out:
        with open(args.out, "wb") as fh:
            fh.write(onnx_bytes(build_onnx(archs[best.number])))
    return {"family": args.family, "objective": args.objective, "platforms": platforms,
            "budgets": [{"platform": b.platform, "target": b.target, "limit": b.limit} for b in budgets.budgets],
            "trials": [_trial_record(t, budgets) for t in done],
            "best": _trial_record(best, budgets) if best is not None else None,
            "model": args.out if best is not None and args.out else None}


def _print_report(report: Dict[str, Any]) -> None:
    names = [f"{b['target']}@{b['platform']}" for b in report["budgets"]]
    print(f"{report['family']}: {len(report['trials'])} trials, "
          f"{sum(t['feasible'] for t in report['trials'])} within every budget")
    for t in report["trials"]:
        predicted = "  ".join(f"{report_value(t['predicted'][n])}" for n in names)
        print(f"  #{t['number']:<3} {'fits' if t['feasible'] else 'over'}  {report['objective']} "
              f"{t['size']:>12,.0f}  {predicted}")
    best = report["best"]
    if best is None:
        print("no candidate fits every budget: loosen a budget, --fix a smaller input_size, or run more trials")
        return
    print(f"largest that fits: trial #{best['number']}, {best['parameters']:,} parameters, {best['macs']:,} MACs")
    for n in names:
        print(f"  {n}: {report_value(best['predicted'][n])}")
    print(f"  hyper-parameters: {json.dumps(best['params'], sort_keys=True)}")
    if report["model"]:
        print(f"  written to {report['model']}")


def report_value(value: Optional[float]) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import optuna

    from fleetmeter import Client
    from fleetmeter.errors import FleetmeterError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with Client() as client:
            report = search(client, args)
    except FleetmeterError as exc:
        print(f"optuna_search: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_report(report)
    return 0 if report["best"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
