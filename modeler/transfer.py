"""Transfer to a new platform: a predictor from 5–50 measurements, built on the other platforms' predictors.

A new platform's costs are, to a good approximation, a smooth function of what the same models cost on
platforms already known: a phone's latencies rank networks much like another phone's, a CPU's like
another CPU's. So the features of a transferred predictor are the *source* predictors' outputs
(``log`` of each source platform's predicted target for the model), and what is learned on the new
platform's few measurements is a small map from those to its own ``log(target)``:

* ``loglinear`` — the source whose predictions rank the measured models best (Spearman; ties by the
  smaller residual) and ``log y = a * log s + b`` on it: the classic 10-shot transfer (HELP's
  baseline), the fallback for a tiny budget.
* ``stacked`` — that log-linear map plus a ridge regression of its residual on *every* source's
  (centred) log predictions, the penalty chosen by leave-one-out; a very large penalty gives back
  ``loglinear``, so it can only lose what the leave-one-out cannot see. Several sources together
  pin down the new platform's mix of compute and memory cost that no single one has.
* ``mix`` — ``y = sum_j w_j * s_j + c`` in linear space, every weight >= 0 (non-negative least squares on
  relative error): a device that pays a share of each source's cost plus an overhead — e.g. one whose
  compute is like one source's and whose memory traffic is like another's, which no map in log space
  of any single source reproduces.

:func:`fit_transfer` fits each, scores each by leave-one-out on the budget (every measured model
predicted by a map fitted without it: accuracy estimated without extra measurements) and keeps the
best (±10 % accuracy, ties by MAPE). :func:`train_transfer` also lets the platform's own additive model,
fitted on the measured models alone, compete (from :data:`MIN_OWN_SAMPLES` models): where it wins the
leave-one-out, no source explains the platform and it serves instead. :class:`TransferMap` is the fitted map with its source
predictors; it is the base (``prior``) of an ordinary :class:`~fleetmeter.modeler.predictor.Predictor`
(``method="transfer"``, no booster), which the registry saves with its sources' LightGBM texts next to
it, so a transferred version keeps serving the same numbers whatever happens to its sources later.

Which models to measure (:func:`select_models`): those that spread over the sources' predictions
(k-center / farthest-point on the standardised source-prediction vectors: extremes fix the slope of a
map, spread fixes its shape), the first one chosen by the seed, deterministic for a seed; then ordered
cheapest first (the mean predicted cost), so the sweep measures cheap models first. The benchmark
(``benchmarks/adapt.py``) compares it with random choice at the same budget.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .dataset import Sample, fingerprint
from .learners import FeaturesLike, _targets_of, fit_relative_nonnegative
from .methods import AdditiveCost
from .metrics import evaluate
from .predictor import Predictor
from .work_fallback import WorkFallback

__all__ = [
    "TRANSFER_METHODS",
    "MAP_FITS",
    "MIN_TRANSFER_SAMPLES",
    "MIN_OWN_SAMPLES",
    "RIDGE_GRID",
    "LinearMap",
    "TransferMap",
    "TransferResult",
    "fit_loglinear",
    "fit_stacked",
    "fit_mix",
    "leave_one_out",
    "fit_transfer",
    "scores_better",
    "own_leave_one_out",
    "select_models",
    "source_log_matrix",
    "train_transfer",
]

#: The maps :func:`fit_transfer` chooses between (the first wins ties).
TRANSFER_METHODS = ("stacked", "mix", "loglinear")
#: Ridge of ``mix`` (relative to each source's typical share of the target).
MIX_RIDGE = 1e-4
#: A transfer needs at least this many measured models on the new platform.
MIN_TRANSFER_SAMPLES = 3
#: Fewer measured models than this and the platform's own additive model does not compete (a leave-one-out
#: on 5 or fewer models says too little to set sources aside).
MIN_OWN_SAMPLES = 6
#: Ridge penalties tried for ``stacked`` (relative to the number of samples).
RIDGE_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, 1e4)

FitFn = Callable[[np.ndarray, np.ndarray], "LinearMap"]


@dataclass(frozen=True)
class LinearMap:
    """``log y = intercept + sum_j coef_j * (log s_j - center_j)`` over the source columns (``space``
    ``"log"``), or ``y = intercept + sum_j coef_j * s_j``, floored at ``floor`` (``space`` ``"linear"``)."""

    method: str
    coef: Tuple[float, ...]
    center: Tuple[float, ...]
    intercept: float
    #: The column of the best-ranking source (``loglinear``'s; the anchor of ``stacked``).
    anchor: int
    ridge: Optional[float] = None
    space: str = "log"
    floor: float = 0.0

    def apply(self, logs: np.ndarray) -> np.ndarray:
        """``log y`` for rows of source ``log`` predictions."""
        logs = np.atleast_2d(np.asarray(logs, dtype=float))
        if self.space == "linear":
            return np.log(np.maximum(np.exp(logs) @ np.asarray(self.coef) + self.intercept, self.floor))
        return (logs - np.asarray(self.center)) @ np.asarray(self.coef) + self.intercept

    def to_dict(self) -> Dict[str, Any]:
        return {"method": self.method, "coef": list(self.coef), "center": list(self.center),
                "intercept": self.intercept, "anchor": self.anchor, "ridge": self.ridge, "space": self.space,
                "floor": self.floor}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LinearMap":
        return cls(method=str(data["method"]), coef=tuple(float(c) for c in data["coef"]),
                   center=tuple(float(c) for c in data["center"]), intercept=float(data["intercept"]),
                   anchor=int(data["anchor"]), ridge=None if data.get("ridge") is None else float(data["ridge"]),
                   space=str(data.get("space", "log")), floor=float(data.get("floor", 0.0)))


def _best_source(logs: np.ndarray, y_log: np.ndarray) -> int:
    """The column whose values rank ``y_log`` best (Spearman); ties (within 1e-9) by the smaller log-linear
    residual, then the lower column."""
    from scipy.stats import rankdata

    n = len(y_log)
    dx = logs - logs.mean(axis=0)
    var = np.einsum("ij,ij->j", dx, dx)
    flat = var <= 1e-12 * max(1, n)
    slope = np.where(flat, 1.0, (dx.T @ (y_log - y_log.mean())) / np.where(flat, 1.0, var))
    resid = (y_log - y_log.mean())[:, None] - dx * slope
    sse = np.einsum("ij,ij->j", resid, resid)
    rho = np.zeros(logs.shape[1])
    if n > 2:
        rx = rankdata(logs, axis=0)
        rx = rx - rx.mean(axis=0)
        ry = rankdata(y_log) - (n + 1) / 2.0
        denom = np.sqrt(np.einsum("ij,ij->j", rx, rx) * float(ry @ ry))
        rho = np.where(denom > 0, (rx.T @ ry) / np.where(denom > 0, denom, 1.0), -1.0)
    order = sorted(range(logs.shape[1]), key=lambda j: (-round(float(rho[j]), 9), float(sse[j]), j))
    return order[0]


def _line(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Least squares ``y = a x + b`` (slope 1 when ``x`` does not vary)."""
    a, b = _line_coef(x, y)
    return lambda v: a * v + b


