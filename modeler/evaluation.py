"""Evaluating the model-level candidates: held-out metrics and what a user should know about them.

:func:`evaluate_split` trains every candidate (:data:`~fleetmeter.modeler.methods.METHODS`) on one
split and scores it on the other (±5 %/±10 % accuracy, MAPE, RMSPE, Spearman, and the measured
coverage of its interval); :func:`evaluate_leave_family_out` does so once per model family held out,
to see how a predictor does on an architecture family it never saw. The splits
(:func:`~fleetmeter.modeler.learners.split_random`,
:func:`~fleetmeter.modeler.learners.split_leave_family_out`) depend only on the samples' identities
and the seed. :func:`standing_warnings` turns a trained predictor's metrics into the warnings stored
with it and shown by ``train``, ``eval`` and ``predict``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from .dataset import Sample
from .learners import INTERVAL_LEVEL, _targets_of, scored_with_interval, split_leave_family_out
from .methods import BASELINES, METHOD_KEYS, METHODS, train_predictor

__all__ = [
    "SMALL_TEST_SET",
    "COVERAGE_TOLERANCE",
    "CEILING_MARGIN",
    "evaluate_split",
    "evaluate_leave_family_out",
    "standing_warnings",
]

#: Fewer held-out models than this and ``train``/``eval``/``predict`` warn about the accuracy's uncertainty.
SMALL_TEST_SET = 30
#: An interval whose held-out coverage is further than this from nominal is flagged.
COVERAGE_TOLERANCE = 0.10
#: A ±10 % accuracy within this of the platform's noise ceiling is bounded by the noise.
CEILING_MARGIN = 0.03


def _split_predictions(train: Sequence[Sample], test: Sequence[Sample], target: str, seed: int
                       ) -> Dict[str, Any]:
    """Every method of :data:`METHODS` trained on ``train`` (calibrated) and asked about ``test``.

    ``{"true", "methods": {method key: {"pred", "low", "high", "interval_log"}}}``.
    """
    parts: Dict[str, Any] = {"true": _targets_of(test, target), "methods": {}}
    for method in METHODS:
        model = train_predictor(train, target, seed=seed, calibrate=True, method=method)
        pred, low, high = model.predict_interval(test)
        parts["methods"][METHOD_KEYS[method]] = {"pred": pred, "low": low, "high": high,
                                                 "interval_log": model.interval_log}
    return parts


def _report(parts: Mapping[str, Any], n_train: int) -> Dict[str, Any]:
    true = parts["true"]
    report: Dict[str, Any] = {"n_train": n_train, "n_test": int(true.size)}
    for key, got in parts["methods"].items():
        report[key] = scored_with_interval({"true": true, "predictor": got["pred"], "low": got["low"],
                                            "high": got["high"]})
        if got.get("interval_log") is not None:
            report[key]["interval_log"] = got["interval_log"]
    return report


def evaluate_split(train: Sequence[Sample], test: Sequence[Sample], target: str, *, seed: int = 0
                   ) -> Dict[str, Any]:
    """Metrics of every method (:data:`METHODS`), trained on ``train``, scored on ``test``.

    ``{"n_train", "n_test", "predictor": {acc_5, acc_10, mape, rmspe,
    spearman, n, interval_coverage, interval_level, interval_log},
    "additive": {...}, "additive_lgbm": {...}, "opcount_lgbm": {...},
    "flops_linear": {...}}``; ``interval_coverage`` is measured on
    ``test``, which none of them saw.
    """
    return _report(_split_predictions(train, test, target, seed), len(train))


def evaluate_leave_family_out(samples: Sequence[Sample], target: str, *, seed: int = 0) -> Dict[str, Any]:
    """Leave-one-family-out: per-family reports and ``pooled`` metrics over all held-out models.

    ``pooled`` scores every model of a named family once, predicted by
    models trained without its family; ``None`` when there are fewer than
    two families.
    """
    folds: Dict[str, Any] = {}
    pooled: Dict[str, Dict[str, List[np.ndarray]]] = {}
    trues: List[np.ndarray] = []
    n_train = 0
    for family, train, test in split_leave_family_out(samples):
        if len(train) < 2:
            continue
        parts = _split_predictions(train, test, target, seed)
        folds[family] = _report(parts, len(train))
        trues.append(np.asarray(parts["true"], dtype=float))
        for key, got in parts["methods"].items():
            for part in ("pred", "low", "high"):
                pooled.setdefault(key, {}).setdefault(part, []).append(np.asarray(got[part], dtype=float))
        n_train = max(n_train, len(train))
    if not folds:
        return {"folds": {}, "pooled": None}
    joined = {"true": np.concatenate(trues),
              "methods": {k: {p: np.concatenate(v) for p, v in parts_.items()} for k, parts_ in pooled.items()}}
    report = _report(joined, n_train)
    del report["n_train"]
    return {"folds": folds, "pooled": report}


def standing_warnings(metrics: Mapping[str, Any]) -> List[str]:
    """What a user should know about a trained predictor's numbers (stored with it; shown by
    ``train``, ``eval`` and ``predict``): a small test set, an interval whose coverage is far from
    nominal, a noise ceiling that bounds the accuracy, a baseline that serves."""
    out: List[str] = []
    served = metrics.get("served") or {}
    rnd = served.get("random_split") or {}
    n = int(rnd.get("n") or 0)
    acc = rnd.get("acc_10")
    if n and n < SMALL_TEST_SET and acc is not None:
        half = 1.96 * math.sqrt(max(acc * (1 - acc), 0.25 / n) / n)
        out.append(f"tested on only {n} held-out models: its ±10 % accuracy {acc:.2f} is known to about "
                   f"±{half:.2f}; measure more models for a firmer number")
    for where, scored in (("held-out models", rnd), ("leave-one-family-out", served.get("leave_family_out") or {})):
        cov, level = scored.get("interval_coverage"), scored.get("interval_level") or INTERVAL_LEVEL
        if cov is not None and abs(cov - level) > COVERAGE_TOLERANCE:
            out.append(f"its {level:.0%} interval covered {cov:.0%} of {where} (nominal {level:.0%}): "
                       f"{'too narrow' if cov < level else 'wider than needed'}")
    ceiling = (metrics.get("noise_ceiling") or {}).get("share_within_10")
    if ceiling is not None and acc is not None and acc >= ceiling - CEILING_MARGIN:
        out.append(f"accuracy is bounded by the platform's noise: repeated measurements agree within 10 % only "
                   f"{ceiling:.0%} of the time and the predictor reaches {acc:.0%}; steadier readings, not a better "
                   "predictor, would raise it")
    if served.get("method") in BASELINES:
        out.append(f"a baseline ({served['method']}) serves: no learned predictor beat it on held-out models")
    return out
