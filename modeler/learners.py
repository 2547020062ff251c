"""The learning pieces both predictor levels share (model level: :mod:`.methods`, kernel level:
:mod:`.kernels`): LightGBM and its small-data parameters, identity-hash splits and folds, the log-log
prior, the non-negative fit on relative error, the conformal quantile and interval scoring, and
:class:`PredictorBase`, what every trained predictor records about its training.

Its own module so that ``train`` (which trains the kernel-level predictor as one of its candidates)
and ``kernels`` (which reuses these pieces) do not import each other. LightGBM is imported on first
use (``pip install 'fleetmeter[controller]'``).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from fleetmeter._extras import require

from .dataset import Sample
from .features import FEATURE_SCHEMA_VERSION, ModelFeatures, feature_vector
from .metrics import evaluate

__all__ = ["INTERVAL_LEVEL", "CV_FOLDS", "FeaturesLike", "lgbm_params", "split_random", "split_leave_family_out",
           "LogLogPrior", "fit_relative_nonnegative", "scored_with_interval", "PredictorBase"]

#: Nominal coverage of the prediction interval.
INTERVAL_LEVEL = 0.9
#: Folds of the cross-validation whose out-of-fold residuals set the interval.
CV_FOLDS = 5
FeaturesLike = Any  # a Sample, a ModelFeatures, or a flat feature mapping


def _lgb() -> Any:
    """The ``lightgbm`` module; :class:`~fleetmeter._extras.MissingExtra` (a ``FailedPrecondition``
    naming ``fleetmeter[controller]``) when this install lacks it."""
    return require("lightgbm", "training predictors")


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


def _matrix(items: Sequence[FeaturesLike], columns: Sequence[str]) -> np.ndarray:
    return np.asarray([feature_vector(_feature_dict(x), columns) for x in items], dtype=float).reshape(
        len(items), len(columns))


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
        return {"kind": "loglog", "feature": self.feature, "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LogLogPrior":
        return cls(feature=str(data["feature"]), slope=float(data["slope"]), intercept=float(data["intercept"]))


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


@dataclass(kw_only=True)
class PredictorBase:
    """What every trained predictor (model level and kernel level) records about its training.

    ``interval_log`` is the half-width ``q`` of the ``interval_level``
    prediction interval in log space (``None`` if not calibrated); ``n_train``
    models went into it, with ``seed``, on features of ``feature_schema_version``;
    ``params`` are its LightGBM parameters (empty without a booster). Keyword-only,
    so a subclass lists its own fields first.
    """

    interval_log: Optional[float] = None
    interval_level: float = INTERVAL_LEVEL
    n_train: int = 0
    seed: int = 0
    feature_schema_version: int = FEATURE_SCHEMA_VERSION
    params: Dict[str, Any] = field(default_factory=dict, repr=False)