def _line_coef(x: np.ndarray, y: np.ndarray) -> Tuple[float, float]:
    dx = x - x.mean()
    var = float(dx @ dx)
    a = float(dx @ (y - y.mean())) / var if var > 1e-12 * max(1, len(x)) else 1.0
    return a, float(y.mean() - a * x.mean())


def fit_loglinear(logs: np.ndarray, y_log: np.ndarray) -> LinearMap:
    """``log y = a * log s + b`` on the best-ranking source column of ``logs`` (n x k)."""
    logs, y_log = np.asarray(logs, dtype=float), np.asarray(y_log, dtype=float)
    j = _best_source(logs, y_log)
    a, b = _line_coef(logs[:, j], y_log)
    coef = np.zeros(logs.shape[1])
    coef[j] = a
    return LinearMap("loglinear", tuple(coef), tuple([0.0] * logs.shape[1]), b, j)


def _ridge(x: np.ndarray, r: np.ndarray, penalty: float) -> np.ndarray:
    """Ridge coefficients of ``r`` on centred ``x`` (no intercept), penalty scaled to ``x``'s variance."""
    scale = float(np.trace(x.T @ x)) / max(1, x.shape[1]) or 1.0
    return np.linalg.solve(x.T @ x + penalty * scale * np.eye(x.shape[1]), x.T @ r)


def _stacked_with(logs: np.ndarray, y_log: np.ndarray, penalty: float) -> LinearMap:
    base = fit_loglinear(logs, y_log)
    center = logs.mean(axis=0)
    x = logs - center
    resid = y_log - base.apply(logs)
    w = _ridge(x, resid - resid.mean(), penalty)
    coef = np.asarray(base.coef) + w
    # the anchor's own term, re-expressed around the centre, goes into the intercept
    intercept = base.intercept + float(np.asarray(base.coef) @ center) + float(resid.mean())
    return LinearMap("stacked", tuple(float(c) for c in coef), tuple(float(c) for c in center), intercept,
                     base.anchor, penalty)


