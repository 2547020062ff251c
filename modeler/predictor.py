"""The model-level predictor that serves: what :func:`~fleetmeter.modeler.methods.train_predictor` returns,
the registry saves and loads, and serving asks.

A :class:`Predictor` maps a model's graph features (``ModelFeatures.model``) to one target on one
platform: ``exp(booster(x) + log base(x))``, with the base one of the candidate methods' (see
:mod:`~fleetmeter.modeler.methods`, whose :func:`~fleetmeter.modeler.methods.prior_from_dict` rebuilds
it from :meth:`Predictor.config`). It only predicts; fitting is :mod:`~fleetmeter.modeler.methods`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from .learners import FeaturesLike, PredictorBase, _matrix

__all__ = ["Predictor"]


@dataclass
class Predictor(PredictorBase):
    """A trained model-level predictor for one target (the platform is the registry's business).

    ``method`` (:data:`~fleetmeter.modeler.methods.METHODS`) says what it is. The prediction is
    ``exp(booster(x) + log base(x))``: ``prior`` is the base — a
    :class:`LogLogPrior` (``"lgbm"``), an :class:`AdditiveCost`
    (``"additive"`` alone, ``"additive_lgbm"`` with a booster on top), a
    :class:`FlopsLinear` (``"flops_linear"``) or nothing (``"opcount_lgbm"``,
    which boosts from the mean) — and ``booster`` a ``lightgbm.Booster`` on
    ``columns`` fitted to ``log(target)`` minus the base, or ``None`` when
    the base alone serves. ``interval_log`` is the half-width ``q`` of the
    ``interval_level`` interval in log space (``None`` if not
    calibrated). ``n_train`` models went into it (the fields every trained
    predictor records: :class:`~fleetmeter.modeler.learners.PredictorBase`).
    """

    target: str
    feature_set: str
    columns: Tuple[str, ...]
    booster: Any = field(repr=False)
    prior: Optional[Any] = None
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
