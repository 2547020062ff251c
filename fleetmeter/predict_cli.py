"""``fleetmeter train``, ``eval``, ``predict`` and ``predictors``: the caller side of ``PredictorService``.

Only gRPC and the standard library here: asking for a prediction needs
neither LightGBM nor the model's runtime on the caller's machine.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from fleetmeter._cli_common import client_from_args as _client
from fleetmeter._cli_common import end_command, noise_ceiling_dict
from fleetmeter._cli_common import print_json as _print_json

#: = fleetmeter.modeler.dataset.TARGETS (a test keeps them equal; not imported: the modeler pulls in numpy).
TARGETS = ("latency_ms", "energy_mj", "peak_rss_bytes")
#: The methods ``fleetmeter eval`` lists side by side, in order, with their labels.
METHODS = (("predictor", "LightGBM on graph features (lgbm)"),
           ("additive", "additive per-node cost (additive)"),
           ("additive_lgbm", "additive + LightGBM (additive_lgbm)"), ("kernel", "kernel-level (nn-Meter)"),
           ("opcount_lgbm", "baseline: op-count LightGBM"), ("flops_linear", "baseline: FLOPs linear"))
#: Method name (what serves, ``PredictorInfo.method``) -> report key in the metrics.
METHOD_KEYS = {"lgbm": "predictor", "additive": "additive", "additive_lgbm": "additive_lgbm", "kernel": "kernel",
               "opcount_lgbm": "opcount_lgbm", "flops_linear": "flops_linear"}
SPLITS = {"random": "random_split", "family": "leave_family_out"}
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100.0 * value:.1f}%"


def _num(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ------------------------------------------------------------------ train
def _trained_dict(r) -> Dict[str, Any]:
    metrics = json.loads(r.metrics_json or "{}")
    return {"platform": r.platform, "target": r.target, "version": r.version or None, "n_samples": r.n_samples,
            "skipped": r.skipped or None, "granularity": r.granularity or None,
            "method": r.method or (metrics.get("served") or {}).get("method"),
            "chosen_because": r.chosen_because or None, "warnings": list(r.warnings) or metrics.get("warnings") or [],
            "metrics": metrics}


def cmd_train(args) -> int:
    from fleetmeter._term import ProgressBar, table

    bar = None
    results: List[Any] = []
    with _client(args) as c:
        for msg in c.train(args.platform, args.target, seed=args.seed, skip_family_split=args.no_family_split,
                           min_samples=args.min_samples):
            if msg.stage == "loading" and msg.message and not args.json:
                print(f"train: {msg.message}", file=sys.stderr)
            elif msg.stage == "training":
                if bar is None and msg.total:
                    bar = ProgressBar(msg.total, stream=sys.stderr, min_interval_s=10.0)
                if bar is not None:
                    bar.update(msg.done, running=min(1, msg.total - msg.done), final=msg.done == msg.total)
            elif msg.stage == "done":
                results = list(msg.results)
                if not args.json:
                    print(f"train: {msg.message}", file=sys.stderr)
    rows = [_trained_dict(r) for r in results]
    if args.json:
        _print_json(rows)
        return 0
    out = []
    for r in rows:
        m = r["metrics"]
        served = m.get("served") or {}
        rnd = served.get("random_split") or {}
        fam = served.get("leave_family_out") or {}
        out.append((r["platform"], r["target"], f"v{r['version']}" if r["version"] else "-", r["n_samples"],
                    r["method"] or r["granularity"] or "-", _pct(rnd.get("acc_10")), _pct(fam.get("acc_10")),
                    _pct((m.get("noise_ceiling") or {}).get("share_within_10")), r["skipped"] or ""))
    print(table(["PLATFORM", "TARGET", "VERSION", "SAMPLES", "SERVES", "±10% RANDOM", "±10% FAMILY",
                 "NOISE ±10%", "SKIPPED"], out))
    for r in rows:
        for warning in r["warnings"]:
            print(f"warning: {r['platform']} {r['target']}: {warning}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------ eval
def eval_rows(predictors, split: str, platforms=None) -> List[Dict[str, Any]]:
    """One entry per predictor: the split's metrics for each method, from its manifest.

    ``noise_ceiling`` is the one recorded at training (from the repeats in the training data:
    ``share_within_5``, ``share_within_10``, ``n_models``, ``n_pairs``); ``noise_ceiling_live`` is the
    platform's ceiling now (``{within_5, within_10, pairs}`` from ListPlatforms: every pair of readings of
    the same model, repeat samples included), or ``None`` when ``platforms`` (Platform messages) lacks it."""

    live = {p.platform_id: noise_ceiling_dict(p) for p in platforms or ()}
    key = SPLITS[split]
    out = []
    for p in predictors:
        metrics = json.loads(p.metrics_json or "{}")
        section = metrics.get(key) or {}
        if key == "leave_family_out":
            section = section.get("pooled") or {}
        methods = {name: section[name] for name, _ in METHODS if isinstance(section.get(name), dict)}
        served = metrics.get("served") or {}
        out.append({"platform": p.platform, "target": p.target, "version": p.version,
                    "granularity": p.granularity or "model", "method": served.get("method"),
                    "chosen_because": p.chosen_because or None, "warnings": metrics.get("warnings") or [],
                    "split": split, "n_train": section.get("n_train"), "n_test": section.get("n_test"),
                    "noise_ceiling": metrics.get("noise_ceiling"), "noise_ceiling_live": live.get(p.platform),
                    "methods": methods,
                    "interval_coverage": p.interval_coverage if p.HasField("interval_coverage") else None,
                    "interval_level": p.interval_level})
    return out


def cmd_eval(args) -> int:
    from fleetmeter._term import table

    with _client(args) as c:
        predictors = c.list_predictors(args.platform, args.target)
        platforms = c.list_platforms() if predictors else []
    if not predictors:
        print("fleetmeter: no predictors trained yet: run `fleetmeter train` first", file=sys.stderr)
        return 1
    rows = eval_rows(predictors, args.split, platforms)
    if args.json:
        _print_json(rows)
        return 0
    title = {"random": "random 80/20 split", "family": "leave-one-family-out (pooled over held-out families)"}
    print(f"held-out evaluation: {title[args.split]}")
    for r in rows:
        noise = r["noise_ceiling"] or {}
        live = r["noise_ceiling_live"] or {}
        print(f"\n{r['platform']}  {r['target']}  v{r['version']}  serves: {r['method'] or r['granularity']}"
              + (f" ({r['chosen_because']})" if r["chosen_because"] else "")
              + f"\n  train {r['n_train'] if r['n_train'] is not None else '-'}, "
                f"test {r['n_test'] if r['n_test'] is not None else '-'}"
              + f"\n  noise ceiling at training: ±5% {_pct(noise.get('share_within_5'))}, ±10% "
                f"{_pct(noise.get('share_within_10'))} ({noise.get('n_models') or 0} models measured twice or more)"
              + f"\n  noise ceiling now (latency, live): ±5% {_pct(live.get('within_5'))}, ±10% "
                f"{_pct(live.get('within_10'))} ({live.get('pairs') or 0} repeat pairs)")
        if not r["methods"]:
            print("  (no evaluation recorded for this split)")
            continue
        serving = METHOD_KEYS.get(r["method"] or "")
        lines = [(("* " if name == serving else "  ") + label, _pct(m.get("acc_5")), _pct(m.get("acc_10")),
                  _pct(m.get("mape")), _pct(m.get("rmspe")), _num(m.get("spearman")),
                  _pct(m.get("interval_coverage")) if "interval_coverage" in m else "")
                 for name, label in METHODS for m in [r["methods"].get(name)] if m]
        print("  " + table(["METHOD (* serves)", "±5%", "±10%", "MAPE", "RMSPE", "SPEARMAN", "INTERVAL COVER"],
                           lines).replace("\n", "\n  "))
        for warning in r["warnings"]:
            print(f"  warning: {warning}")
    return 0


# ------------------------------------------------------------------ predict
def cmd_predict(args) -> int:
    from fleetmeter._term import table

    shapes = dict(args.shape)
    with _client(args) as c:
        if not Path(args.model).exists() and _SHA256.match(args.model):
            predictions = c.predict_sha256(args.model, args.platform, args.target or ["latency_ms"], shapes=shapes)
        else:
            predictions = c.predict(args.model, args.platform, args.target or ["latency_ms"], shapes=shapes)
    if args.json:
        _print_json([p.to_dict() for p in predictions])
        return 0
    for warning in dict.fromkeys(w for p in predictions for w in p.warnings):
        print(f"warning: {warning}", file=sys.stderr)

    def fmt(v: Optional[float]) -> str:
        if v is None:
            return "-"
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.4e}"

    print(table(["PLATFORM", "TARGET", "VALUE", "UNIT", "INTERVAL", "VERSION", "METHOD"], [
        (p.platform, p.target, fmt(p.value), p.unit,
         f"{fmt(p.lower)} – {fmt(p.upper)} ({100 * p.interval_level:.0f}%)" if p.lower is not None else "-",
         f"v{p.predictor_version}", p.method or p.granularity) for p in predictions]))
    return 0


# ------------------------------------------------------------------ predictors
def _info_dict(p) -> Dict[str, Any]:
    return {"platform": p.platform, "target": p.target, "version": p.version, "versions": list(p.versions),
            "pinned": p.pinned or None, "granularity": p.granularity, "method": p.method or None,
            "chosen_because": p.chosen_because or None, "warnings": list(p.warnings),
            "n_samples": p.n_samples, "feature_schema_version": p.feature_schema_version,
            "training_fingerprint": p.training_fingerprint, "created_unix": p.created_unix, "unit": p.unit,
            "interval_level": p.interval_level,
            "interval_coverage": p.interval_coverage if p.HasField("interval_coverage") else None,
            "metrics": json.loads(p.metrics_json or "{}")}


def cmd_predictors_list(args) -> int:
    from fleetmeter._term import table

    with _client(args) as c:
        predictors = c.list_predictors(args.platform, args.target)
    if args.json:
        _print_json([_info_dict(p) for p in predictors])
        return 0
    print(table(["PLATFORM", "TARGET", "SERVING", "VERSIONS", "PINNED", "METHOD", "SAMPLES", "INTERVAL COVER"], [
        (p.platform, p.target, f"v{p.version}", ",".join(map(str, p.versions)), f"v{p.pinned}" if p.pinned else "-",
         p.method or p.granularity, p.n_samples, _pct(p.interval_coverage) if p.HasField("interval_coverage") else "-")
        for p in predictors]))
    for p in predictors:
        for warning in p.warnings:
            print(f"warning: {p.platform} {p.target}: {warning}", file=sys.stderr)
    return 0


def cmd_predictors_pin(args) -> int:
    version = 0 if args.predictors_command == "unpin" else args.version
    with _client(args) as c:
        info = c.pin_predictor(args.platform, args.target, version)
    if args.json:
        _print_json(_info_dict(info))
    else:
        print(f"{info.platform} {info.target}: v{info.version} serves"
              + (" (pinned)" if info.pinned else " (latest; not pinned)"))
    return 0


# ------------------------------------------------------------------ parser
def add_predictor_commands(sub: Any) -> None:
    """Add ``train``, ``eval``, ``predict`` and ``predictors`` to the ``fleetmeter`` subparsers."""
    from fleetmeter.agent.cli import parse_shape  # --shape as `fleetmeter-agent bench` takes it (stdlib only)

    p = sub.add_parser(
        "train", help="train one predictor per (platform, target) from the measurements",
        description="Train LightGBM predictors on the controller, one per (platform, target), as Ray tasks: "
                    "each is evaluated on a random 80/20 split and leave-one-family-out next to two baselines "
                    "(FLOPs-only linear, op-count LightGBM), then trained on all data and saved as the next "
                    "version (earlier versions are kept). Needs at least --min-samples measured models per "
                    "platform and target.")
    p.add_argument("--platform", action="append", metavar="P",
                   help="only this platform id (or unique prefix); repeatable (default: all)")
    p.add_argument("--target", action="append", choices=TARGETS, help="only this target; repeatable (default: all)")
    p.add_argument("--seed", type=int, default=0, help="split and LightGBM seed (default: %(default)s)")
    p.add_argument("--no-family-split", action="store_true",
                   help="skip the leave-one-family-out evaluation (faster)")
    p.add_argument("--min-samples", type=int, default=0,
                   help="fewest measured models to train a (platform, target) (default: 10)")
    end_command(p, cmd_train, "print the results (with all metrics) as JSON")

    p = sub.add_parser(
        "eval", help="held-out accuracy of the serving predictors and the baselines, side by side",
        description="Per platform and target: ±5% and ±10% accuracy (share of held-out models within that "
                    "relative error), MAPE, RMSPE and Spearman rank correlation of the serving predictor, the "
                    "kernel-level predictor where one was evaluated, and both baselines, on the split chosen, "
                    "next to the platform's measurement noise ceiling: the one recorded at training (from the "
                    "repeats in the training data) and the live one (latency, every repeat pair the platform has "
                    "now). The accuracy numbers are those recorded when the predictor was trained (on models it "
                    "did not see).")
    p.add_argument("--split", choices=tuple(SPLITS), default="random",
                   help="random 80/20, or leave-one-family-out (default: %(default)s)")
    p.add_argument("--platform", action="append", metavar="P", help="only this platform (prefix); repeatable")
    p.add_argument("--target", action="append", choices=TARGETS, help="only this target; repeatable")
    end_command(p, cmd_eval)

    p = sub.add_parser(
        "predict", help="predict what a model costs on each platform, without running it",
        description="Predict latency (and energy, peak memory with --target) of MODEL (an .onnx or .tflite "
                    "file, or the sha256 of an uploaded model) on every platform with a predictor, or the "
                    "--platform ones, at the input sizes --shape gives (others as the file declares them, "
                    "dynamic dimensions 1, with a warning). Only the model's sha256 is sent when the controller "
                    "has it already; else its graph without the weights (ONNX) or its bytes (TFLite). Prints a "
                    "table; --json prints a list of {platform, target, value, lower, upper, unit, "
                    "predictor_version}.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--shape", type=parse_shape, action="append", default=[], metavar="NAME=DIMS",
                   help="predict at this input shape, e.g. images=1x3x640x640 (the model's own layout, as "
                        "`bench --shape` and a sweep's inputs take it; repeatable)")
    p.add_argument("--platform", action="append", metavar="P", help="platform id (or unique prefix); repeatable")
    p.add_argument("--target", action="append", choices=TARGETS,
                   help="latency_ms (default), energy_mj or peak_rss_bytes; repeatable")
    end_command(p, cmd_predict)

    predictors = sub.add_parser("predictors", help="list trained predictors; pin a version").add_subparsers(
        dest="predictors_command", required=True, metavar="SUBCOMMAND")
    p = predictors.add_parser("list", help="serving version, all versions, pin and metrics per predictor")
    p.add_argument("--platform", action="append", metavar="P")
    p.add_argument("--target", action="append", choices=TARGETS)
    end_command(p, cmd_predictors_list, None)
    for verb, help_ in (("pin", "serve this version of (platform, target) until unpinned"),
                        ("unpin", "serve the latest version of (platform, target) again")):
        p = predictors.add_parser(verb, help=help_, description=help_)
        p.add_argument("platform")
        p.add_argument("target", choices=TARGETS)
        if verb == "pin":
            p.add_argument("version", type=int)
        end_command(p, cmd_predictors_pin, None)
