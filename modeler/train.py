"""Model-level predictors: candidates per (platform, target), baselines included; the best serves.

Candidates (:data:`METHODS`): ``lgbm`` (below), ``additive`` (:class:`AdditiveCost`, a per-node
additive cost model fitted from whole-model costs), ``additive_lgbm`` (LightGBM on its residual)
and the baselines ``opcount_lgbm`` and ``flops_linear``. :func:`run_train_task` trains every one
with a cross-validation and serves the best out-of-fold ±10 % accuracy (a baseline too, saying
so); docs/predictors.md has the ablation.

What is learned. A :class:`Predictor` maps a model's graph features
(``ModelFeatures.model``, see :mod:`fleetmeter.modeler.features`) to one
target (:data:`~fleetmeter.modeler.dataset.TARGETS`) on one platform. It is
a LightGBM regressor fitted to ``log(target)``, for three reasons: costs
span orders of magnitude across a zoo, so squared error on the raw value
would be dominated by the largest models; a squared error in log space is
(to first order) a squared *relative* error, the quantity every metric we
report (±5 %/±10 % accuracy, MAPE, RMSPE) is about; and ``exp`` of the
prediction is always positive. Trees are invariant to monotone transforms
of the features, so these are used as extracted.

Boosting starts from a log-log prior (:class:`LogLogPrior`): ``log(target)
~ slope * log(1 + scale) + intercept``, fitted by least squares, with
``scale`` the feature the target grows with (:data:`PRIOR_FEATURE`: MACs
for latency and energy, weight bytes for peak memory). It is passed to
LightGBM as ``init_score``, so the trees learn the corrections to a power
law. Trees alone cannot extrapolate: a model twice as large as any in the
training set would get the largest training prediction, while the prior
keeps growing. On a synthetic zoo like the unit tests' (156 models, 12
families) it lifted ±10 % accuracy from about 0.62 to 0.70 (random splits)
and 0.28 to 0.31 (leave-one-family-out), MAPE from 0.13 to 0.09. The prior is part of the
predictor: a prediction is ``exp(booster(x) + prior(x))``; ``model.txt``
alone is only the correction (the registry's manifest carries the prior).

Small-data parameters (:func:`lgbm_params`): a few hundred rounds at a
learning rate of 0.05 on small trees (15 leaves), ``min_data_in_leaf``
scaled to the data (``n // 10`` between 2 and 20, so 30 models can still
split), ``min_data_in_bin=1`` (a rare op type still gets a split point),
L2 regularisation, and ``deterministic=True`` with ``num_threads=1`` and a
fixed ``seed``: the same samples give the same model, in whatever order
they come, and a Ray task never takes more than its one CPU.

Feature sets (:data:`FEATURE_SETS`): ``"full"`` is every model aggregate;
``"opcount"`` only the per-op-type counts (``count:<op>`` and
``node_count``), the op-count baseline.

Baselines, trained and evaluated on the same splits as every candidate (and candidates themselves):

* :class:`FlopsLinear` — ``target = a * macs + b``, the textbook "fixed
  overhead plus constant throughput" model, fitted by least squares on the
  *relative* error (rows weighted by ``1 / target``), because that is what
  the reported metrics score; a plain least-squares fit would be tuned to
  the largest models and miss the small ones by multiples.
* the ``"opcount"`` LightGBM: the same learner on op counts only, without
  the prior (which would bring MACs back in).

Interval. :meth:`Predictor.predict_interval` gives ``[pred * exp(-q),
pred * exp(q)]`` where ``q`` is the conformal quantile (level
:data:`INTERVAL_LEVEL`) of the absolute log-residuals ``|log(pred / true)|``
*out of fold*: a :data:`CV_FOLDS`-fold cross-validation on the training
data predicts every training model with a regressor that did not see it
(cross-conformal, "CV+"-style), then the final regressor is fitted on all of
it. The interval is relative (a fixed factor either side), matching errors
that grow with the cost. Its coverage is measured, never assumed:
:func:`evaluate_split` reports ``interval_coverage``, the share of *test*
models whose measurement falls inside.

Splits. :func:`split_random` (an exact 80/20 by default) and
:func:`split_leave_family_out` (one fold per model family, to see how the
predictor does on an architecture family it never saw). Both depend only on
the samples' identities and the seed, never on their order or on the
random-number stream of a library version.

Fan-out. :func:`train_all` builds one :class:`TrainTask` per (platform,
target) and hands them to an injected ``map_fn(fn, items) -> list``
(serial by default). The controller passes one backed by Ray tasks (see
``fleetmeter.controller.engine``); tasks and results are plain picklable
data, and :func:`run_train_task` is a module-level function.

LightGBM is imported on first use (``pip install 'fleetmeter[modeler]'``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .dataset import TARGETS, Sample, fingerprint
from .features import FEATURE_SCHEMA_VERSION, feature_columns
from .learners import (CV_FOLDS, INTERVAL_LEVEL, FeaturesLike, LogLogPrior, _booster_feature_names,
                       _conformal_quantile, _feature_dict, _folds, _lgb, _matrix, lgbm_params, scored_with_interval,
                       split_leave_family_out, split_random)
from .metrics import evaluate, noise_ceiling

__all__ = [
    "FEATURE_SETS",
    "INTERVAL_LEVEL",
    "CV_FOLDS",
    "NUM_BOOST_ROUND",
    "MIN_TRAIN_SAMPLES",
    "METHODS",
    "BASELINES",
    "METHOD_KEYS",
    "Predictor",
    "AdditiveCost",
    "additive_columns",
    "fit_relative_nonnegative",
    "prior_from_dict",
    "standing_warnings",
    "FlopsLinear",
    "LogLogPrior",
    "PRIOR_FEATURE",
    "TrainTask",
    "TrainResult",
    "lgbm_params",
    "select_columns",
    "samples_with",
    "split_random",
    "split_leave_family_out",
    "train_predictor",
    "evaluate_split",
    "evaluate_leave_family_out",
    "run_train_task",
    "train_all",
    "WorkFallback",
    "work_fallback_report",
]

log = logging.getLogger(__name__)

FEATURE_SETS = ("full", "opcount")
NUM_BOOST_ROUND = 300
#: The feature each target's :class:`LogLogPrior` scales with.
PRIOR_FEATURE = {"latency_ms": "macs", "energy_mj": "macs", "peak_rss_bytes": "param_bytes"}
#: Fewer samples than this for a (platform, target) and :func:`train_all` skips it.
MIN_TRAIN_SAMPLES = 10

MapFn = Callable[[Callable[[Any], Any], Sequence[Any]], List[Any]]
ProgressFn = Callable[[int, int], None]


def _targets_of(samples: Sequence[Sample], target: str) -> np.ndarray:
    values = [s.values.get(target) for s in samples]
    if any(v is None or not v > 0 for v in values):
        raise ValueError(f"every sample needs a positive {target!r} (filter with samples_with(target))")
    return np.asarray(values, dtype=float)


def samples_with(samples: Iterable[Sample], target: str) -> List[Sample]:
    """The samples that have a measured ``target``."""
    return [s for s in samples if s.values.get(target) is not None]


# ---------------------------------------------------------------- learners


def select_columns(samples: Sequence[FeaturesLike], feature_set: str = "full") -> List[str]:
    """The feature columns of ``feature_set`` over ``samples`` (sorted)."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature_set must be one of {FEATURE_SETS}, got {feature_set!r}")
    columns = feature_columns([_feature_dict(s) for s in samples])
    if feature_set == "opcount":
        columns = [c for c in columns if c.startswith("count:") or c == "node_count"]
    return columns


