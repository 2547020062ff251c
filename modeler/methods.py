"""The candidate methods of a model-level predictor, baselines included, and :func:`train_predictor`, which fits one.

Candidates (:data:`METHODS`): ``lgbm`` (below), ``additive`` (:class:`AdditiveCost`, a per-node
additive cost model fitted from whole-model costs), ``additive_lgbm`` (LightGBM on its residual)
and the baselines ``opcount_lgbm`` and ``flops_linear``.
:func:`~fleetmeter.modeler.train.run_train_task` trains every one with a cross-validation and serves
the best out-of-fold ±10 % accuracy (a baseline too, saying so); docs/predictors.md has the ablation.

What is learned. A :class:`~fleetmeter.modeler.predictor.Predictor` maps a model's graph features
(``ModelFeatures.model``, see :mod:`fleetmeter.modeler.features`) to one
target (:data:`~fleetmeter.modeler.dataset.TARGETS`) on one platform. It is
a LightGBM regressor fitted to ``log(target)``, for three reasons: costs
span orders of magnitude across a zoo, so squared error on the raw value
would be dominated by the largest models; a squared error in log space is
(to first order) a squared *relative* error, the quantity every metric we
report (±5 %/±10 % accuracy, MAPE, RMSPE) is about; and ``exp`` of the
prediction is always positive. Trees are invariant to monotone transforms
of the features, so these are used as extracted.

Boosting starts from a log-log prior (:class:`~fleetmeter.modeler.learners.LogLogPrior`): ``log(target)
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

Small-data parameters (:func:`~fleetmeter.modeler.learners.lgbm_params`): a few hundred rounds at a
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

Interval. :meth:`~fleetmeter.modeler.predictor.Predictor.predict_interval` gives ``[pred * exp(-q),
pred * exp(q)]`` where ``q`` is the conformal quantile (level
:data:`INTERVAL_LEVEL`) of the absolute log-residuals ``|log(pred / true)|``
*out of fold*: a :data:`CV_FOLDS`-fold cross-validation on the training
data predicts every training model with a regressor that did not see it
(cross-conformal, "CV+"-style), then the final regressor is fitted on all of
it. The interval is relative (a fixed factor either side), matching errors
that grow with the cost. Its coverage is measured, never assumed:
:func:`~fleetmeter.modeler.evaluation.evaluate_split` reports ``interval_coverage``, the share of *test*
models whose measurement falls inside.

LightGBM is imported on first use (``pip install 'fleetmeter[controller]'``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .dataset import TARGETS, Sample
from .features import feature_columns
from .learners import (CV_FOLDS, INTERVAL_LEVEL, FeaturesLike, LogLogPrior, _booster_feature_names,
                       _conformal_quantile, _feature_dict, _folds, _lgb, _matrix, _targets_of,
                       fit_relative_nonnegative, lgbm_params)
from .metrics import evaluate
from .predictor import Predictor

__all__ = [
    "FEATURE_SETS",
    "NUM_BOOST_ROUND",
    "PRIOR_FEATURE",
    "METHODS",
    "BASELINES",
    "METHOD_KEYS",
    "AdditiveCost",
    "FlopsLinear",
    "additive_columns",
    "prior_from_dict",
    "select_columns",
    "train_predictor",
]

FEATURE_SETS = ("full", "opcount")
NUM_BOOST_ROUND = 300
#: The feature each target's :class:`~fleetmeter.modeler.learners.LogLogPrior` scales with.
PRIOR_FEATURE = {"latency_ms": "macs", "energy_mj": "macs", "peak_rss_bytes": "param_bytes"}

#: Candidate methods of a model-level predictor, baselines included (:mod:`~fleetmeter.modeler.train` chooses).
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



def additive_columns(samples: Sequence[FeaturesLike]) -> List[str]:
    """The additive model's columns: per op type ``count:``, ``macs:``, ``bytes:``, then :data:`ADDITIVE_TOTALS`."""
    columns = [c for c in feature_columns([_feature_dict(s) for s in samples])
               if c.split(":", 1)[0] in ("count", "macs", "bytes") and ":" in c]
    return columns + [c for c in ADDITIVE_TOTALS if c not in columns]


# ------------------------------------------------- bases (a candidate without a booster is its base)


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


# ------------------------------------------------------- fitting one candidate


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
    what :func:`~fleetmeter.modeler.train.run_train_task` chooses by, with the family one).
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
