"""Kernel-level latency predictors, as nn-Meter does: one regressor per (fused) kernel type.

What is learned. A model's latency on one platform is predicted as the sum
of its kernels' predicted times plus a per-inference overhead::

    latency_ms = sum_k f_type(k)(features(k)) + intercept_ms + per_kernel_ms * kernel_count

The kernels are ``ModelFeatures.kernels`` of
:func:`fleetmeter.modeler.features.extract_features` (fused as
:func:`~fleetmeter.modeler.features.fuse_activations` fuses, layout ops
left out), and ``features(k)`` is :meth:`NodeFeatures.numeric` plus
``work`` (:func:`kernel_work`), so a prediction needs the model file only.
The training targets come from onnxruntime's per-node profiles
(:mod:`fleetmeter.agent.profile`, stored with a measurement when its sweep
set ``profile_operators``).

From profile nodes to our kernels: :func:`~fleetmeter.modeler.kernel_match.match_profile` in
:mod:`fleetmeter.modeler.kernel_match` (with
:class:`~fleetmeter.modeler.kernel_match.KernelSample`,
:func:`~fleetmeter.modeler.kernel_match.load_kernel_samples` and the rest of the profile side).

Per kernel type (:class:`KernelPredictor`): with at least
:data:`MIN_KERNEL_SAMPLES` timed kernels, a LightGBM regressor on
``log(time_ms)`` (:func:`fleetmeter.modeler.learners.lgbm_params`, the same
small-data parameters as the model-level predictor) boosting from a
log-log prior on ``work`` (:class:`~fleetmeter.modeler.learners.LogLogPrior`);
with fewer (``"rate"``), a global log-log curve of time over ``work``
fitted on every timed kernel, shifted by the type's median log residual;
a type never seen in training (``"global"``, listed by
:meth:`KernelPredictor.unseen_kernel_types`) gets that global curve alone.

Overhead: ``latency_ms - sum of kernel predictions`` over the training
models, fitted as ``intercept_ms + per_kernel_ms * kernel_count`` by
iteratively reweighted least absolute *relative* deviations (robust to a
few odd models, scored like the metrics). It is what the profile does not
see (session and copy costs, unmatched nodes) minus the profiler's own
inflation of per-node times.

Interval, splits and metrics are the model-level ones
(:mod:`fleetmeter.modeler.learners`, :mod:`fleetmeter.modeler.evaluation`): a cross-conformal interval from
out-of-fold ``|log(pred / true)|`` at the model level, the same hash-based
:func:`~fleetmeter.modeler.learners.split_random` and
:func:`~fleetmeter.modeler.learners.split_leave_family_out` (they take
:class:`KernelSample` as they take ``Sample``: only ``model_sha256``,
``platform_id`` and ``family`` are read), and the same report shape. The
same samples give the same predictor, in whatever order they come.

Persistence: :meth:`KernelPredictor.config` (JSON-ready) and
:meth:`KernelPredictor.model_texts` (LightGBM text per kernel type, no
pickles) rebuild it exactly with :meth:`KernelPredictor.from_parts`.

LightGBM is imported on first use (``pip install 'fleetmeter[modeler]'``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np

from .features import FEATURE_SCHEMA_VERSION, KERNEL_FEATURE_KEYS, ModelFeatures
from .kernel_match import KernelSample, kernel_work
from .learners import (CV_FOLDS, INTERVAL_LEVEL, LogLogPrior, PredictorBase, _booster_feature_names,
                       _conformal_quantile, _folds, _lgb, lgbm_params, scored_with_interval, split_leave_family_out)

__all__ = [
    "KERNEL_CONFIG_FORMAT",
    "KERNEL_CONFIG_VERSION",
    "KERNEL_COLUMNS",
    "MIN_KERNEL_SAMPLES",
    "KERNEL_ROUNDS",
    "KernelPredictor",
    "train_kernel_predictor",
    "evaluate_kernel_split",
    "evaluate_kernel_leave_family_out",
]

KERNEL_CONFIG_FORMAT = "fleetmeter.kernel_predictor"
#: Bump when the meaning of :meth:`KernelPredictor.config` changes.
KERNEL_CONFIG_VERSION = 1
#: The per-kernel feature columns: :data:`KERNEL_FEATURE_KEYS` then ``work``.
KERNEL_COLUMNS: Tuple[str, ...] = tuple(KERNEL_FEATURE_KEYS) + ("work",)
#: Fewer timed kernels of a type than this and it gets the shifted global curve instead of LightGBM.
MIN_KERNEL_SAMPLES = 10
#: Boosting rounds per kernel type.
KERNEL_ROUNDS = 200

KernelItem = Union[ModelFeatures, "KernelSample"]


# ---------------------------------------------------------------- predictor


def _kernels_of(item: KernelItem) -> List[Tuple[str, Mapping[str, float]]]:
    if isinstance(item, KernelSample):
        return [(t, f) for t, f, _ in item.kernels]
    if isinstance(item, ModelFeatures):
        return [(n.kernel_type, n.numeric()) for n in item.kernels]
    raise TypeError(f"expected ModelFeatures or KernelSample, got {type(item).__name__}")


def _row(features: Mapping[str, float]) -> List[float]:
    return [float(features.get(c, 0.0)) for c in KERNEL_FEATURE_KEYS] + [kernel_work(features)]


def _work_dicts(rows: np.ndarray) -> List[Dict[str, float]]:
    return [{"work": float(w)} for w in rows[:, -1]]


@dataclass
class _TypeModel:
    """One kernel type's regressor: ``"lgbm"`` (prior + booster) or ``"rate"`` (global curve + offset)."""

    kind: str
    n_obs: int
    prior: Optional[LogLogPrior] = None
    booster: Any = field(default=None, repr=False)
    offset_log: float = 0.0