def _fit_booster(x: np.ndarray, y_log: np.ndarray, columns: Sequence[str], params: Mapping[str, Any],
                 rounds: int, init_score: Optional[np.ndarray] = None) -> Any:
    lgb = _lgb()
    data = lgb.Dataset(x, label=y_log, init_score=init_score, feature_name=_booster_feature_names(columns),
                       params={"min_data_in_bin": params["min_data_in_bin"], "verbosity": -1},
                       free_raw_data=True)
    return lgb.train(dict(params), data, num_boost_round=rounds)


@dataclass
class Predictor:
    """A trained model-level predictor for one target (the platform is the registry's business).

    ``method`` (:data:`METHODS`) says what it is. The prediction is
    ``exp(booster(x) + log base(x))``: ``prior`` is the base — a
    :class:`LogLogPrior` (``"lgbm"``), an :class:`AdditiveCost`
    (``"additive"`` alone, ``"additive_lgbm"`` with a booster on top), a
    :class:`FlopsLinear` (``"flops_linear"``) or nothing (``"opcount_lgbm"``,
    which boosts from the mean) — and ``booster`` a ``lightgbm.Booster`` on
    ``columns`` fitted to ``log(target)`` minus the base, or ``None`` when
    the base alone serves. ``interval_log`` is the half-width ``q`` of the
    :data:`INTERVAL_LEVEL` interval in log space (``None`` if not
    calibrated). ``n_train`` models went into it.
    """

    target: str
    feature_set: str
    columns: Tuple[str, ...]
    booster: Any = field(repr=False)
    prior: Optional[Any] = None
    interval_log: Optional[float] = None
    interval_level: float = INTERVAL_LEVEL
    n_train: int = 0
    seed: int = 0
    feature_schema_version: int = FEATURE_SCHEMA_VERSION
    params: Dict[str, Any] = field(default_factory=dict, repr=False)
    method: str = "lgbm"
    #: Out-of-fold metrics of the calibration's cross-validation (empty when not calibrated).
    cv: Dict[str, Any] = field(default_factory=dict, repr=False)

    def log_predict(self, items: Sequence[FeaturesLike]) -> np.ndarray:
        """``log`` of the predicted targets."""
        if not len(items):
            return np.zeros(0)
        out = np.zeros(len(items))
        if self.booster is not None:
            # One thread for small inputs: LightGBM's OpenMP start-up costs ~1-4 ms a call, 40x the
            # prediction of one row (what a Predict RPC or a search loop asks for).
            out = out + self.booster.predict(_matrix(items, self.columns),
                                             num_threads=1 if len(items) < 2048 else 0)
        if self.prior is not None:
            out = out + self.prior.log_predict(items)
        return np.asarray(out, dtype=float)

    def predict(self, items: Sequence[FeaturesLike]) -> np.ndarray:
        """Predicted targets (in target units) for samples, ``ModelFeatures`` or feature dicts."""
        return np.exp(self.log_predict(items))

    def predict_interval(self, items: Sequence[FeaturesLike]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(prediction, low, high)``; ``low``/``high`` are ``nan`` without a calibrated interval."""
        pred = self.predict(items)
        if self.interval_log is None or not math.isfinite(self.interval_log):
            nan = np.full(pred.shape, np.nan)
            return pred, nan, nan
        factor = math.exp(self.interval_log)
        return pred, pred / factor, pred * factor

    def model_text(self) -> str:
        """LightGBM's own text format (what the registry writes as ``model.txt``); ``""`` without a booster."""
        return self.booster.model_to_string() if self.booster is not None else ""

    def config(self) -> Dict[str, Any]:
        """Everything but the booster, JSON-ready (the registry's manifest carries it)."""
        return {
            "method": self.method, "target": self.target, "feature_set": self.feature_set,
            "columns": list(self.columns), "prior": self.prior.to_dict() if self.prior else None,
            "has_booster": self.booster is not None,
            "interval_log": self.interval_log, "interval_level": self.interval_level, "n_train": self.n_train,
            "seed": self.seed, "feature_schema_version": self.feature_schema_version, "params": dict(self.params),
            "cv": dict(self.cv),
        }


def prior_from_dict(data: Mapping[str, Any]) -> Any:
    """The base a :class:`Predictor` starts from, rebuilt from :meth:`Predictor.config`'s ``prior``."""
    kind = data.get("kind", "loglog")
    if kind == "loglog":
        return LogLogPrior.from_dict(data)
    if kind == "additive":
        return AdditiveCost.from_dict(data)
    if kind == "flops_linear":
        return FlopsLinear.from_dict(data)
    raise ValueError(f"unknown predictor base {kind!r}")


#: Candidate methods of a model-level predictor; baselines included (see :func:`run_train_task`).
METHODS = ("lgbm", "additive", "additive_lgbm", "opcount_lgbm", "flops_linear")
#: The baselines among :data:`METHODS`: they compete, and serve when they win.
BASELINES = ("opcount_lgbm", "flops_linear")
#: Report key of each method (``"predictor"`` is the LightGBM with a log-log prior, as before).
METHOD_KEYS = {"lgbm": "predictor", "additive": "additive", "additive_lgbm": "additive_lgbm",
               "opcount_lgbm": "opcount_lgbm", "flops_linear": "flops_linear", "kernel": "kernel"}
#: Model totals every additive model costs with (so an op type it never saw still costs its work).
ADDITIVE_TOTALS = ("macs", "param_bytes", "act_read_bytes", "act_write_bytes", "node_count")
#: Ridge penalty of the additive model, relative to each column's typical share of the target.
ADDITIVE_RIDGE = 1e-5


def additive_columns(samples: Sequence[FeaturesLike]) -> List[str]:
    """The additive model's columns: per op type ``count:``, ``macs:``, ``bytes:``, then :data:`ADDITIVE_TOTALS`."""
    columns = [c for c in feature_columns([_feature_dict(s) for s in samples])
               if c.split(":", 1)[0] in ("count", "macs", "bytes") and ":" in c]
    return columns + [c for c in ADDITIVE_TOTALS if c not in columns]


def fit_relative_nonnegative(x: np.ndarray, y: np.ndarray, ridge: float = 0.0) -> Tuple[np.ndarray, float]:
    """``(coef, intercept)``, all >= 0, minimising ``sum(((x @ coef + intercept) - y) / y) ** 2``.

    Non-negative least squares on the *relative* error (what the metrics score), columns scaled to
    their typical share of the target, an optional ridge (not on the intercept). A column that is
    zero everywhere gets 0.
    """
    from scipy.optimize import nnls

    rel = x / y[:, None]
    scale = np.abs(rel).mean(axis=0) if len(y) else np.ones(x.shape[1])
    keep = scale > 0
    scale[~keep] = 1.0
    design = np.column_stack([rel / scale, 1.0 / y])
    rhs = np.ones(len(y))
    if ridge > 0:
        penalty = np.sqrt(ridge * len(y)) * np.eye(design.shape[1])[:-1]
        design = np.vstack([design, penalty])
        rhs = np.concatenate([rhs, np.zeros(penalty.shape[0])])
    solution, _ = nnls(design, rhs, maxiter=50 * design.shape[1])
    return np.where(keep, solution[:-1] / scale, 0.0), float(solution[-1])


@dataclass(frozen=True)
class AdditiveCost:
    """A per-node additive cost model fitted from whole-model costs (no operator profiles needed).

    ``target = intercept + sum_j coef_j * x_j`` over :func:`additive_columns`:
    every kernel of op type ``t`` costs ``a_t + b_t * macs + c_t * bytes``,
    plus a share of the model's totals (so work of a type never seen in
    training is still costed), plus a fixed overhead. Coefficients are
    non-negative (a node never makes a model faster) and fitted by
    non-negative least squares on the *relative* error (rows divided by the
    target), with a small ridge on columns scaled to their typical share of
    the target. A sum over nodes keeps where each op sits and what it costs
    there, and it extrapolates to models larger than any seen, where trees
    cannot. Predictions are floored at a tenth of the smallest training value.
    """

    target: str
    columns: Tuple[str, ...]
    coef: Tuple[float, ...]
    intercept: float
    floor: float

    @classmethod
    def fit(cls, samples: Sequence[Sample], target: str, ridge: float = ADDITIVE_RIDGE) -> "AdditiveCost":
        y = _targets_of(samples, target)
        columns = additive_columns(samples)
        coef, intercept = fit_relative_nonnegative(_matrix(samples, columns), y, ridge)
        return cls(target=target, columns=tuple(columns), coef=tuple(float(c) for c in coef),
                   intercept=intercept, floor=float(y.min()) / 10.0)

    def predict(self, items: Sequence[FeaturesLike]) -> np.ndarray:
        x = _matrix(items, self.columns)
        return np.maximum(x @ np.asarray(self.coef) + self.intercept, self.floor)

    def log_predict(self, items: Sequence[FeaturesLike]) -> np.ndarray:
        return np.log(self.predict(items))

    def node_costs(self, features: FeaturesLike) -> Dict[str, float]:
        """What each op type contributes to ``features``' prediction (plus ``"overhead"`` and ``"totals"``)."""
        row = dict(zip(self.columns, _matrix([features], self.columns)[0]))
        out: Dict[str, float] = {"overhead": self.intercept}
        for column, c in zip(self.columns, self.coef):
            key = column.split(":", 1)[1] if ":" in column else "totals"
            out[key] = out.get(key, 0.0) + c * row[column]
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": "additive", "target": self.target, "columns": list(self.columns), "coef": list(self.coef),
                "intercept": self.intercept, "floor": self.floor}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AdditiveCost":
        return cls(target=str(data["target"]), columns=tuple(data["columns"]),
                   coef=tuple(float(c) for c in data["coef"]), intercept=float(data["intercept"]),
                   floor=float(data["floor"]))


