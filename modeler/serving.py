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
:class:`~fleetmeter.errors.FailedPrecondition` saying to train.

Never collapse on the unknown: an operator type no training model had, a
control-flow body, a quantized op or a shape inference could not resolve
(:func:`not_understood`) is named in a warning, and the prediction leans on
the predictor's work-based fallback (:func:`lean_on_work`): it never falls
below the fallback's floor, and its interval takes in the fallback's,
widened by the factor measured at training. A tree ensemble asked about a
model unlike any it saw answers with the nearest training models' cost,
which for a large model with one unknown op can be 1,000x too small.
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
from .features import LOOP_OPS, ModelFeatures
from .registry import LoadedPredictor, Registry
from .work_fallback import WorkFallback

__all__ = ["TARGET_UNITS", "PredictorPool", "unseen_ops", "not_understood", "lean_on_work", "resolve_platform"]

log = logging.getLogger(__name__)

TARGET_UNITS = {"latency_ms": "ms", "energy_mj": "mJ", "peak_rss_bytes": "bytes"}
#: Raw names of control-flow ops (ONNX and TFLite).
CONTROL_FLOW_OPS = frozenset({"If", "IF"}) | LOOP_OPS
DEFAULT_TARGETS = ("latency_ms",)


def unseen_ops(predictor: Any, features: ModelFeatures) -> List[str]:
    """Operators (or kernel types) of ``features`` that ``predictor`` never saw in training."""
    if hasattr(predictor, "unseen_kernel_types"):
        return sorted(predictor.unseen_kernel_types(features))
    seen = {c[len("count:"):] for c in getattr(predictor, "columns", ()) if c.startswith("count:")}
    have = {k[len("count:"):] for k, v in features.model.items() if k.startswith("count:") and v}
    return sorted(have - seen)


def _raw_name(raw_op: str) -> str:
    """``com.microsoft:DynamicQuantizeLSTM`` -> ``DynamicQuantizeLSTM``, ``CUSTOM:Foo`` -> ``Foo``."""
    return raw_op.rsplit(":", 1)[-1]


def _names(nodes: Iterable[Any], limit: int = 8) -> str:
    names = list(dict.fromkeys(_raw_name(n.raw_op) for n in nodes))
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def not_understood(predictor: Any, features: ModelFeatures, fallback: Optional[WorkFallback] = None) -> List[str]:
    """Phrases naming what of ``features`` ``predictor`` never saw in training or the parser did not resolve.

    Operator types (their raw names: ``If``, ``DynamicQuantizeLinear``), then control-flow bodies,
    quantized ops and unresolved shapes where the model has them and training never did (per the
    fallback's ``training_max``; without a fallback, wherever the model has them). ``[]``: all understood.
    """
    nodes = list(getattr(features, "nodes", ()) or ())
    model = features.model if isinstance(features, ModelFeatures) else features
    out: List[str] = []
    unseen = unseen_ops(predictor, features)
    if unseen:
        labels = []
        for kind in unseen:
            raws = _names([n for n in nodes if kind in (n.op_type, n.kernel_type)])
            bare = kind[len("other:"):] if kind.startswith("other:") else kind
            labels.append(raws if raws and raws == bare else f"{bare} ({raws})" if raws else bare)
        out.append(f"{len(unseen)} operator type{'s' if len(unseen) > 1 else ''} never seen in training: "
                   f"{', '.join(labels)}")
    seen_max = fallback.training_max if fallback is not None else {}

    def new(key: str) -> int:
        count = int(model.get(key, 0) or 0)
        return count if count > 0 and not seen_max.get(key, 0) else 0

    if new("subgraph_node_count"):
        flow = [n for n in nodes if _raw_name(n.raw_op) in CONTROL_FLOW_OPS]
        loops = " (loop bodies counted once: the trip count is unknown)" if model.get("loop_count") else ""
        out.append(f"{new('subgraph_node_count')} ops inside control-flow bodies of {_names(flow) or 'subgraphs'}"
                   f"{loops}")
    if new("quantized_node_count"):
        out.append(f"{new('quantized_node_count')} quantized ops ({_names([n for n in nodes if n.quantized])})")
    if new("unresolved_shape_count"):
        out.append(f"{new('unresolved_shape_count')} ops whose output shapes inference could not resolve "
                   "(their work estimated from their inputs and weights)")
    return out


def lean_on_work(loaded: LoadedPredictor, features: ModelFeatures, platform: str, value: float,
                 lower: float, upper: float) -> Tuple[float, float, float, List[str]]:
    """``(value, lower, upper, warnings)``: the prediction, made safe where the model is not understood.

    When :func:`not_understood` names something and the predictor was trained with a
    :class:`~fleetmeter.modeler.work_fallback.WorkFallback`: the fallback's estimate from the model's work
    (MACs, bytes moved) with its measured factor ``f`` gives a floor ``estimate / f``. A prediction
    below it is replaced by the estimate, with the fallback's interval ``[estimate / f, estimate * f]``;
    one above keeps its value, its interval widened to take in the fallback's. The one warning names
    what was not understood and what was done about it.
    """
    gaps = not_understood(loaded.predictor, features, loaded.work_fallback)
    if not gaps:
        return value, lower, upper, []
    what = "; ".join(gaps)
    fallback = loaded.work_fallback
    if fallback is None:
        return value, lower, upper, [f"{what} on {platform} (the prediction extrapolates; this predictor has "
                                     "no work-based fallback: retrain it)"]
    estimate = float(fallback.predict([features])[0])
    factor = math.exp(fallback.log_half_width) if math.isfinite(fallback.log_half_width) else math.inf
    floor = estimate / factor
    unit = TARGET_UNITS.get(str(loaded.manifest.get("target", "")), "")
    if value < floor:
        done = (f"the predictor's {value:.3g} {unit} was below the work-based floor {floor:.3g} {unit}, so the "
                f"work-based estimate {estimate:.3g} {unit} serves, its interval ×{factor:.2f} (measured on "
                "training models)")
        value, lower, upper = estimate, floor, estimate * factor
    else:
        done = (f"the predictor's value stands (above the work-based floor {floor:.3g} {unit}); its interval is "
                f"widened to take in the work-based estimate {estimate:.3g} {unit} ×{factor:.2f} (measured on "
                "training models)")
        lower = min(lower, floor) if math.isfinite(lower) else floor
        upper = max(upper, estimate * factor) if math.isfinite(upper) else estimate * factor
    return value, lower, upper, [f"{what} on {platform}: {done}"]


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
                value, lower, upper, warnings = lean_on_work(loaded, features, platform, float(pred[0]),
                                                             float(low[0]), float(high[0]))
                records.append({
                    "platform": platform, "target": target, "value": value,
                    "lower": _finite_or_none(lower), "upper": _finite_or_none(upper),
                    "unit": TARGET_UNITS[target], "predictor_version": loaded.version,
                    "granularity": loaded.manifest.get("granularity", "model"),
                    "method": loaded.manifest.get("method") or loaded.manifest.get("granularity", "model"),
                    "interval_level": float(loaded.predictor.interval_level),
                    "warnings": warnings + [f"{platform}: {w}" for w in
                                            (loaded.manifest.get("metrics") or {}).get("warnings") or ()],
                })
        return records

    def predict_many(self, items: Sequence[Any], platform: str, target: str = "latency_ms"
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batched: ``(values, lower, upper)`` for many models' features on one (platform, target).

        The predictor's own answers, for search loops over understood models: no work-based floor
        and no warnings (:meth:`predict` applies :func:`lean_on_work`).
        """
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
                "method": manifest.get("method") or manifest.get("granularity", "model"),
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
