"""Serving predictions: the registry's serving predictors, loaded once, asked many times.

:class:`PredictorPool` sits on a :class:`~fleetmeter.modeler.registry.Registry`
and answers "what does this model cost on these platforms" from a model's
features (:func:`~fleetmeter.modeler.features.extract_features`). It keeps
every loaded predictor in memory and re-reads the registry's index at most
every ``refresh_s`` seconds (or at once after :meth:`PredictorPool.invalidate`),
so a new training run, or a pin, takes effect without a restart.

The serving predictor of a (platform, target) is the pinned version, else
the latest. Records are plain dicts with the fields of the ``fleetmeter
predict --json`` contract: ``platform``, ``target``, ``value``, ``lower``,
``upper``, ``unit``, ``predictor_version``, plus ``granularity``,
``interval_level`` and ``warnings``.

Errors name the problem: a platform nobody knows is
:class:`~fleetmeter.errors.NotFound` (with the known ones listed); a known
platform (or a whole fleet) without a predictor yet is
:class:`~fleetmeter.errors.FailedPrecondition` saying to train. An operator
that no training model had is a *warning* on the prediction (the value is
then an extrapolation), never a silent zero.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from fleetmeter.errors import FailedPrecondition, InvalidArgument, NotFound

from .dataset import TARGETS
from .features import ModelFeatures
from .registry import LoadedPredictor, Registry

__all__ = ["TARGET_UNITS", "PredictorPool", "unseen_ops", "resolve_platform"]

log = logging.getLogger(__name__)

TARGET_UNITS = {"latency_ms": "ms", "energy_mj": "mJ", "peak_rss_bytes": "bytes"}
DEFAULT_TARGETS = ("latency_ms",)


def unseen_ops(predictor: Any, features: ModelFeatures) -> List[str]:
    """Operators (or kernel types) of ``features`` that ``predictor`` never saw in training."""
    if hasattr(predictor, "unseen_kernel_types"):
        return sorted(predictor.unseen_kernel_types(features))
    seen = {c[len("count:"):] for c in getattr(predictor, "columns", ()) if c.startswith("count:")}
    have = {k[len("count:"):] for k, v in features.model.items() if k.startswith("count:") and v}
    return sorted(have - seen)


def resolve_platform(name: str, candidates: Iterable[str]) -> Optional[str]:
    """``name`` itself, else the one candidate it is a prefix of; ``None`` when none; error when ambiguous."""
    pool = sorted(set(candidates))
    if name in pool:
        return name
    matches = [p for p in pool if p.startswith(name)]
    if len(matches) > 1:
        raise InvalidArgument(f"platform {name!r} is ambiguous: it could be {', '.join(matches)}")
    return matches[0] if matches else None


def _check_targets(targets: Optional[Sequence[str]]) -> Tuple[str, ...]:
    chosen = tuple(dict.fromkeys(targets or DEFAULT_TARGETS))
    bad = [t for t in chosen if t not in TARGETS]
    if bad:
        raise InvalidArgument(f"unknown target {bad[0]!r}: choose from {', '.join(TARGETS)}")
    return chosen


def _finite_or_none(value: float) -> Optional[float]:
    return float(value) if value is not None and math.isfinite(value) else None


class PredictorPool:
    """The serving predictors of a registry, cached. Thread-safe."""

    def __init__(self, registry: Registry, *, refresh_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._index: Dict[Tuple[str, str], int] = {}
        self._index_at: Optional[float] = None
        self._loaded: Dict[Tuple[str, str, int], LoadedPredictor] = {}

    # ------------------------------------------------------------ index
    def invalidate(self) -> None:
        """Re-read the registry at the next call (after training or pinning)."""
        with self._lock:
            self._index_at = None

    def index(self) -> Dict[Tuple[str, str], int]:
        """``{(platform, target): serving version}``."""
        with self._lock:
            now = self._clock()
            if self._index_at is None or now - self._index_at >= self.refresh_s:
                index = {}
                for entry in self.registry.list_predictors():
                    version = entry["pinned"] or entry["versions"][-1]
                    index[(entry["platform_id"], entry["target"])] = int(version)
                self._index = index
                self._index_at = now
                live = {(p, t, v) for (p, t), v in index.items()}
                for key in [k for k in self._loaded if k not in live]:
                    del self._loaded[key]
            return dict(self._index)

    def platforms(self, target: Optional[str] = None) -> List[str]:
        return sorted({p for (p, t) in self.index() if target is None or t == target})

    def get(self, platform: str, target: str) -> LoadedPredictor:
        """The serving predictor of (platform, target); FailedPrecondition when there is none."""
        version = self.index().get((platform, target))
        if version is None:
            raise FailedPrecondition(f"no {target} predictor for platform {platform!r} yet: measure models there "
                                     "(fleetmeter sweep submit) and run `fleetmeter train`")
        key = (platform, target, version)
        with self._lock:
            loaded = self._loaded.get(key)
        if loaded is None:
            loaded = self.registry.load(platform, target, version)
            with self._lock:
                self._loaded[key] = loaded
        return loaded

    # ------------------------------------------------------------ platforms
    def resolve_platforms(self, requested: Optional[Sequence[str]], targets: Sequence[str],
                          known: Callable[[], Iterable[str]] = tuple) -> List[str]:
        """Platform ids to predict for. ``requested`` empty: every platform with a predictor of a target.

        ``known()`` lists the fleet's platforms (those without predictors
        too), consulted only to tell "unknown" from "not trained yet".
        """
        served = self.platforms()
        if not requested:
            chosen = sorted({p for (p, t) in self.index() if t in targets})
            if not chosen:
                raise FailedPrecondition(f"no {'/'.join(targets)} predictors trained yet: run `fleetmeter train` "
                                         "after a sweep (or `fleetmeter import`) has measured models")
            return chosen
        out: List[str] = []
        known_ids: Optional[List[str]] = None
        for name in requested:
            hit = resolve_platform(name, served)
            if hit is None:
                if known_ids is None:
                    known_ids = sorted(set(known()) | set(served))
                hit = resolve_platform(name, known_ids)
                if hit is None:
                    listing = ", ".join(known_ids) if known_ids else "none yet"
                    raise NotFound(f"unknown platform {name!r} (known platforms: {listing})")
            if hit not in out:
                out.append(hit)
        return out

    # ------------------------------------------------------------ predicting
    def predict(self, features: ModelFeatures, platforms: Optional[Sequence[str]] = None,
                targets: Optional[Sequence[str]] = None,
                known: Callable[[], Iterable[str]] = tuple) -> List[Dict[str, Any]]:
        """One record per (platform, target): every requested pair must have a predictor.

        With no ``platforms``, every platform that has a predictor for a
        requested target is answered (pairs without one are left out).
        """
        chosen_targets = _check_targets(targets)
        chosen = self.resolve_platforms(platforms, chosen_targets, known)
        index = self.index()
        if not platforms:  # every platform: a target no platform can answer is an error, not an omission
            missing = [t for t in chosen_targets if not any(key[1] == t for key in index)]
            if missing:
                raise FailedPrecondition(f"no {'/'.join(missing)} predictor on any platform yet: measure it "
                                         "(energy needs a power sensor) and run `fleetmeter train`")
        records = []
        for platform in chosen:
            for target in chosen_targets:
                if not platforms and (platform, target) not in index:
                    continue
                loaded = self.get(platform, target)
                pred, low, high = loaded.predictor.predict_interval([features])
                unseen = unseen_ops(loaded.predictor, features)
                warnings = []
                if unseen:
                    warnings.append(f"operators never seen in training on {platform}: {', '.join(unseen)} "
                                    "(the prediction extrapolates)")
                records.append({
                    "platform": platform, "target": target, "value": float(pred[0]),
                    "lower": _finite_or_none(low[0]), "upper": _finite_or_none(high[0]),
                    "unit": TARGET_UNITS[target], "predictor_version": loaded.version,
                    "granularity": loaded.manifest.get("granularity", "model"),
                    "interval_level": float(loaded.predictor.interval_level), "warnings": warnings,
                })
        return records

    def predict_many(self, items: Sequence[Any], platform: str, target: str = "latency_ms"
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batched: ``(values, lower, upper)`` for many models' features on one (platform, target)."""
        loaded = self.get(platform, target)
        return loaded.predictor.predict_interval(list(items))

    # ------------------------------------------------------------ listing
    def describe(self, platforms: Optional[Sequence[str]] = None, targets: Optional[Sequence[str]] = None
                 ) -> List[Dict[str, Any]]:
        """One entry per serving predictor: version, versions, pin, metrics (from the manifest)."""
        wanted_targets = set(_check_targets(targets)) if targets else set(TARGETS)
        out = []
        for entry in self.registry.list_predictors():
            platform, target = entry["platform_id"], entry["target"]
            if target not in wanted_targets:
                continue
            if platforms and not any(platform == p or platform.startswith(p) for p in platforms):
                continue
            version = entry["pinned"] or entry["versions"][-1]
            manifest = self.registry.manifest(platform, target, version)
            interval = manifest.get("interval") or {}
            out.append({
                "platform": platform, "target": target, "version": int(version),
                "versions": list(entry["versions"]), "pinned": entry["pinned"] or 0,
                "granularity": manifest.get("granularity", "model"),
                "chosen_because": manifest.get("chosen_because", ""),
                "n_samples": int(manifest.get("n_samples") or 0),
                "feature_schema_version": int(manifest.get("feature_schema_version") or 0),
                "training_fingerprint": manifest.get("training_fingerprint", ""),
                "created_unix": float(manifest.get("created_unix") or 0.0),
                "unit": TARGET_UNITS[target],
                "interval_level": float(interval.get("level") or 0.0),
                "interval_coverage": interval.get("coverage_on_held_out"),
                "metrics": manifest.get("metrics") or {},
            })
        return out