def fit_stacked(logs: np.ndarray, y_log: np.ndarray, penalty: Optional[float] = None) -> LinearMap:
    """The log-linear map plus ridge on every source (see the module docstring); ``penalty`` None: the one of
    :data:`RIDGE_GRID` with the lowest leave-one-out squared log error."""
    logs, y_log = np.asarray(logs, dtype=float), np.asarray(y_log, dtype=float)
    if penalty is not None or len(y_log) < 3:
        return _stacked_with(logs, y_log, RIDGE_GRID[-1] if penalty is None else penalty)
    best, best_err = RIDGE_GRID[-1], math.inf
    for candidate in RIDGE_GRID:
        oof = leave_one_out(lambda a, b, p=candidate: _stacked_with(a, b, p), logs, y_log)
        err = float(np.mean((oof - y_log) ** 2))
        if err < best_err - 1e-12:
            best, best_err = candidate, err
    return _stacked_with(logs, y_log, best)


def fit_mix(logs: np.ndarray, y_log: np.ndarray, ridge: float = MIX_RIDGE) -> LinearMap:
    """``y = sum_j w_j * s_j + c`` with every ``w_j, c >= 0`` (a device that pays a share of each source's cost
    and a fixed overhead), fitted on relative error; floored at a tenth of the smallest measured value."""
    logs, y_log = np.asarray(logs, dtype=float), np.asarray(y_log, dtype=float)
    y = np.exp(y_log)
    coef, intercept = fit_relative_nonnegative(np.exp(logs), y, ridge)
    return LinearMap("mix", tuple(float(c) for c in coef), tuple([0.0] * logs.shape[1]), intercept,
                     _best_source(logs, y_log), ridge, "linear", float(y.min()) / 10.0)


def leave_one_out(fit: FitFn, logs: np.ndarray, y_log: np.ndarray) -> np.ndarray:
    """Each row's log prediction by ``fit`` on all the other rows."""
    n = len(y_log)
    out = np.empty(n)
    for i in range(n):
        keep = np.arange(n) != i
        out[i] = fit(logs[keep], y_log[keep]).apply(logs[i:i + 1])[0]
    return out


#: Each map method's fit: ``(logs, y_log) -> LinearMap``.
MAP_FITS: Dict[str, FitFn] = {"stacked": fit_stacked, "mix": fit_mix, "loglinear": fit_loglinear}


