"""``fleetmeter adapt``: a predictor for a new platform from 10–20 measurements, by transfer.

Plans which models to measure (``PredictorService.PlanAdapt``: spread over what the other platforms'
predictors say of them, cheapest first), submits them as a sweep on the new platform, and with
``--wait`` follows it and fits the transferred predictors (``PredictorService.Adapt``). A platform whose
readings were imported adapts from them: ``--from-readings``. Only gRPC and the standard library here.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List

from fleetmeter._cli_common import client_from_args as _client
from fleetmeter._cli_common import end_command
from fleetmeter._cli_common import print_json as _print_json
from fleetmeter.predict_cli import TARGETS, _pct, _trained_dict


def _progress(args, state: Dict[str, Any]):
    """``progress(stage, message)`` for :meth:`~fleetmeter.client.Client.adapt`: lines on stderr (none with
    ``--json``), a progress bar while measuring."""
    from fleetmeter._term import ProgressBar

    def say(stage: str, message: Any) -> None:
        if args.json:
            return
        if stage == "plan":
            skipped = f"; not sources: {'; '.join(message.skipped_sources)}" if message.skipped_sources else ""
            print(f"adapt: measuring {len(message.models)} of {message.candidates} models on {message.platform}, "
                  f"chosen by the predictors of {', '.join(message.from_platforms)}{skipped}", file=sys.stderr)
        elif stage == "measuring":
            bar = state.get("bar") or ProgressBar(message.total, stream=sys.stderr)
            state["bar"] = bar
            bar.update(message.done + message.failed, message.leased, message.failed,
                       final=message.state in ("done", "cancelled") and message.leased == 0)
        elif stage == "training" and message.message:
            print(f"adapt: {message.message}", file=sys.stderr)

    return say


def _row(r: Dict[str, Any]) -> tuple:
    m = r["metrics"]
    served = m.get("served") or {}
    cv = served.get("random_split") or {}
    spearman = cv.get("spearman")
    return (r["platform"], r["target"], f"v{r['version']}" if r["version"] else "-", r["n_samples"],
            served.get("map") or r["method"] or "-", _pct(cv.get("acc_10")), _pct(cv.get("mape")),
            "-" if spearman is None else f"{spearman:.3f}", ", ".join(served.get("from_platforms") or []) or "-",
            r["skipped"] or "")


def cmd_adapt(args) -> int:
    from fleetmeter._term import table

    state: Dict[str, Any] = {}
    with _client(args) as c:
        out = c.adapt(args.platform, args.from_platforms, args.budget, args.models, wait=args.wait,
                      from_readings=args.from_readings, targets=args.target, seed=args.seed,
                      progress=_progress(args, state))
    rows: List[Dict[str, Any]] = [_trained_dict(r) for r in out["results"]]
    if args.json:
        _print_json({**{k: v for k, v in out.items() if k != "results"}, "results": rows})
        return 0
    if out["sweep_id"] and not args.wait:
        print(f"sweep {out['sweep_id']}: measuring {len(out['models'])} models on {out['platform']} \u2014 next, "
              f"when it is done: fleetmeter adapt --platform {out['platform']} --from-readings "
              f"--models {' --models '.join(m[:12] for m in out['models'])}")
        return 0
    print(table(["PLATFORM", "TARGET", "VERSION", "SAMPLES", "MAP", "±10% (LOO)", "MAPE (LOO)", "RHO (LOO)",
                 "FROM", "SKIPPED"], [_row(r) for r in rows]))
    for r in rows:
        for warning in r["warnings"]:
            print(f"warning: {r['platform']} {r['target']}: {warning}", file=sys.stderr)
    return 0 if any(r["version"] for r in rows) else 1


def add_adapt_command(sub: Any) -> None:
    """Add ``adapt`` to the ``fleetmeter`` subparsers."""
    p = sub.add_parser(
        "adapt", help="a predictor for a new platform from 10-20 measurements, by transfer",
        description="Choose the models whose measurements teach a transfer most (spread over what the other "
                    "platforms' predictors say of them; cheapest first), measure them on the new platform as a "
                    "sweep and, with --wait, fit a transferred predictor per target: the source platforms' "
                    "predictions mapped to the new platform's costs, the map chosen by leave-one-out on the "
                    "measured models (its accuracy estimated without extra measurements). Saved in the "
                    "registry as the next version (granularity 'transferred'); a later `fleetmeter train` on "
                    "more readings replaces it. --from-readings: no sweep, the platform's stored readings "
                    "(e.g. imported) are used.")
    p.add_argument("--platform", required=True, metavar="NEW", help="the new platform: an id or a unique prefix")
    p.add_argument("--from", dest="from_platforms", action="append", metavar="P",
                   help="a source platform (id or prefix); repeatable (default: every other platform with a "
                        "model-level predictor)")
    p.add_argument("--budget", type=int, default=None, metavar="N",
                   help="models to measure (default: 20); with --from-readings the N chosen among the stored "
                        "readings (default: all of them)")
    p.add_argument("--models", action="append", metavar="SET",
                   help="candidates: a sha256, a prefix, a name or a name pattern such as 'mobilenet*'; "
                        "repeatable (default: every stored model)")
    p.add_argument("--wait", action="store_true", help="follow the sweep, then fit and save the predictors")
    p.add_argument("--from-readings", action="store_true",
                   help="no sweep: adapt from the platform's readings already stored (`fleetmeter import`)")
    p.add_argument("--target", action="append", choices=TARGETS,
                   help="only this target; repeatable (default: every target with readings and sources)")
    p.add_argument("--seed", type=int, default=0, help="which spread-out set of models (default: %(default)s)")
    end_command(p, _checked(cmd_adapt), "print the plan and the results (with all metrics) as JSON")


def _checked(func):
    def run(args) -> int:
        if args.budget is not None and args.budget < (0 if args.from_readings else 3):
            print(f"fleetmeter adapt: --budget must be at least {0 if args.from_readings else 3}, got "
                  f"{args.budget}", file=sys.stderr)
            return 2
        if args.budget is None:
            args.budget = 0 if args.from_readings else 20
        return func(args)

    return run
