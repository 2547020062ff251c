"""The work-based fallback serving leans on for what a predictor never saw.

A tree ensemble asked about a model unlike any it saw answers with the nearest training models'
cost. :class:`WorkFallback` costs a model from its work alone (MACs and bytes moved), fitted at
training next to every predictor (:func:`work_fallback_report`, stored in the registry's manifest),
and :mod:`~fleetmeter.modeler.serving` leans on it for an operator, control-flow body, quantized op or
unresolved shape that training never had.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

from .dataset import Sample
from .features import COVERAGE_KEYS
from .learners import (CV_FOLDS, INTERVAL_LEVEL, FeaturesLike, _conformal_quantile, _folds, _matrix, _targets_of,
                       fit_relative_nonnegative)
from .metrics import evaluate

__all__ = ["WorkFallback", "work_fallback_report"]


@dataclass(frozen=True)
class WorkFallback:
    """What serving falls back on for what the predictor does not understand: cost from work.

    ``target = macs_coef * macs + bytes_coef * bytes_moved + intercept`` (``bytes_moved``: weights
    plus activations read and written), fitted on relative error with every coefficient kept >= 0
    (:func:`~fleetmeter.modeler.learners.fit_relative_nonnegative`), floored at a tenth of the smallest training value. ``log_half_width`` is measured: the
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