def scores_better(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """``a`` scores better than ``b``: a higher ±10 % accuracy, ties by a lower MAPE."""
    return ((a.get("acc_10") or 0.0), -(a.get("mape") or math.inf)) > ((b.get("acc_10") or 0.0),
                                                                        -(b.get("mape") or math.inf))


def _refit(fitted: LinearMap) -> FitFn:
    """How to refit ``fitted``'s method on part of the data: ``stacked`` at its chosen penalty (choosing it
    again inside every leave-one-out fold would cost ``n`` times more and changes little)."""
    if fitted.method == "stacked":
        return lambda a, b: _stacked_with(a, b, fitted.ridge if fitted.ridge is not None else RIDGE_GRID[-1])
    return MAP_FITS[fitted.method]


def fit_transfer(logs: np.ndarray, y_log: np.ndarray, methods: Sequence[str] = TRANSFER_METHODS
                 ) -> Tuple[LinearMap, Dict[str, Dict[str, Any]], str, np.ndarray]:
    """``(map, leave-one-out metrics per method, why it was chosen, its leave-one-out log predictions)``:
    every method of ``methods`` fitted and scored by leave-one-out on the budget, the best (±10 % accuracy,
    ties by MAPE, then the order of ``methods``) serves, fitted on all of it."""
    logs, y_log = np.atleast_2d(np.asarray(logs, dtype=float)), np.asarray(y_log, dtype=float)
    if len(y_log) < MIN_TRANSFER_SAMPLES:
        raise ValueError(f"need at least {MIN_TRANSFER_SAMPLES} measured models to transfer, got {len(y_log)}")
    unknown = [m for m in methods if m not in MAP_FITS]
    if unknown:
        raise ValueError(f"transfer method must be one of {TRANSFER_METHODS}, got {unknown[0]!r}")
    cv: Dict[str, Dict[str, Any]] = {}
    fits: Dict[str, Tuple[LinearMap, np.ndarray]] = {}
    for method in methods:
        fitted = MAP_FITS[method](logs, y_log)
        oof = leave_one_out(_refit(fitted), logs, y_log)
        fits[method] = (fitted, oof)
        cv[method] = {**evaluate(np.exp(oof), np.exp(y_log)), "folds": "leave-one-out"}
    best = methods[0]
    for method in methods[1:]:
        if scores_better(cv[method], cv[best]):
            best = method
    listing = ", ".join(f"{m} {(cv[m].get('acc_10') or 0):.3f}/{(cv[m].get('mape') or math.inf):.3f}"
                        for m in methods)
    because = (f"transfer map {best} had the best ±10 % accuracy / MAPE by leave-one-out on the "
               f"{len(y_log)} measured models: {listing}")
    return fits[best][0], cv, because, fits[best][1]


# ------------------------------------------------------------------ choosing what to measure


def _rank_key(seed: int, key: str) -> str:
    return hashlib.sha256(f"adapt/{int(seed)}/{key}".encode()).hexdigest()


def select_models(logs: np.ndarray, keys: Sequence[str], budget: int, *, seed: int = 0) -> List[int]:
    """Indices of ``budget`` rows of ``logs`` (candidates x sources, log predicted cost) to measure.

    Farthest-point (k-center) on the standardised rows: the first is the candidate ranked first by a hash
    of (``seed``, its key), each next one the candidate farthest from all chosen (ties by key). Depends
    only on the candidates' keys, values and the seed, not on their order. Returned cheapest first (mean
    predicted cost; ties by key).
    """
    logs = np.atleast_2d(np.asarray(logs, dtype=float))
    if len(keys) != logs.shape[0]:
        raise ValueError(f"{len(keys)} keys for {logs.shape[0]} candidates")
    budget = min(int(budget), len(keys))
    if budget <= 0:
        return []
    order = sorted(range(len(keys)), key=lambda i: keys[i])  # a canonical order: input order does not matter
    x = logs[order]
    spread = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(spread > 1e-12, spread, 1.0)
    first = min(range(len(order)), key=lambda i: _rank_key(seed, keys[order[i]]))
    chosen = [first]
    dist = np.linalg.norm(x - x[first], axis=1)
    while len(chosen) < budget:
        far = float(dist.max())
        nxt = next(i for i in range(len(order)) if dist[i] >= far - 1e-12 and i not in chosen)
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(x - x[nxt], axis=1))
    picked = [order[i] for i in chosen]
    return sorted(picked, key=lambda i: (float(logs[i].mean()), keys[i]))


# ------------------------------------------------------------------ the served predictor


def source_log_matrix(sources: Sequence[Tuple[str, Predictor]], items: Sequence[FeaturesLike]) -> np.ndarray:
    """``len(items) x len(sources)``: each source predictor's ``log`` prediction of each item."""
    if not len(items):
        return np.zeros((0, len(sources)))
    return np.column_stack([p.log_predict(items) for _, p in sources])


@dataclass(frozen=True)
class TransferMap:
    """The base of a transferred :class:`Predictor`: its source predictors and the map from their ``log``
    predictions to this platform's ``log(target)`` (:class:`LinearMap`)."""

    target: str
    sources: Tuple[Tuple[str, Predictor], ...] = field(repr=False)
    map: LinearMap

    @property
    def source_platforms(self) -> List[str]:
        return [pid for pid, _ in self.sources]

    def log_predict(self, items: Sequence[FeaturesLike]) -> np.ndarray:
        if not len(items):
            return np.zeros(0)
        return self.map.apply(source_log_matrix(self.sources, items))

    def predict(self, items: Sequence[FeaturesLike]) -> np.ndarray:
        return np.exp(self.log_predict(items))

    def source_texts(self) -> List[str]:
        """Each source booster's LightGBM text (``""`` for a source without one), in source order."""
        return [p.model_text() for _, p in self.sources]

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": "transfer", "target": self.target, "map": self.map.to_dict(),
                "sources": [{"platform_id": pid, "predictor": p.config()} for pid, p in self.sources]}


@dataclass
class TransferResult:
    """What :func:`train_transfer` hands back: the predictor and what goes into its manifest."""

    platform_id: str
    target: str
    predictor: Predictor
    metrics: Dict[str, Any]
    fingerprint: str
    n_samples: int
    chosen_because: str
    #: The registry's ``granularity`` of a transferred version.
    granularity: str = "transferred"
    method: str = "transfer"


def own_leave_one_out(samples: Sequence[Sample], target: str) -> np.ndarray:
    """Leave-one-out ``log`` predictions of the additive model (:class:`~fleetmeter.modeler.methods.AdditiveCost`)
    fitted on the platform's own measured models alone: what transfer competes with."""
    out = np.empty(len(samples))
    for i in range(len(samples)):
        out[i] = AdditiveCost.fit([s for j, s in enumerate(samples) if j != i], target).log_predict([samples[i]])[0]
    return out


