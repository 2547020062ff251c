"""``fleetmeter search``: the best network of a space within budgets on several platforms (:mod:`fleetmeter.hwsearch`).

::

    fleetmeter search --space mobilenetv2 --objective params --fix input_size=32 \\
        --budget ort-t1:latency_ms<=3 --budget lite-t1:latency_ms<=4 --trials 60 --verify 2
    fleetmeter search --space nasbench201 --objective-table nb201.csv --objective-column accuracy_cifar100 \\
        --budget pixel:latency_ms<=12 --trials 200 --storage search.db --pareto --json > result.json
    fleetmeter report --search result.json --out report.html

Progress goes to stderr; ``--json`` prints the result (:func:`fleetmeter.hwsearch.search`'s dict) on stdout.
Exit status 0 when a candidate fits (and, with ``--verify``, one passed when measured), 1 otherwise.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

__all__ = ["add_search_command", "cmd_search", "parse_fixed"]


def parse_fixed(values: List[str]) -> Dict[str, Any]:
    """``--fix NAME=VALUE`` flags as ``{name: value}`` (the value read as JSON where it is JSON, else a string)."""
    from fleetmeter.errors import InvalidArgument

    out: Dict[str, Any] = {}
    for value in values:
        name, sep, raw = value.partition("=")
        if not sep:
            raise InvalidArgument(f"--fix {value!r}: expected NAME=VALUE")
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw
    return out


def cmd_search(args) -> int:
    from fleetmeter._cli_common import client_from_args
    from fleetmeter.hwsearch import say_to_stderr, search

    with client_from_args(args) as client:
        result = search(args.space, args.objective, args.budget, client=client, trials=args.trials,
                        verify=args.verify, risk=args.risk, direction=args.direction,
                        objective_table=args.objective_table, objective_column=args.objective_column,
                        storage=args.storage, study_name=args.study_name, seed=args.seed, batch=args.batch,
                        pareto=args.pareto, fixed=parse_fixed(args.fix), progress=say_to_stderr)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        _print_result(result)
    ok = result["pick"] is not None if args.verify else result["best"] is not None
    return 0 if ok else 1


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4g}"


def _print_result(r: Dict[str, Any]) -> None:
    from fleetmeter._term import table

    names = [b["name"] for b in r["budgets"]]
    print(f"{r['space']}: {r['trials']} trials, {r['candidates']} networks predicted, {r['feasible']} within every "
          f"budget (risk {r['risk']:g}); {r['objective']} {r['direction']}d")
    if r["best"] is None:
        print("no candidate fits every budget: loosen a budget, raise --risk, or run more --trials")
        return
    rows = [[c["key"], _num(c["objective"]), *(_num(c["compared"][n]) for n in names)] for c in r["ranked"][:10]]
    print(table(["CANDIDATE", r["objective"].upper(), *names], rows))
    for v in r["verified"]:
        cells = "  ".join(f"{n}: predicted {_num(v['predicted'][n]['value'])} measured {_num(v['measured'].get(n))}"
                          f" {'ok' if v['held'][n] else 'OVER'}" for n in names)
        print(f"verified {v['key']}: {'passed' if v['passed'] else 'BROKE A BUDGET'}  {cells}")
    if r["verify"]:
        pick = r["pick"]
        print(f"pick: {pick['key']} ({r['objective']} {_num(pick['objective'])}); {r['measurements_used']} device "
              f"measurement(s) instead of {r['measurements_if_all']}" if pick else
              "no verified candidate held every budget when measured")
    for name, front in (r.get("pareto") or {}).items():
        print(f"pareto {name}: " + ", ".join(f"{_num(p['compared'][name])} -> {_num(p['objective'])}" for p in front))


def add_search_command(sub: Any) -> None:
    """Add ``search`` to the ``fleetmeter`` subparsers."""
    from fleetmeter._cli_common import end_command

    p = sub.add_parser(
        "search", help="the best network of a space within budgets on several platforms (predicted, then verified)",
        description="Search a space of networks (a zoo family, or nasbench201: 6 edges x 5 ops) for the best "
                    "objective within budgets on one or more platforms, asking the predictors (batched), then "
                    "measure the top --verify candidates on the fleet (a real sweep). A candidate is feasible when "
                    "its prediction interval is inside every budget (--risk: how much of it may cross). Needs "
                    "pip install 'fleetmeter[optuna,zoo]'.")
    p.add_argument("--space", required=True, metavar="SPACE", help="a zoo family (fleetmeter zoo families) or "
                                                                   "nasbench201")
    p.add_argument("--objective", default=None, metavar="OBJ",
                   help="params or macs (both need no training), or the --objective-column of --objective-table")
    p.add_argument("--objective-table", default=None, metavar="FILE",
                   help="CSV (.gz accepted) with arch_str and the objective's column, one row per NB201 network")
    p.add_argument("--objective-column", default=None, metavar="COL", help="e.g. accuracy_cifar100")
    p.add_argument("--direction", choices=("maximize", "minimize"), default="maximize",
                   help="of the objective (default: %(default)s)")
    p.add_argument("--budget", action="append", required=True, metavar="PLATFORM:TARGET<=VALUE",
                   help="e.g. rpi5:latency_ms<=20 (targets: latency_ms, energy_mj, peak_rss_bytes); repeatable")
    p.add_argument("--trials", type=int, default=100, help="candidates proposed, in all (default: %(default)s)")
    p.add_argument("--verify", type=int, default=0, metavar="K",
                   help="measure the best until K pass every budget (default: 0, measure nothing)")
    p.add_argument("--risk", type=float, default=0.0, metavar="R",
                   help="share (0..1) of a prediction's interval that may cross a budget (default: 0, the "
                        "interval's upper end must fit)")
    p.add_argument("--pareto", action="store_true", help="also return the front of objective vs each budget's cost")
    p.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE", help="pin a hyper-parameter")
    p.add_argument("--storage", default=None, metavar="FILE",
                   help="keep the study in this SQLite file; run again to resume (default: in memory)")
    p.add_argument("--study-name", default="fleetmeter-search", help="the study's name in --storage")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default: %(default)s)")
    p.add_argument("--batch", type=int, default=8, help="candidates predicted together (default: %(default)s)")
    end_command(p, cmd_search, "print the result as JSON on stdout")
