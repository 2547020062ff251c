"""Model-level predictors: one LightGBM regressor per (platform, target), with baselines.

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

Baselines, trained and evaluated on the same split as the predictor:

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
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .dataset import TARGETS, Sample, fingerprint
from .features import FEATURE_SCHEMA_VERSION, ModelFeatures, feature_columns, feature_vector
from .metrics import evaluate, noise_ceiling

__all__ = [
    "FEATURE_SETS",
    "INTERVAL_LEVEL",
    "CV_FOLDS",
    "NUM_BOOST_ROUND",
    "MIN_TRAIN_SAMPLES",
    "Predictor",
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
]

log = logging.getLogger(__name__)

FEATURE_SETS = ("full", "opcount")
#: Nominal coverage of the prediction interval.
INTERVAL_LEVEL = 0.9
#: Folds of the cross-validation whose out-of-fold residuals set the interval.
CV_FOLDS = 5
NUM_BOOST_ROUND = 300
#: The feature each target's :class:`LogLogPrior` scales with.
PRIOR_FEATURE = {"latency_ms": "macs", "energy_mj": "macs", "peak_rss_bytes": "param_bytes"}
#: Fewer samples than this for a (platform, target) and :func:`train_all` skips it.
MIN_TRAIN_SAMPLES = 10

MapFn = Callable[[Callable[[Any], Any], Sequence[Any]], List[Any]]
ProgressFn = Callable[[int, int], None]
FeaturesLike = Any  # a Sample, a ModelFeatures, or a flat feature mapping


def _lgb() -> Any:
    try:
        import lightgbm
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("training predictors needs LightGBM: pip install 'fleetmeter[modeler]'") from exc
    return lightgbm


def _feature_dict(item: FeaturesLike) -> Mapping[str, float]:
    if isinstance(item, Sample):
        return item.features
    if isinstance(item, ModelFeatures):
        return item.model
    return item


def _targets_of(samples: Sequence[Sample], target: str) -> np.ndarray:
    values = [s.values.get(target) for s in samples]
    if any(v is None or not v > 0 for v in values):
        raise ValueError(f"every sample needs a positive {target!r} (filter with samples_with(target))")
    return np.asarray(values, dtype=float)


def samples_with(samples: Iterable[Sample], target: str) -> List[Sample]:
    """The samples that have a measured ``target``."""
    return [s for s in samples if s.values.get(target) is not None]


# ------------------------------------------------------------------ splits


def _order_key(sample: Sample, seed: int, salt: str = "") -> str:
    """A position that depends only on the sample's identity and the seed."""
    return hashlib.sha256(f"{salt}/{int(seed)}/{sample.model_sha256}/{sample.platform_id}".encode()).hexdigest()


def split_random(samples: Sequence[Sample], seed: int, test_frac: float = 0.2) -> Tuple[List[Sample], List[Sample]]:
    """``(train, test)``: ``round(n * test_frac)`` samples (at least 1) chosen by seed for test.

    The choice hashes each sample's (model, platform) with the seed, so it
    does not depend on the order of ``samples`` or on any library's random
    stream. Both lists keep the input order.
    """
    if not 0 < test_frac < 1:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac}")
    if len(samples) < 2:
        raise ValueError(f"need at least 2 samples to split, got {len(samples)}")
    n_test = min(len(samples) - 1, max(1, round(len(samples) * test_frac)))
    ranked = sorted(range(len(samples)), key=lambda i: _order_key(samples[i], seed, "split"))
    test_idx = set(ranked[:n_test])
    train = [s for i, s in enumerate(samples) if i not in test_idx]
    test = [s for i, s in enumerate(samples) if i in test_idx]
    return train, test


def split_leave_family_out(samples: Sequence[Sample]) -> Iterator[Tuple[str, List[Sample], List[Sample]]]:
    """``(family, train, test)`` for each family (sorted): test is that family, train the rest.

    Samples without a family (``""``) are never held out; they are always
    in train. A family that is all there is yields no fold (nothing to train on).
    """
    families = sorted({s.family for s in samples if s.family})
    for family in families:
        test = [s for s in samples if s.family == family]
        train = [s for s in samples if s.family != family]
        if train:
            yield family, train, test