def train_transfer(samples: Sequence[Sample], sources: Sequence[Tuple[str, Predictor]], target: str, *,
                   platform_id: str, seed: int = 0, methods: Sequence[str] = TRANSFER_METHODS,
                   own: bool = True) -> TransferResult:
    """The predictor of ``target`` on ``platform_id`` from its measured ``samples`` and the ``sources``
    (``(platform id, predictor)``, model-level predictors of the same target): the best transfer map
    (:func:`fit_transfer`), unless (``own``, and at least :data:`MIN_OWN_SAMPLES` models) the additive model
    fitted on the measured models alone does better by leave-one-out — then that serves (``granularity`` ``"model"``, ``method`` ``"additive"``),
    and ``chosen_because`` says so. On NAS-Bench-201 it does on the simulated ASIC, whose cost *is* a sum
    over ops (docs/benchmarks.md)."""
    if not sources:
        raise ValueError("a transfer needs at least one source platform with a model-level predictor")
    if any(p.target != target for _, p in sources):
        raise ValueError(f"every source predictor must predict {target!r}")
    samples = sorted(samples, key=lambda s: s.model_sha256)
    y_log = np.log(_targets_of(samples, target))
    sources = tuple(sorted(sources, key=lambda sp: sp[0]))
    fitted, cv, because, oof = fit_transfer(source_log_matrix(sources, samples), y_log, methods)
    froms = [pid for pid, _ in sources]
    anchor = sources[fitted.anchor][0]
    because = f"{because}; sources: {', '.join(froms)} (best-ranking: {anchor})"
    columns = sorted({c for _, p in sources for c in p.columns})
    kind = {"granularity": "transferred", "method": "transfer", "feature_set": "transfer", "map": fitted.method,
            "prior": TransferMap(target=target, sources=sources, map=fitted)}
    if own and len(samples) >= MIN_OWN_SAMPLES:
        own_oof = own_leave_one_out(samples, target)
        cv["additive_own"] = {**evaluate(np.exp(own_oof), np.exp(y_log)), "folds": "leave-one-out"}
        if scores_better(cv["additive_own"], cv[fitted.method]):
            oof, prior = own_oof, AdditiveCost.fit(samples, target)
            columns = list(prior.columns)
            because = (f"the additive model on the {len(samples)} measured models alone beat every transfer map "
                       f"by leave-one-out (±10 % {cv['additive_own'].get('acc_10') or 0:.3f}); {because}")
            kind = {"granularity": "model", "method": "additive", "feature_set": "full", "map": None, "prior": prior}
    served = cv["additive_own" if kind["method"] == "additive" else fitted.method]
    # the interval from the leave-one-out residuals of what serves (cross-conformal)
    q = float(np.quantile(np.abs(oof - y_log), 0.9, method="higher"))
    predictor = Predictor(target=target, feature_set=kind["feature_set"], columns=tuple(columns), booster=None,
                          prior=kind["prior"], method=kind["method"], interval_log=q, n_train=len(samples),
                          seed=seed, cv=dict(served))
    metrics: Dict[str, Any] = {
        "cross_validation": cv,
        "served": {"method": kind["method"], "granularity": kind["granularity"], "map": kind["map"],
                   "from_platforms": froms, "anchor_platform": anchor, "random_split": dict(served),
                   "leave_family_out": None},
        "transfer": {"from_platforms": froms, "map": fitted.to_dict(), "anchor_platform": anchor,
                     "models": [s.model_sha256 for s in samples]},
        "interval": {"level": 0.9, "log_half_width": q, "factor": math.exp(q),
                     "coverage_on_held_out": None, "coverage_leave_family_out": None},
        "warnings": _warnings(len(samples), served),
        # what serving leans on for an operator none of the measured models had
        "work_fallback": {"model": WorkFallback.fit(samples, target, seed=seed).to_dict()},
    }
    return TransferResult(platform_id=platform_id, target=target, predictor=predictor, metrics=metrics,
                          fingerprint=fingerprint(samples), n_samples=len(samples), chosen_because=because,
                          granularity=kind["granularity"], method=kind["method"])


def _warnings(n: int, served: Mapping[str, Any]) -> List[str]:
    acc = served.get("acc_10")
    out = [f"fitted on only {n} measured models of this platform; accuracy estimated by "
           "leave-one-out on them" + (f" (±10 %: {acc:.2f})" if acc is not None else "") +
           ": `fleetmeter train` replaces it once enough readings exist"]
    return out
