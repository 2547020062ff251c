"""Accuracy metrics for cost predictors, and the measurement noise ceiling.

Every error here is *relative to the measurement* and returned as a
**fraction**, not a percentage (``0.034`` means 3.4 %):

* ``acc_within(pred, true, tol)``: the share of models whose prediction is
  within ``tol`` of the measurement, ``|pred - true| / true <= tol``
  (nn-Meter's ±5 % / ±10 % accuracy is ``tol=0.05`` / ``tol=0.10``);
* ``mape``: mean of ``|pred - true| / true``;
* ``rmspe``: ``sqrt(mean(((pred - true) / true) ** 2))``;
* ``spearman``: Spearman's rank correlation (Pearson's correlation of the
  ranks, tied values sharing their mean rank), so it says whether the
  predictor orders models correctly even where it is off in scale.

:func:`evaluate` gathers them into a JSON-ready dict; a value that is not
defined (no models, a constant prediction for ``spearman``) is ``None``
there, and ``nan`` from the single functions.

:func:`noise_ceiling` says how well the *measurements themselves* agree
with each other, the ceiling no predictor can beat on that platform: see its
docstring for the definition.

Inputs are anything ``numpy.asarray`` takes; measurements must be positive
(a cost of zero has no relative error) or ``ValueError`` is raised.
"""

from __future__ import annotations

import math
from typing import Dict, Hashable, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["acc_within", "mape", "rmspe", "spearman", "evaluate", "noise_ceiling", "ACCURACY_TOLERANCES"]

#: The tolerances :func:`evaluate` and :func:`noise_ceiling` report (``acc_5``, ``acc_10``).
ACCURACY_TOLERANCES: Tuple[Tuple[str, float], ...] = (("5", 0.05), ("10", 0.10))


def _pair(pred: Iterable[float], true: Iterable[float]) -> Tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=float).reshape(-1)
    t = np.asarray(true, dtype=float).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"pred and true differ in length: {p.size} != {t.size}")
    if t.size and not np.all(t > 0):
        raise ValueError("measurements must be positive for relative errors")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))):
        raise ValueError("pred and true must be finite")
    return p, t


def _relative_errors(pred: Iterable[float], true: Iterable[float]) -> np.ndarray:
    p, t = _pair(pred, true)
    return (p - t) / t


def acc_within(pred: Iterable[float], true: Iterable[float], tol: float) -> float:
    """Share of models with ``|pred - true| / true <= tol`` (``nan`` when empty)."""
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    err = np.abs(_relative_errors(pred, true))
    # A hair of slack so that a prediction exactly on the boundary counts
    # however the float arithmetic rounds (1.1 vs 1.0 is 0.10000000000000009).
    return float(np.mean(err <= tol + 1e-12)) if err.size else math.nan


def mape(pred: Iterable[float], true: Iterable[float]) -> float:
    """Mean absolute percentage error, as a fraction."""
    err = np.abs(_relative_errors(pred, true))
    return float(np.mean(err)) if err.size else math.nan


def rmspe(pred: Iterable[float], true: Iterable[float]) -> float:
    """Root mean squared percentage error, as a fraction."""
    err = _relative_errors(pred, true)
    return float(np.sqrt(np.mean(err ** 2))) if err.size else math.nan


def spearman(pred: Iterable[float], true: Iterable[float]) -> float:
    """Spearman's rank correlation (``scipy.stats.spearmanr``: ties share their mean rank); ``nan`` with
    < 2 models or a constant side."""
    p = np.asarray(pred, dtype=float).reshape(-1)
    t = np.asarray(true, dtype=float).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"pred and true differ in length: {p.size} != {t.size}")
    if p.size < 2 or np.all(p == p[0]) or np.all(t == t[0]):
        return math.nan  # undefined (scipy would say so with a warning)
    from scipy.stats import spearmanr  # lazily: scipy.stats takes a while to import

    return float(spearmanr(p, t).statistic)


def _json_float(value: float) -> Optional[float]:
    return None if value is None or math.isnan(value) else float(value)


def evaluate(pred: Sequence[float], true: Sequence[float]) -> Dict[str, Optional[float]]:
    """``{acc_5, acc_10, mape, rmspe, spearman, n}`` (fractions; ``None`` where undefined)."""
    p, t = _pair(pred, true)
    out: Dict[str, Optional[float]] = {}
    for name, tol in ACCURACY_TOLERANCES:
        out[f"acc_{name}"] = _json_float(acc_within(p, t, tol))
    out["mape"] = _json_float(mape(p, t))
    out["rmspe"] = _json_float(rmspe(p, t))
    out["spearman"] = _json_float(spearman(p, t))
    out["n"] = int(t.size)
    return out


def noise_ceiling(groups: Mapping[Hashable, Sequence[float]]) -> Dict[str, Optional[float]]:
    """How often repeated measurements of the same model agree within 5 % and 10 %.

    ``groups`` maps a model (any key) to its repeated medians on one
    platform (one per measurement run). For every pair of repeats ``(a, b)``
    of a model the relative difference is ``|a - b| / ((a + b) / 2)``: the
    distance relative to the pair's mean, symmetric in ``a`` and ``b`` since
    neither run is the truth. A model's agreement at ``tol`` is the share of
    its pairs within ``tol``; ``share_within_5`` / ``share_within_10`` are the
    mean over models (each model weighs the same, however often it was
    measured), comparable to ``acc_5`` / ``acc_10`` of a predictor: a
    predictor can hardly be within 5 % of a measurement more often than two
    measurements are within 5 % of each other.

    Models with fewer than two repeats say nothing and are skipped; with none
    left, both shares are ``None``. Also returns ``n_models`` and ``n_pairs``.
    """
    per_model: Dict[str, list] = {name: [] for name, _ in ACCURACY_TOLERANCES}
    n_pairs = 0
    for values in groups.values():
        v = np.asarray(values, dtype=float).reshape(-1)
        if v.size < 2:
            continue
        if not np.all(v > 0) or not np.all(np.isfinite(v)):
            raise ValueError("repeated measurements must be positive and finite")
        i, j = np.triu_indices(v.size, k=1)
        rel = np.abs(v[i] - v[j]) / ((v[i] + v[j]) / 2.0)
        n_pairs += rel.size
        for name, tol in ACCURACY_TOLERANCES:
            per_model[name].append(float(np.mean(rel <= tol + 1e-12)))
    n_models = len(per_model[ACCURACY_TOLERANCES[0][0]])
    out: Dict[str, Optional[float]] = {
        f"share_within_{name}": (float(np.mean(shares)) if shares else None) for name, shares in per_model.items()
    }
    out["n_models"] = n_models
    out["n_pairs"] = n_pairs
    return out