def _base(method: str, samples: Sequence[Sample], y_log: np.ndarray, target: str) -> Optional[Any]:
    if method == "lgbm":
        return LogLogPrior.fit(samples, y_log, PRIOR_FEATURE[target])
    if method in ("additive", "additive_lgbm"):
        return AdditiveCost.fit(samples, target)
    if method == "flops_linear":
        return FlopsLinear.fit(samples, target)
    return None


def _fit(method: str, samples: Sequence[Sample], x: np.ndarray, y_log: np.ndarray, columns: Sequence[str],
         target: str, seed: int, rounds: int) -> Tuple[Any, Optional[Any]]:
    prior = _base(method, samples, y_log, target)
    if method in ("additive", "flops_linear"):
        return None, prior
    init = prior.log_predict(samples) if prior else None
    booster = _fit_booster(x, y_log, columns, lgbm_params(len(samples), seed), rounds, init)
    return booster, prior


def _calibration_folds(samples: Sequence[Sample], k: int, seed: int) -> np.ndarray:
    """Folds for the interval's out-of-fold residuals: by family when there are >= 3 families.

    Grouping by family makes every residual one of a model whose family the
    fold's regressor never saw, so the interval also covers a new family
    (leave-one-family-out coverage near nominal); with fewer families the
    folds are random (:func:`_folds`).
    """
    families = sorted({s.family for s in samples if s.family})
    if len(families) < 3:
        return _folds(samples, k, seed)
    ranked = sorted(families, key=lambda f: hashlib.sha256(f"{int(seed)}/{f}".encode()).hexdigest())
    group = {f: i % k for i, f in enumerate(ranked)}
    plain = _folds(samples, k, seed)
    return np.asarray([group[s.family] if s.family else plain[i] for i, s in enumerate(samples)], dtype=int)