def _folds(samples: Sequence[Sample], k: int, seed: int) -> np.ndarray:
    """Fold index of each sample: ranked by identity hash, dealt round-robin."""
    ranked = sorted(range(len(samples)), key=lambda i: _order_key(samples[i], seed, "cv"))
    fold = np.empty(len(samples), dtype=int)
    for position, i in enumerate(ranked):
        fold[i] = position % k
    return fold


# ---------------------------------------------------------------- learners


def lgbm_params(n_samples: int, seed: int) -> Dict[str, Any]:
    """LightGBM parameters for ``n_samples`` training models (see the module docstring)."""
    return {
        "objective": "regression",
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_data_in_leaf": max(2, min(20, n_samples // 10)),
        "min_sum_hessian_in_leaf": 0.0,
        "min_data_in_bin": 1,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": 1,
        "seed": int(seed),
        "verbosity": -1,
    }


def select_columns(samples: Sequence[FeaturesLike], feature_set: str = "full") -> List[str]:
    """The feature columns of ``feature_set`` over ``samples`` (sorted)."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature_set must be one of {FEATURE_SETS}, got {feature_set!r}")
    columns = feature_columns([_feature_dict(s) for s in samples])
    if feature_set == "opcount":
        columns = [c for c in columns if c.startswith("count:") or c == "node_count"]
    return columns


def _matrix(items: Sequence[FeaturesLike], columns: Sequence[str]) -> np.ndarray:
    return np.asarray([feature_vector(_feature_dict(x), columns) for x in items], dtype=float).reshape(
        len(items), len(columns))


def _fit_booster(x: np.ndarray, y_log: np.ndarray, columns: Sequence[str], params: Mapping[str, Any],
                 rounds: int, init_score: Optional[np.ndarray] = None) -> Any:
    lgb = _lgb()
    data = lgb.Dataset(x, label=y_log, init_score=init_score, feature_name=_booster_feature_names(columns),
                       params={"min_data_in_bin": params["min_data_in_bin"], "verbosity": -1},
                       free_raw_data=True)
    return lgb.train(dict(params), data, num_boost_round=rounds)


def _booster_feature_names(columns: Sequence[str]) -> List[str]:
    """Column names LightGBM accepts (no JSON special characters: ``count:conv2d`` -> ``count_conv2d``), unique.

    Only for reading ``model.txt``; predictions go by column position.
    """
    names: List[str] = []
    seen: set = set()
    for i, column in enumerate(columns):
        name = "".join(c if c.isalnum() or c in "_-." else "_" for c in column)
        if name in seen:
            name = f"{name}__{i}"
        seen.add(name)
        names.append(name)
    return names


def _conformal_quantile(residuals: np.ndarray, level: float) -> float:
    """The ``ceil((n + 1) * level)``-th smallest residual (the largest if that is past n)."""
    r = np.sort(np.asarray(residuals, dtype=float))
    if r.size == 0:
        return math.inf
    k = math.ceil((r.size + 1) * level)
    return float(r[min(k, r.size) - 1])


@dataclass(frozen=True)
class LogLogPrior:
    """``log(target) = slope * log(1 + x[feature]) + intercept``: where boosting starts from."""

    feature: str
    slope: float
    intercept: float

    @classmethod
    def fit(cls, samples: Sequence[FeaturesLike], y_log: np.ndarray, feature: str) -> "LogLogPrior":
        z = np.log1p(np.maximum(_matrix(samples, [feature])[:, 0], 0.0))
        design = np.column_stack([z, np.ones_like(z)])
        (slope, intercept), *_ = np.linalg.lstsq(design, y_log, rcond=None)
        return cls(feature=feature, slope=float(slope), intercept=float(intercept))

    def log_predict(self, items: Sequence[FeaturesLike]) -> np.ndarray:
        z = np.log1p(np.maximum(_matrix(items, [self.feature])[:, 0], 0.0))
        return self.slope * z + self.intercept

    def to_dict(self) -> Dict[str, Any]:
        return {"feature": self.feature, "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LogLogPrior":
        return cls(feature=str(data["feature"]), slope=float(data["slope"]), intercept=float(data["intercept"]))


@dataclass
class Predictor:
    """A trained model-level regressor for one target (the platform is the registry's business).

    ``exp(booster(x) + prior(x))`` is the prediction: ``booster`` is a
    ``lightgbm.Booster`` on ``columns`` fitted to ``log(target)`` minus the
    ``prior`` (``None`` for the op-count baseline, which boosts from the
    mean). ``interval_log`` is the half-width ``q`` of the
    :data:`INTERVAL_LEVEL` interval in log space (``None`` if not
    calibrated). ``n_train`` models went into it.
    """

    target: str
    feature_set: str
    columns: Tuple[str, ...]
    booster: Any = field(repr=False)
    prior: Optional[LogLogPrior] = None
    interval_log: Optional[float] = None
    interval_level: float = INTERVAL_LEVEL
    n_train: int = 0
    seed: int = 0
    feature_schema_version: int = FEATURE_SCHEMA_VERSION
    params: Dict[str, Any] = field(default_factory=dict, repr=False)

    def log_predict(self, items: Sequence[FeaturesLike]) -> np.ndarray:
        """``log`` of the predicted targets."""
        if not len(items):
            return np.zeros(0)
        # One thread for small inputs: LightGBM's OpenMP start-up costs ~1-4 ms a call, 40x the
        # prediction of one row (what a Predict RPC or a search loop asks for).
        out = self.booster.predict(_matrix(items, self.columns), num_threads=1 if len(items) < 2048 else 0)
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
        """LightGBM's own text format (what the registry writes as ``model.txt``)."""
        return self.booster.model_to_string()

    def config(self) -> Dict[str, Any]:
        """Everything but the booster, JSON-ready (the registry's manifest carries it)."""
        return {
            "target": self.target, "feature_set": self.feature_set, "columns": list(self.columns),
            "prior": self.prior.to_dict() if self.prior else None,
            "interval_log": self.interval_log, "interval_level": self.interval_level, "n_train": self.n_train,
            "seed": self.seed, "feature_schema_version": self.feature_schema_version, "params": dict(self.params),
        }


def _fit(samples: Sequence[Sample], x: np.ndarray, y_log: np.ndarray, columns: Sequence[str],
         prior_feature: Optional[str], seed: int, rounds: int) -> Tuple[Any, Optional[LogLogPrior]]:
    prior = LogLogPrior.fit(samples, y_log, prior_feature) if prior_feature else None
    init = prior.log_predict(samples) if prior else None
    booster = _fit_booster(x, y_log, columns, lgbm_params(len(samples), seed), rounds, init)
    return booster, prior


def train_predictor(
    samples: Sequence[Sample],
    target: str,
    *,
    feature_set: str = "full",
    seed: int = 0,
    calibrate: bool = True,
    rounds: int = NUM_BOOST_ROUND,
) -> Predictor:
    """A :class:`Predictor` of ``target`` fitted on all of ``samples`` (each must have ``target``).

    The result depends on the samples and the seed, not on their order.

    ``feature_set="full"`` boosts from the target's :class:`LogLogPrior`;
    ``"opcount"`` uses op counts only and no prior. With ``calibrate`` (the
    default) a :data:`CV_FOLDS`-fold cross-validation first sets the
    interval from out-of-fold residuals (see the module docstring); that
    costs ``CV_FOLDS`` extra fits.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
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
    prior_feature = PRIOR_FEATURE[target] if feature_set == "full" else None
    interval_log: Optional[float] = None
    if calibrate:
        k = min(CV_FOLDS, len(samples))
        fold = _folds(samples, k, seed)
        oof = np.empty(len(samples))
        for f in range(k):
            held = np.flatnonzero(fold == f)
            kept = np.flatnonzero(fold != f)
            booster, prior = _fit([samples[i] for i in kept], x[kept], y_log[kept], columns, prior_feature, seed,
                                  rounds)
            held_samples = [samples[i] for i in held]
            oof[held] = booster.predict(x[held]) + (prior.log_predict(held_samples) if prior else 0.0)
        interval_log = _conformal_quantile(np.abs(oof - y_log), INTERVAL_LEVEL)
    booster, prior = _fit(samples, x, y_log, columns, prior_feature, seed, rounds)
    return Predictor(target=target, feature_set=feature_set, columns=tuple(columns), booster=booster, prior=prior,
                     interval_log=interval_log, n_train=len(samples), seed=seed,
                     params=lgbm_params(len(samples), seed))


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


# -------------------------------------------------------------- evaluation


def _split_predictions(train: Sequence[Sample], test: Sequence[Sample], target: str, seed: int
                       ) -> Dict[str, Any]:
    predictor = train_predictor(train, target, feature_set="full", seed=seed, calibrate=True)
    pred, low, high = predictor.predict_interval(test)
    opcount = train_predictor(train, target, feature_set="opcount", seed=seed, calibrate=False)
    flops = FlopsLinear.fit(train, target)
    return {
        "true": _targets_of(test, target), "predictor": pred, "low": low, "high": high,
        "opcount_lgbm": opcount.predict(test), "flops_linear": flops.predict(test),
        "interval_log": predictor.interval_log,
    }


def _coverage(true: np.ndarray, low: np.ndarray, high: np.ndarray) -> Optional[float]:
    if true.size == 0 or np.isnan(low).any():
        return None
    return float(np.mean((true >= low * (1 - 1e-12)) & (true <= high * (1 + 1e-12))))


def scored_with_interval(parts: Mapping[str, Any]) -> Dict[str, Any]:
    """:func:`~fleetmeter.modeler.metrics.evaluate` of ``parts["predictor"]`` against ``parts["true"]``,
    plus the coverage of ``[parts["low"], parts["high"]]`` (shared by the model- and kernel-level reports)."""
    true = parts["true"]
    scored = evaluate(parts["predictor"], true)
    scored["interval_coverage"] = _coverage(true, parts["low"], parts["high"])
    scored["interval_level"] = INTERVAL_LEVEL
    return scored


def _report(parts: Mapping[str, Any], n_train: int) -> Dict[str, Any]:
    true = parts["true"]
    return {
        "n_train": n_train,
        "n_test": int(true.size),
        "predictor": scored_with_interval(parts),
        "opcount_lgbm": evaluate(parts["opcount_lgbm"], true),
        "flops_linear": evaluate(parts["flops_linear"], true),
    }


def evaluate_split(train: Sequence[Sample], test: Sequence[Sample], target: str, *, seed: int = 0
                   ) -> Dict[str, Any]:
    """Metrics of the predictor and both baselines, trained on ``train``, scored on ``test``.

    ``{"n_train", "n_test", "predictor": {acc_5, acc_10, mape, rmspe,
    spearman, n, interval_coverage, interval_level, interval_log},
    "opcount_lgbm": {...}, "flops_linear": {...}}``; ``interval_coverage`` is
    measured on ``test``, which none of the three saw.
    """
    parts = _split_predictions(train, test, target, seed)
    report = _report(parts, len(train))
    report["predictor"]["interval_log"] = parts["interval_log"]
    return report


def evaluate_leave_family_out(samples: Sequence[Sample], target: str, *, seed: int = 0) -> Dict[str, Any]:
    """Leave-one-family-out: per-family reports and ``pooled`` metrics over all held-out models.

    ``pooled`` scores every model of a named family once, predicted by
    models trained without its family; ``None`` when there are fewer than
    two families.
    """
    folds: Dict[str, Any] = {}
    pooled: Dict[str, List[np.ndarray]] = {}
    n_train = 0
    for family, train, test in split_leave_family_out(samples):
        if len(train) < 2:
            continue
        parts = _split_predictions(train, test, target, seed)
        folds[family] = _report(parts, len(train))
        for key in ("true", "predictor", "low", "high", "opcount_lgbm", "flops_linear"):
            pooled.setdefault(key, []).append(np.asarray(parts[key], dtype=float))
        n_train = max(n_train, len(train))
    if not folds:
        return {"folds": {}, "pooled": None}
    joined = {k: np.concatenate(v) for k, v in pooled.items()}
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


def run_train_task(task: TrainTask) -> TrainResult:
    """Evaluate, then train the predictor of one (platform, target) (a Ray task body)."""
    samples = list(task.samples)
    fp = fingerprint(samples)
    ceiling = noise_ceiling({s.model_sha256: s.repeats.get(task.target, ()) for s in samples})
    metrics: Dict[str, Any] = {"noise_ceiling": ceiling}
    train, test = split_random(samples, task.seed)
    metrics["random_split"] = evaluate_split(train, test, task.target, seed=task.seed)
    if task.leave_family_out:
        metrics["leave_family_out"] = evaluate_leave_family_out(samples, task.target, seed=task.seed)
    granularity, because, kernel_predictor = "model", "no kernel-level data (no operator profiles)", None
    if task.kernel_samples and task.target == "latency_ms":
        granularity, because = _compare_kernel_level(task, samples, metrics)
    served = metrics["random_split"]["kernel" if granularity == "kernel" else "predictor"]
    if granularity == "kernel":
        from .kernels import train_kernel_predictor

        kernel_predictor = train_kernel_predictor(list(task.kernel_samples), seed=task.seed)
        interval_log = kernel_predictor.interval_log
        level = kernel_predictor.interval_level
        predictor = None
    else:
        predictor = train_predictor(samples, task.target, seed=task.seed)
        interval_log, level = predictor.interval_log, predictor.interval_level
    metrics["interval"] = {
        "level": level,
        "log_half_width": interval_log,
        "factor": math.exp(interval_log) if interval_log is not None else None,
        "coverage_on_held_out": served.get("interval_coverage"),
    }
    log.info("%s/%s: %s-level serves (%s)", task.platform_id, task.target, granularity, because)
    return TrainResult(platform_id=task.platform_id, target=task.target, predictor=predictor, metrics=metrics,
                       fingerprint=fp, n_samples=len(samples), granularity=granularity, chosen_because=because,
                       kernel_predictor=kernel_predictor)


def _better(kernel: Mapping[str, Any], model: Mapping[str, Any]) -> bool:
    """Kernel-level wins on a higher ±10 % accuracy, ties broken by a lower MAPE."""
    k10, m10 = kernel.get("acc_10") or 0.0, model.get("acc_10") or 0.0
    if k10 != m10:
        return k10 > m10
    return (kernel.get("mape") or math.inf) < (model.get("mape") or math.inf)


def _compare_kernel_level(task: TrainTask, samples: Sequence[Sample], metrics: Dict[str, Any]) -> Tuple[str, str]:
    """Evaluate the kernel-level predictor on the same splits; the granularity that serves, and why.

    Both are scored on the same held-out models: the hash-based splits put a
    model on the same side whatever else is in the set, and when not every
    model has a profile the model-level predictor is re-evaluated on the
    profiled ones (``random_split.model_on_profiled``).
    """
    from .kernels import evaluate_kernel_leave_family_out, evaluate_kernel_split

    kernel = list(task.kernel_samples)
    if len(kernel) < MIN_TRAIN_SAMPLES:
        return "model", f"only {len(kernel)} profiled models, need {MIN_TRAIN_SAMPLES} for kernel-level"
    k_train, k_test = split_random(kernel, task.seed)
    if not k_test or len(k_train) < 2:
        return "model", "too few profiled models for a kernel-level evaluation"
    report = evaluate_kernel_split(k_train, k_test, seed=task.seed)
    rnd = metrics["random_split"]
    rnd["kernel"] = {**report["predictor"], "kernel_time_share": report["kernel_time_share"],
                     "matched_share": report["matched_share"], "unseen_kernel_types": report["unseen_kernel_types"]}
    profiled = {s.model_sha256 for s in kernel}
    reference = rnd["predictor"]
    if profiled != {s.model_sha256 for s in samples}:
        subset = [s for s in samples if s.model_sha256 in profiled]
        m_train, m_test = split_random(subset, task.seed)
        reference = evaluate_split(m_train, m_test, task.target, seed=task.seed)["predictor"] if m_test else {}
        rnd["model_on_profiled"] = reference
    if task.leave_family_out and metrics.get("leave_family_out", {}).get("pooled"):
        pooled = evaluate_kernel_leave_family_out(kernel, seed=task.seed)["pooled"]
        if pooled:
            metrics["leave_family_out"]["pooled"]["kernel"] = pooled["predictor"]
    k, m = rnd["kernel"], reference
    where = f"random split, {k.get('n')} held-out models"
    if _better(k, m):
        return "kernel", (f"kernel-level ±10 % {k.get('acc_10'):.3f} / MAPE {k.get('mape'):.3f} beat model-level "
                          f"{m.get('acc_10') or 0:.3f} / {m.get('mape') or math.inf:.3f} ({where})")
    return "model", (f"model-level ±10 % {m.get('acc_10') or 0:.3f} / MAPE {m.get('mape') or math.inf:.3f} at least "
                     f"matched kernel-level {k.get('acc_10') or 0:.3f} / {k.get('mape') or math.inf:.3f} ({where})")


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