@dataclass
class KernelPredictor(PredictorBase):
    """Kernel-level latency predictor for one platform (see the module docstring).

    ``types`` maps a kernel type to its regressor; ``global_prior`` is the
    log-log curve of kernel time over ``work`` for unseen types;
    ``intercept_ms + per_kernel_ms * kernel_count`` is the overhead;
    predictions are floored at ``floor_ms``. ``interval_log`` is the
    half-width of the :data:`INTERVAL_LEVEL` interval in log space
    (``None`` if not calibrated); the training record's fields are
    :class:`~fleetmeter.modeler.learners.PredictorBase`'s.
    """

    types: Dict[str, _TypeModel]
    global_prior: LogLogPrior
    intercept_ms: float
    per_kernel_ms: float
    floor_ms: float
    kernel_scale: float = 1.0

    def kernel_predictions(self, items: Sequence[KernelItem]) -> List[np.ndarray]:
        """Predicted time (ms) of every kernel of every item, in ``ModelFeatures.kernels`` order."""
        per_item = [_kernels_of(item) for item in items]
        by_type: Dict[str, List[Tuple[int, int]]] = {}
        rows: Dict[str, List[List[float]]] = {}
        for a, kernels in enumerate(per_item):
            for b, (kind, feats) in enumerate(kernels):
                by_type.setdefault(kind, []).append((a, b))
                rows.setdefault(kind, []).append(_row(feats))
        out = [np.zeros(len(k)) for k in per_item]
        for kind in sorted(by_type):
            x = np.asarray(rows[kind], dtype=float).reshape(-1, len(KERNEL_COLUMNS))
            values = np.exp(self._log_type(kind, x))
            for (a, b), v in zip(by_type[kind], values):
                out[a][b] = v
        return out

    def _log_type(self, kind: str, x: np.ndarray) -> np.ndarray:
        model = self.types.get(kind)
        work = _work_dicts(x)
        if model is None:
            return self.global_prior.log_predict(work)
        if model.kind == "lgbm":
            return np.asarray(model.booster.predict(x), dtype=float) + model.prior.log_predict(work)
        return self.global_prior.log_predict(work) + model.offset_log

    def predict(self, items: Sequence[KernelItem]) -> np.ndarray:
        """Predicted latency (ms) of each ``ModelFeatures`` (or :class:`KernelSample`)."""
        if not len(items):
            return np.zeros(0)
        sums = np.asarray([k.sum() for k in self.kernel_predictions(items)], dtype=float)
        counts = np.asarray([len(_kernels_of(item)) for item in items], dtype=float)
        return np.maximum(self.kernel_scale * sums + self.intercept_ms + self.per_kernel_ms * counts, self.floor_ms)

    def predict_interval(self, items: Sequence[KernelItem]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(prediction, low, high)``; ``low``/``high`` are ``nan`` without a calibrated interval."""
        pred = self.predict(items)
        if self.interval_log is None:
            nan = np.full_like(pred, np.nan)
            return pred, nan, nan
        factor = math.exp(self.interval_log)
        return pred, pred / factor, pred * factor

    def unseen_kernel_types(self, model_features: KernelItem) -> List[str]:
        """Kernel types of the model that training never saw (predicted by the global curve), sorted."""
        return sorted({kind for kind, _ in _kernels_of(model_features) if kind not in self.types})

    def config(self) -> Dict[str, Any]:
        """Everything but the boosters, JSON-ready (see :meth:`model_texts`)."""
        return {
            "format": KERNEL_CONFIG_FORMAT,
            "version": KERNEL_CONFIG_VERSION,
            "feature_schema_version": self.feature_schema_version,
            "columns": list(KERNEL_COLUMNS),
            "types": {kind: {"kind": m.kind, "n_obs": m.n_obs, "prior": m.prior.to_dict() if m.prior else None,
                             "offset_log": m.offset_log} for kind, m in sorted(self.types.items())},
            "global_prior": self.global_prior.to_dict(),
            "overhead": {"kernel_scale": self.kernel_scale, "intercept_ms": self.intercept_ms,
                         "per_kernel_ms": self.per_kernel_ms},
            "floor_ms": self.floor_ms,
            "interval_log": self.interval_log,
            "interval_level": self.interval_level,
            "n_train": self.n_train,
            "seed": self.seed,
            "params": dict(self.params),
        }

    def model_texts(self) -> Dict[str, str]:
        """LightGBM's text model per kernel type that has one (``"lgbm"`` types)."""
        return {kind: m.booster.model_to_string() for kind, m in sorted(self.types.items()) if m.kind == "lgbm"}

    @classmethod
    def from_parts(cls, config: Mapping[str, Any], texts: Mapping[str, str]) -> "KernelPredictor":
        """The predictor :meth:`config` and :meth:`model_texts` describe (same predictions).

        Raises ``ValueError`` for a config of another format, version or
        feature schema, or a missing model text.
        """
        if config.get("format") != KERNEL_CONFIG_FORMAT or config.get("version") != KERNEL_CONFIG_VERSION:
            raise ValueError(f"not a version-{KERNEL_CONFIG_VERSION} {KERNEL_CONFIG_FORMAT} config: "
                             f"{config.get('format')!r} version {config.get('version')!r}")
        if config.get("feature_schema_version") != FEATURE_SCHEMA_VERSION or tuple(
                config.get("columns") or ()) != KERNEL_COLUMNS:
            raise ValueError(f"kernel predictor built on feature schema {config.get('feature_schema_version')}, "
                             f"this fleetmeter extracts schema {FEATURE_SCHEMA_VERSION}: retrain it")
        lgb = _lgb()
        types: Dict[str, _TypeModel] = {}
        for kind, entry in config["types"].items():
            booster = None
            if entry["kind"] == "lgbm":
                if kind not in texts:
                    raise ValueError(f"no model text for kernel type {kind!r}")
                booster = lgb.Booster(model_str=texts[kind])
            types[kind] = _TypeModel(kind=entry["kind"], n_obs=int(entry["n_obs"]),
                                     prior=LogLogPrior.from_dict(entry["prior"]) if entry.get("prior") else None,
                                     booster=booster, offset_log=float(entry.get("offset_log", 0.0)))
        overhead = config["overhead"]
        return cls(types=types, global_prior=LogLogPrior.from_dict(config["global_prior"]),
                   intercept_ms=float(overhead["intercept_ms"]), per_kernel_ms=float(overhead["per_kernel_ms"]),
                   kernel_scale=float(overhead["kernel_scale"]),
                   floor_ms=float(config["floor_ms"]),
                   interval_log=None if config.get("interval_log") is None else float(config["interval_log"]),
                   interval_level=float(config.get("interval_level", INTERVAL_LEVEL)),
                   n_train=int(config.get("n_train", 0)), seed=int(config.get("seed", 0)),
                   feature_schema_version=int(config["feature_schema_version"]),
                   params=dict(config.get("params") or {}))


# ------------------------------------------------------------------ training


def _canonical(samples: Iterable[KernelSample]) -> List[KernelSample]:
    return sorted(samples, key=lambda s: (s.model_sha256, s.platform_id))


def _fit_overhead(latency: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> Tuple[float, float, float]:
    """``(kernel_scale, intercept_ms, per_kernel_ms)`` minimising the summed absolute relative error (IRLS).

    Falls back to a scale of 1 (and then to a constant overhead) where the
    data cannot pin a coefficient down or the scale comes out non-positive.
    """
    columns = [sums, np.ones_like(counts), counts]
    for keep in ((0, 1, 2), (1, 2), (1,)):
        if 2 in keep and np.ptp(counts) == 0:
            continue
        design = np.column_stack([columns[i] for i in keep])
        target = latency if 0 in keep else latency - sums
        weights = 1.0 / latency ** 2
        coef = np.zeros(len(keep))
        for _ in range(50):
            sw = np.sqrt(weights)
            coef, *_ = np.linalg.lstsq(design * sw[:, None], target * sw, rcond=None)
            err = np.abs(target - design @ coef) / latency
            weights = 1.0 / (latency ** 2 * np.maximum(err, 1e-6))
        fitted = dict(zip(keep, (float(c) for c in coef)))
        if 0 in keep and not fitted[0] > 0:
            continue
        return fitted.get(0, 1.0), fitted.get(1, 0.0), fitted.get(2, 0.0)
    return 1.0, float(np.median(latency - sums)), 0.0


def _fit(samples: Sequence[KernelSample], seed: int, rounds: int) -> KernelPredictor:
    rows: Dict[str, List[List[float]]] = {}
    ys: Dict[str, List[float]] = {}
    for s in samples:
        for kind, feats, t in s.kernels:
            if t is not None and t > 0 and math.isfinite(t):
                rows.setdefault(kind, []).append(_row(feats))
                ys.setdefault(kind, []).append(math.log(t))
    if not ys:
        raise ValueError("no kernel in these samples has a profiled time: nothing to learn from")
    all_x = np.asarray([r for kind in sorted(rows) for r in rows[kind]], dtype=float)
    all_y = np.asarray([y for kind in sorted(ys) for y in ys[kind]], dtype=float)
    global_prior = LogLogPrior.fit(_work_dicts(all_x), all_y, "work")
    lgb = _lgb()
    names = _booster_feature_names(KERNEL_COLUMNS)
    types: Dict[str, _TypeModel] = {}
    for kind in sorted(rows):
        x = np.asarray(rows[kind], dtype=float)
        y = np.asarray(ys[kind], dtype=float)
        work = _work_dicts(x)
        if len(y) < MIN_KERNEL_SAMPLES:
            offset = float(np.median(y - global_prior.log_predict(work)))
            types[kind] = _TypeModel(kind="rate", n_obs=len(y), offset_log=offset)
            continue
        prior = LogLogPrior.fit(work, y, "work")
        params = lgbm_params(len(y), seed)
        data = lgb.Dataset(x, label=y, init_score=prior.log_predict(work), feature_name=names,
                           params={"min_data_in_bin": params["min_data_in_bin"], "verbosity": -1},
                           free_raw_data=True)
        booster = lgb.train(params, data, num_boost_round=rounds)
        types[kind] = _TypeModel(kind="lgbm", n_obs=len(y), prior=prior, booster=booster)
    latency = np.asarray([s.latency_ms for s in samples], dtype=float)
    partial = KernelPredictor(types=types, global_prior=global_prior, intercept_ms=0.0, per_kernel_ms=0.0,
                              floor_ms=0.0)
    sums = np.asarray([k.sum() for k in partial.kernel_predictions(samples)], dtype=float)
    counts = np.asarray([len(s.kernels) for s in samples], dtype=float)
    partial.kernel_scale, partial.intercept_ms, partial.per_kernel_ms = _fit_overhead(latency, sums, counts)
    partial.floor_ms = float(latency.min()) / 10.0
    partial.n_train, partial.seed = len(samples), int(seed)
    partial.params = {**lgbm_params(0, seed), "min_data_in_leaf": "max(2, min(20, n_obs // 10))",
                      "num_boost_round": rounds, "min_kernel_samples": MIN_KERNEL_SAMPLES}
    return partial


def train_kernel_predictor(samples: Sequence[KernelSample], *, seed: int = 0, calibrate: bool = True,
                           rounds: int = KERNEL_ROUNDS) -> KernelPredictor:
    """Fit a :class:`KernelPredictor` on ``samples`` (one platform's); deterministic in samples and seed.

    With ``calibrate`` (the default) a :data:`CV_FOLDS`-fold cross-validation
    first sets the interval from out-of-fold model-level residuals. Raises
    ``ValueError`` for fewer than 2 samples, non-positive latencies, or no
    profiled kernel time at all.
    """
    if len(samples) < 2:
        raise ValueError(f"need at least 2 kernel samples to train, got {len(samples)}")
    samples = _canonical(samples)
    if any(not (s.latency_ms > 0 and math.isfinite(s.latency_ms)) for s in samples):
        raise ValueError("every kernel sample needs a positive latency_ms")
    interval_log: Optional[float] = None
    if calibrate:
        k = min(CV_FOLDS, len(samples))
        fold = _folds(samples, k, seed)  # type: ignore[arg-type]  # reads model_sha256/platform_id only
        oof = np.empty(len(samples))
        for f in range(k):
            held = np.flatnonzero(fold == f)
            kept = [samples[i] for i in np.flatnonzero(fold != f)]
            oof[held] = _fit(kept, seed, rounds).predict([samples[i] for i in held])
        truth = np.asarray([s.latency_ms for s in samples], dtype=float)
        interval_log = _conformal_quantile(np.abs(np.log(oof / truth)), INTERVAL_LEVEL)
    predictor = _fit(samples, seed, rounds)
    predictor.interval_log = interval_log
    return predictor


# ---------------------------------------------------------------- evaluation


def _share(samples: Sequence[KernelSample], numerator: str, denominator: str) -> Optional[float]:
    ratios = [getattr(s, numerator) / getattr(s, denominator) for s in samples if getattr(s, denominator) > 0]
    return float(statistics.median(ratios)) if ratios else None


def _split_parts(train: Sequence[KernelSample], test: Sequence[KernelSample], seed: int) -> Dict[str, Any]:
    predictor = train_kernel_predictor(train, seed=seed, calibrate=True)
    pred, low, high = predictor.predict_interval(test)
    unseen = sorted({t for s in test for t in predictor.unseen_kernel_types(s)})
    return {"true": np.asarray([s.latency_ms for s in test], dtype=float), "predictor": pred, "low": low,
            "high": high, "interval_log": predictor.interval_log, "unseen": unseen}


def _report(parts: Mapping[str, Any], n_train: int, samples: Sequence[KernelSample]) -> Dict[str, Any]:
    return {
        "n_train": n_train,
        "n_test": int(parts["true"].size),
        "predictor": scored_with_interval(parts),
        "kernel_time_share": _share(samples, "profiled_ms", "latency_ms"),
        "matched_share": _share(samples, "matched_ms", "profiled_ms"),
        "unseen_kernel_types": list(parts["unseen"]),
    }


def evaluate_kernel_split(train: Sequence[KernelSample], test: Sequence[KernelSample], *, seed: int = 0
                          ) -> Dict[str, Any]:
    """Metrics of a kernel predictor trained on ``train``, scored on ``test``.

    ``{"n_train", "n_test", "predictor": {acc_5, acc_10, mape, rmspe,
    spearman, n, interval_coverage, interval_level, interval_log},
    "kernel_time_share", "matched_share", "unseen_kernel_types"}``: the
    ``predictor`` entry has the shape of
    :func:`fleetmeter.modeler.evaluation.evaluate_split`'s, so the two compare
    directly on the same split. ``kernel_time_share`` is the median over all
    the given models of profiled time / measured latency (below 1: overhead
    the profile does not see), ``matched_share`` the median share of
    profiled time attributed to kernels; ``unseen_kernel_types`` are test
    kernel types training never saw.
    """
    if not test:
        raise ValueError("nothing to evaluate on: the test set is empty")
    parts = _split_parts(train, test, seed)
    report = _report(parts, len(train), list(train) + list(test))
    report["predictor"]["interval_log"] = parts["interval_log"]
    return report


def evaluate_kernel_leave_family_out(samples: Sequence[KernelSample], *, seed: int = 0) -> Dict[str, Any]:
    """Leave-one-family-out: ``{"folds": {family: report}, "pooled": report or None}``.

    As :func:`fleetmeter.modeler.evaluation.evaluate_leave_family_out`: each
    family's models predicted by a predictor trained on the other families;
    ``pooled`` scores them all together (``None`` with fewer than two families).
    """
    folds: Dict[str, Any] = {}
    pooled: Dict[str, List[np.ndarray]] = {}
    unseen: Set[str] = set()
    n_train = 0
    for family, train, test in split_leave_family_out(samples):  # type: ignore[arg-type]
        if len(train) < 2:
            continue
        parts = _split_parts(train, test, seed)
        folds[family] = _report(parts, len(train), test)
        for key in ("true", "predictor", "low", "high"):
            pooled.setdefault(key, []).append(np.asarray(parts[key], dtype=float))
        unseen.update(parts["unseen"])
        n_train = max(n_train, len(train))
    if not folds:
        return {"folds": {}, "pooled": None}
    joined: Dict[str, Any] = {k: np.concatenate(v) for k, v in pooled.items()}
    joined["unseen"] = sorted(unseen)
    report = _report(joined, n_train, samples)
    del report["n_train"]
    return {"folds": folds, "pooled": report}