def _out_of_fold(method: str, samples: Sequence[Sample], x: np.ndarray, y_log: np.ndarray, columns: Sequence[str],
                 target: str, seed: int, rounds: int, fold: np.ndarray) -> Optional[np.ndarray]:
    """Out-of-fold log predictions of ``method`` over ``fold``; ``None`` with fewer than two folds."""
    if len(set(fold.tolist())) < 2:
        return None
    oof = np.empty(len(samples))
    for f in sorted(set(fold.tolist())):
        held, kept = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        booster, prior = _fit(method, [samples[i] for i in kept], x[kept], y_log[kept], columns, target, seed,
                              rounds)
        held_samples = [samples[i] for i in held]
        oof[held] = (booster.predict(x[held]) if booster is not None else 0.0) + (
            prior.log_predict(held_samples) if prior else 0.0)
    return oof


def train_predictor(
    samples: Sequence[Sample],
    target: str,
    *,
    feature_set: str = "full",
    seed: int = 0,
    calibrate: bool = True,
    rounds: int = NUM_BOOST_ROUND,
    method: Optional[str] = None,
    select: bool = False,
) -> Predictor:
    """A :class:`Predictor` of ``target`` fitted on all of ``samples`` (each must have ``target``).

    The result depends on the samples and the seed, not on their order.

    ``method`` is one of :data:`METHODS` (default ``"lgbm"``, or
    ``"opcount_lgbm"`` for ``feature_set="opcount"``). With ``calibrate``
    (the default) a :data:`CV_FOLDS`-fold cross-validation (grouped by
    family, :func:`_calibration_folds`) first sets the interval from
    out-of-fold residuals (see the module docstring); that costs
    ``CV_FOLDS`` extra fits. With ``select`` and family folds, a second
    cross-validation on random folds is recorded too (``cv["random_folds"]``:
    what :func:`run_train_task` chooses by, with the family one).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    method = method or ("opcount_lgbm" if feature_set == "opcount" else "lgbm")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    feature_set = "opcount" if method == "opcount_lgbm" else "full"
    if len(samples) < 2:
        raise ValueError(f"need at least 2 samples with {target!r} to train, got {len(samples)}")
    # A canonical order: the same samples give the same model whatever order they come in
    # (bagging draws rows by position).
    samples = sorted(samples, key=lambda s: (s.model_sha256, s.platform_id))
    y_log = np.log(_targets_of(samples, target))
    columns = select_columns(samples, feature_set)
    if not columns:
        raise ValueError(f"no {feature_set!r} feature columns in these samples")
    x = _matrix(samples, columns)
    interval_log: Optional[float] = None
    cv: Dict[str, Any] = {}
    if calibrate:
        k = min(CV_FOLDS, len(samples))
        fold = _calibration_folds(samples, k, seed)
        oof = _out_of_fold(method, samples, x, y_log, columns, target, seed, rounds, fold)
        if oof is not None:
            interval_log = _conformal_quantile(np.abs(oof - y_log), INTERVAL_LEVEL)
            grouped = len({s.family for s in samples if s.family}) >= 3
            cv = evaluate(np.exp(oof), np.exp(y_log))
            cv["folds"] = "family" if grouped else "random"
            if grouped and select:
                # The choice also weighs models like the training ones (random folds), not only new families.
                rnd = _out_of_fold(method, samples, x, y_log, columns, target, seed, rounds, _folds(samples, k, seed))
                cv["random_folds"] = evaluate(np.exp(rnd), np.exp(y_log)) if rnd is not None else {}
    booster, prior = _fit(method, samples, x, y_log, columns, target, seed, rounds)
    return Predictor(target=target, feature_set=feature_set, columns=tuple(columns), booster=booster, prior=prior,
                     interval_log=interval_log, n_train=len(samples), seed=seed,
                     params=lgbm_params(len(samples), seed) if booster is not None else {}, method=method, cv=cv)


@dataclass(frozen=True)
class FlopsLinear:
    """Baseline: ``target = slope * macs + intercept``, fitted on relative error.

    Minimises ``sum(((slope * macs + intercept) - y) / y) ** 2``; predictions
    are floored at ``floor`` (a tenth of the smallest training value) so a
    negative intercept never predicts a non-positive cost.
    """

    target: str
    slope: float
    intercept: float
    floor: float

    @classmethod
    def fit(cls, samples: Sequence[Sample], target: str) -> "FlopsLinear":
        y = _targets_of(samples, target)
        macs = _matrix(samples, ["macs"])[:, 0]
        design = np.column_stack([macs / y, 1.0 / y])
        (slope, intercept), *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
        return cls(target=target, slope=float(slope), intercept=float(intercept), floor=float(y.min()) / 10.0)

    def predict(self, items: Sequence[FeaturesLike]) -> np.ndarray:
        macs = _matrix(items, ["macs"])[:, 0]
        return np.maximum(self.slope * macs + self.intercept, self.floor)

    def log_predict(self, items: Sequence[FeaturesLike]) -> np.ndarray:
        return np.log(self.predict(items))

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": "flops_linear", "target": self.target, "slope": self.slope, "intercept": self.intercept,
                "floor": self.floor}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FlopsLinear":
        return cls(target=str(data["target"]), slope=float(data["slope"]), intercept=float(data["intercept"]),
                   floor=float(data["floor"]))


# -------------------------------------------------------------- evaluation


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


# ----------------------------------------------------------------- fan-out


@dataclass(frozen=True)
class TrainTask:
    """One (platform, target) to train: plain data, so it can travel to a Ray worker."""

    platform_id: str
    target: str
    samples: Tuple[Sample, ...]
    seed: int = 0
    leave_family_out: bool = True
    #: ``KernelSample``s of this platform (latency only): a kernel-level predictor is evaluated too.
    kernel_samples: Tuple[Any, ...] = ()


@dataclass
class TrainResult:
    """What :func:`run_train_task` hands back: the serving predictor of one (platform, target).

    ``metrics`` holds ``random_split`` (:func:`evaluate_split` on an 80/20
    split, plus ``kernel`` — the kernel-level predictor on the same split —
    where operator profiles exist), ``leave_family_out``
    (:func:`evaluate_leave_family_out`, when asked for; ``pooled.kernel``
    likewise), ``noise_ceiling`` (of the platform's repeated measurements
    of this target) and ``interval`` (the shipped predictor's ``q`` and the
    coverage measured on the random split's test models). The serving
    predictor — ``predictor`` when ``granularity`` is ``"model"``,
    ``kernel_predictor`` when ``"kernel"``; ``chosen_because`` says why —
    is trained on all samples, after the evaluations. Both are ``None``
    when ``skipped`` says why.
    """

    platform_id: str
    target: str
    predictor: Optional[Predictor]
    metrics: Dict[str, Any]
    fingerprint: str
    n_samples: int
    skipped: str = ""
    #: Which predictor serves: ``"model"`` (``predictor``) or ``"kernel"`` (``kernel_predictor``), and why.
    granularity: str = "model"
    chosen_because: str = ""
    kernel_predictor: Optional[Any] = None
    #: The method that serves (:data:`METHODS`, or ``"kernel"``).
    method: str = "lgbm"


def run_train_task(task: TrainTask) -> TrainResult:
    """Evaluate every candidate, then train the one that serves (platform, target) (a Ray task body).

    Candidates are :data:`METHODS` — the baselines included — and, with
    operator profiles, the kernel-level predictor; all are scored on the same
    held-out models of the random split, and the best (±10 % accuracy, ties
    by MAPE; :func:`_better`) is trained on every sample and serves, even
    when it is a baseline (``chosen_because`` says so). ``metrics["served"]``
    holds the served method's held-out numbers; ``metrics["warnings"]`` what
    a user should know about them (:func:`standing_warnings`).
    """
    samples = list(task.samples)
    fp = fingerprint(samples)
    ceiling = noise_ceiling({s.model_sha256: s.repeats.get(task.target, ()) for s in samples})
    metrics: Dict[str, Any] = {"noise_ceiling": ceiling}
    train, test = split_random(samples, task.seed)
    metrics["random_split"] = evaluate_split(train, test, task.target, seed=task.seed)
    metrics["work_fallback"] = work_fallback_report(train, test, samples, task.target, seed=task.seed)
    if task.leave_family_out:
        metrics["leave_family_out"] = evaluate_leave_family_out(samples, task.target, seed=task.seed)
    kernel_note = "no kernel-level data (no operator profiles)"
    if task.kernel_samples and task.target == "latency_ms":
        kernel_note = _compare_kernel_level(task, samples, metrics)
    # Every candidate trained on all samples; its cross-validation (out-of-fold, every sample held out
    # once: lower variance than one 80/20 split) picks the model-level method.
    candidates = {m: train_predictor(samples, task.target, seed=task.seed, method=m, select=True) for m in METHODS}
    metrics["cross_validation"] = {METHOD_KEYS[m]: p.cv for m, p in candidates.items()}
    key, because = _choose(metrics["cross_validation"], metrics["random_split"], kernel_note)
    granularity = "kernel" if key == "kernel" else "model"
    method = "kernel" if key == "kernel" else next(m for m, k in METHOD_KEYS.items() if k == key)
    kernel_predictor = predictor = None
    if granularity == "kernel":
        from .kernels import train_kernel_predictor

        kernel_predictor = train_kernel_predictor(list(task.kernel_samples), seed=task.seed)
        interval_log, level = kernel_predictor.interval_log, kernel_predictor.interval_level
    else:
        predictor = candidates[method]
        interval_log, level = predictor.interval_log, predictor.interval_level
    served_random = metrics["random_split"].get(key) or {}
    pooled = (metrics.get("leave_family_out") or {}).get("pooled") or {}
    metrics["served"] = {"method": method, "granularity": granularity, "random_split": served_random,
                         "leave_family_out": pooled.get(key)}
    metrics["interval"] = {
        "level": level,
        "log_half_width": interval_log,
        "factor": math.exp(interval_log) if interval_log is not None else None,
        "coverage_on_held_out": served_random.get("interval_coverage"),
        "coverage_leave_family_out": (pooled.get(key) or {}).get("interval_coverage"),
    }
    metrics["warnings"] = standing_warnings(metrics)
    log.info("%s/%s: %s serves (%s)", task.platform_id, task.target, method, because)
    return TrainResult(platform_id=task.platform_id, target=task.target, predictor=predictor, metrics=metrics,
                       fingerprint=fp, n_samples=len(samples), granularity=granularity, chosen_because=because,
                       kernel_predictor=kernel_predictor, method=method)


#: Fewer held-out models than this and ``train``/``eval``/``predict`` warn about the accuracy's uncertainty.
SMALL_TEST_SET = 30
#: An interval whose held-out coverage is further than this from nominal is flagged.
COVERAGE_TOLERANCE = 0.10
#: A ±10 % accuracy within this of the platform's noise ceiling is bounded by the noise.
CEILING_MARGIN = 0.03


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


def _better(kernel: Mapping[str, Any], model: Mapping[str, Any]) -> bool:
    """The first wins on a higher ±10 % accuracy, ties broken by a lower MAPE."""
    k10, m10 = kernel.get("acc_10") or 0.0, model.get("acc_10") or 0.0
    if k10 != m10:
        return k10 > m10
    return (kernel.get("mape") or math.inf) < (model.get("mape") or math.inf)


def _blend(cv: Mapping[str, Any]) -> Dict[str, Any]:
    """A candidate's cross-validated ±10 % accuracy and MAPE: with family folds *and* random folds, their
    mean (a predictor serves models like its training ones and new families alike), else as measured."""
    other = cv.get("random_folds") or {}
    if not other:
        return dict(cv)
    return {k: ((cv.get(k) or 0.0) + (other.get(k) or 0.0)) / 2.0 for k in ("acc_10", "mape")}


def _choose(cv: Mapping[str, Any], rnd: Mapping[str, Any], kernel_note: str) -> Tuple[str, str]:
    """The report key of the candidate that serves, and why.

    Model-level methods compete on their cross-validation (``cv``: out-of-fold
    metrics over every sample; with family folds, the mean of those and random
    folds' — :func:`_blend`); the winner then meets the kernel-level
    predictor, when there is one, on the random split's held-out models
    (``rnd``), where both were scored on the same models.
    """
    keys = [METHOD_KEYS[m] for m in METHODS if cv.get(METHOD_KEYS[m])]
    if not keys:  # too few samples to cross-validate: the held-out split decides
        cv = rnd
        keys = [METHOD_KEYS[m] for m in METHODS if METHOD_KEYS[m] in rnd]
    scored = {k: _blend(cv[k]) for k in keys}
    best = keys[0]
    for key in keys[1:]:
        if _better(scored[key], scored[best]):
            best = key
    folds = (cv[best].get("folds") or "random") if cv is not rnd else None
    if folds == "family" and cv[best].get("random_folds"):
        folds = "the mean over family and random folds"
    elif folds:
        folds = f"{folds} folds"
    where = (f"{CV_FOLDS}-fold cross-validation ({folds}, {cv[best].get('n')} models)" if folds
             else f"random split, {rnd.get('n_test')} held-out models")
    listing = ", ".join(f"{k} {(scored[k].get('acc_10') or 0):.3f}/{(scored[k].get('mape') or math.inf):.3f}"
                        for k in keys)
    if "kernel" in rnd:
        reference = (rnd.get("model_on_profiled") or {}).get(best) or rnd.get(best) or {}
        k = rnd["kernel"]
        versus = (f"; on the random split's held-out models kernel-level {(k.get('acc_10') or 0):.3f}/"
                  f"{(k.get('mape') or math.inf):.3f} vs {best} {(reference.get('acc_10') or 0):.3f}/"
                  f"{(reference.get('mape') or math.inf):.3f}")
        if _better(k, reference):
            return "kernel", f"kernel had the best ±10 % accuracy / MAPE{versus} (model-level, {where}: {listing})"
        listing += versus
    name = next((m for m, key in METHOD_KEYS.items() if key == best), best)
    role = "baseline " if name in BASELINES else ""
    because = f"{role}{name} had the best ±10 % accuracy / MAPE on {where}: {listing}"
    if "kernel" not in rnd:
        because += f" ({kernel_note})"
    return best, because


def _compare_kernel_level(task: TrainTask, samples: Sequence[Sample], metrics: Dict[str, Any]) -> str:
    """Evaluate the kernel-level predictor on the random split's held-out models (into ``metrics``).

    Both are scored on the same held-out models: the hash-based splits put a
    model on the same side whatever else is in the set, and when not every
    model has a profile the model-level candidates are re-evaluated on the
    profiled ones (``random_split.model_on_profiled``). Returns a note for
    ``chosen_because`` when kernel-level could not compete.
    """
    from .kernels import evaluate_kernel_leave_family_out, evaluate_kernel_split

    kernel = list(task.kernel_samples)
    if len(kernel) < MIN_TRAIN_SAMPLES:
        return f"only {len(kernel)} profiled models, need {MIN_TRAIN_SAMPLES} for kernel-level"
    k_train, k_test = split_random(kernel, task.seed)
    if not k_test or len(k_train) < 2:
        return "too few profiled models for a kernel-level evaluation"
    report = evaluate_kernel_split(k_train, k_test, seed=task.seed)
    rnd = metrics["random_split"]
    rnd["kernel"] = {**report["predictor"], "kernel_time_share": report["kernel_time_share"],
                     "matched_share": report["matched_share"], "unseen_kernel_types": report["unseen_kernel_types"]}
    profiled = {s.model_sha256 for s in kernel}
    if profiled != {s.model_sha256 for s in samples}:
        subset = [s for s in samples if s.model_sha256 in profiled]
        m_train, m_test = split_random(subset, task.seed)
        rnd["model_on_profiled"] = evaluate_split(m_train, m_test, task.target, seed=task.seed) if m_test else {}
    if task.leave_family_out and metrics.get("leave_family_out", {}).get("pooled"):
        pooled = evaluate_kernel_leave_family_out(kernel, seed=task.seed)["pooled"]
        if pooled:
            metrics["leave_family_out"]["pooled"]["kernel"] = pooled["predictor"]
    return ""


def _serial_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> List[Any]:
    return [fn(item) for item in items]


def train_all(
    samples_by_platform: Mapping[str, Sequence[Sample]],
    targets: Sequence[str] = TARGETS,
    map_fn: Optional[MapFn] = None,
    *,
    seed: int = 0,
    leave_family_out: bool = True,
    min_samples: int = MIN_TRAIN_SAMPLES,
    progress: Optional[ProgressFn] = None,
    chunk_size: Optional[int] = None,
    kernel_samples: Optional[Mapping[str, Sequence[Any]]] = None,
) -> List[TrainResult]:
    """One :class:`TrainResult` per (platform, target), platforms sorted, targets in given order.

    Each (platform, target) uses the platform's samples that measured that
    target; one with fewer than ``min_samples`` is not trained (``skipped``
    says so). The rest go to ``map_fn(run_train_task, tasks)`` in chunks of
    ``chunk_size`` (default: 1 when serial, 16 with a ``map_fn``);
    ``progress(done, total)`` is called before the first and after each chunk.
    A ``map_fn`` must return results in the order of its items.
    ``kernel_samples`` (platform -> ``KernelSample``s, see
    :mod:`~fleetmeter.modeler.kernels`) adds a kernel-level predictor to the
    latency evaluation of those platforms; the better one on held-out models serves.
    """
    for target in targets:
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    kernel_samples = kernel_samples or {}
    slots: List[Optional[TrainResult]] = []
    tasks: List[Tuple[int, TrainTask]] = []
    for platform_id in sorted(samples_by_platform):
        for target in targets:
            chosen = samples_with(samples_by_platform[platform_id], target)
            if len(chosen) < min_samples:
                slots.append(TrainResult(platform_id=platform_id, target=target, predictor=None, metrics={},
                                         fingerprint=fingerprint(chosen), n_samples=len(chosen),
                                         skipped=f"{len(chosen)} samples with {target}, need {min_samples}"))
                continue
            kernels = tuple(kernel_samples.get(platform_id, ())) if target == "latency_ms" else ()
            tasks.append((len(slots), TrainTask(platform_id, target, tuple(chosen), seed, leave_family_out,
                                                kernels)))
            slots.append(None)
    run = map_fn or _serial_map
    step = chunk_size or (1 if map_fn is None else 16)
    if progress:
        progress(0, len(tasks))
    for start in range(0, len(tasks), step):
        chunk = tasks[start:start + step]
        results = run(run_train_task, [t for _, t in chunk])
        if len(results) != len(chunk):
            raise RuntimeError(f"map_fn returned {len(results)} results for {len(chunk)} tasks")
        for (slot, _), result in zip(chunk, results):
            slots[slot] = result
        if progress:
            progress(min(start + step, len(tasks)), len(tasks))
    done = [r for r in slots if r is not None]
    log.info("trained %d predictors (%d skipped)", sum(1 for r in done if not r.skipped),
             sum(1 for r in done if r.skipped))
    return done


# ------------------------------------------------------------ work fallback


@dataclass(frozen=True)
class WorkFallback:
    """What serving falls back on for what the predictor does not understand: cost from work.

    ``target = macs_coef * macs + bytes_coef * bytes_moved + intercept`` (``bytes_moved``: weights
    plus activations read and written), fitted on relative error with every coefficient kept >= 0
    (:func:`fit_relative_nonnegative`), floored at a tenth of the smallest training value. ``log_half_width`` is measured: the
    conformal quantile (``interval_level``) of its out-of-fold ``|log(fallback / true)|`` on the
    training models, the factor ``exp(log_half_width)`` by which serving widens an interval it leans
    on. ``training_max`` holds the largest value of each
    :data:`~fleetmeter.modeler.features.COVERAGE_KEYS` key in training: a model above 0 where
    training only had 0 has something the predictor never saw.
    """

    target: str
    macs_coef: float
    bytes_coef: float
    intercept: float
    floor: float
    log_half_width: float
    interval_level: float = INTERVAL_LEVEL
    n_train: int = 0
    training_max: Mapping[str, float] = field(default_factory=dict)

    @staticmethod
    def _work(items: Sequence[FeaturesLike]) -> np.ndarray:
        m = _matrix(items, ["macs", "param_bytes", "act_read_bytes", "act_write_bytes"])
        return np.column_stack([m[:, 0], m[:, 1:].sum(axis=1)])

    @classmethod
    def _coefficients(cls, samples: Sequence[Sample], target: str) -> Tuple[float, float, float]:
        coef, intercept = fit_relative_nonnegative(cls._work(samples), _targets_of(samples, target))
        return float(coef[0]), float(coef[1]), intercept

    @classmethod
    def fit(cls, samples: Sequence[Sample], target: str, *, seed: int = 0) -> "WorkFallback":
        """Fitted on all of ``samples``; its interval from a :data:`CV_FOLDS`-fold cross-validation."""
        from .features import COVERAGE_KEYS

        if len(samples) < 2:
            raise ValueError(f"need at least 2 samples with {target!r} to fit a work fallback, got {len(samples)}")
        samples = sorted(samples, key=lambda s: (s.model_sha256, s.platform_id))
        y = _targets_of(samples, target)
        floor = float(y.min()) / 10.0
        k = min(CV_FOLDS, len(samples))
        fold = _folds(samples, k, seed)
        residuals = np.empty(len(samples))
        for f in range(k):
            held, kept = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
            if len(kept) < 2:
                residuals[held] = 0.0
                continue
            part = cls(target, *cls._coefficients([samples[i] for i in kept], target), floor=floor,
                       log_half_width=0.0)
            residuals[held] = np.abs(np.log(part.predict([samples[i] for i in held]) / y[held]))
        peaks = _matrix(samples, COVERAGE_KEYS).max(axis=0)
        return cls(target, *cls._coefficients(samples, target), floor=floor,
                   log_half_width=_conformal_quantile(residuals, INTERVAL_LEVEL), n_train=len(samples),
                   training_max={key: float(v) for key, v in zip(COVERAGE_KEYS, peaks)})

    def predict(self, items: Sequence[FeaturesLike]) -> np.ndarray:
        work = self._work(items)
        return np.maximum(self.macs_coef * work[:, 0] + self.bytes_coef * work[:, 1] + self.intercept, self.floor)

    def to_dict(self) -> Dict[str, Any]:
        return {"target": self.target, "macs_coef": self.macs_coef, "bytes_coef": self.bytes_coef,
                "intercept": self.intercept, "floor": self.floor, "log_half_width": self.log_half_width,
                "interval_level": self.interval_level, "n_train": self.n_train,
                "training_max": dict(self.training_max)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WorkFallback":
        return cls(target=str(data["target"]), macs_coef=float(data["macs_coef"]),
                   bytes_coef=float(data["bytes_coef"]), intercept=float(data["intercept"]),
                   floor=float(data["floor"]), log_half_width=float(data["log_half_width"]),
                   interval_level=float(data.get("interval_level", INTERVAL_LEVEL)),
                   n_train=int(data.get("n_train", 0)),
                   training_max={str(k): float(v) for k, v in (data.get("training_max") or {}).items()})


def work_fallback_report(train: Sequence[Sample], test: Sequence[Sample], samples: Sequence[Sample],
                         target: str, *, seed: int = 0) -> Dict[str, Any]:
    """``metrics["work_fallback"]``: ``model`` (:class:`WorkFallback` on all ``samples``, what serving
    loads) and ``random_split`` (one fitted on ``train``, scored on ``test``: how good the fallback is)."""
    report: Dict[str, Any] = {"model": WorkFallback.fit(samples, target, seed=seed).to_dict()}
    if len(train) >= 2 and test:
        report["random_split"] = evaluate(WorkFallback.fit(train, target, seed=seed).predict(test),
                                          _targets_of(test, target))
    return report
