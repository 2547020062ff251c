"""``PredictorService.PlanAdapt`` and ``Adapt``: a new platform's predictor from a few measurements.

``PlanAdapt`` resolves the sources (the other platforms' model-level predictors of the target: the serving
one, or where kernel-level serves the best model-level candidate kept beside it; a transferred one is no
source, and the response says why), predicts every candidate
model on each, and chooses ``budget`` of them with
:func:`~fleetmeter.modeler.transfer.select_models` (spread over the sources' predictions, cheapest
first). The caller submits them as an ordinary sweep (``fleetmeter adapt`` does), so measuring needs no
new path. ``Adapt`` reads the platform's stored readings (all, those of the named models, or the
``budget`` a plan would choose among them: ``fleetmeter adapt --from-readings``), fits
:func:`~fleetmeter.modeler.transfer.train_transfer` per target and saves each as the next version in
the registry (``granularity`` ``"transferred"``, its sources in the manifest). A later
``fleetmeter train`` on more readings writes a newer version, which serves as usual.

Both are plain Python over the :class:`~fleetmeter.controller.predictor_service.PredictorApi` they are
given (its fleet handle, blob store, feature cache and pool): the fits take milliseconds, so no Ray task.
"""
from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
from typing import Any, AsyncIterator, Dict, List, Sequence, Tuple

from fleetmeter.errors import FailedPrecondition, InvalidArgument, NotFound
from fleetmeter.v1 import predictor_pb2

from .platforms import RUNTIME_FOR_FORMAT

__all__ = ["DEFAULT_BUDGET", "match_models", "plan_adapt", "adapt"]

log = logging.getLogger(__name__)

#: Models to measure when a plan does not say.
DEFAULT_BUDGET = 20


def match_models(patterns: Sequence[str], models: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The stored ``models`` (``list_models`` records) that ``patterns`` name — a sha256, a unique prefix of
    one, a name or a name pattern (``mobilenet*``) — in store order; all of them when ``patterns`` is empty.
    ``NotFound`` names a pattern that matches nothing; ``InvalidArgument`` an ambiguous prefix."""
    if not patterns:
        return list(models)
    wanted = set()
    for pattern in patterns:
        hits = [m["sha256"] for m in models if m["sha256"] == pattern.lower() or m["name"] == pattern]
        if not hits and any(c in pattern for c in "*?["):
            hits = [m["sha256"] for m in models if fnmatch.fnmatchcase(m["name"], pattern)]
        if not hits and len(pattern) >= 6:
            hits = [m["sha256"] for m in models if m["sha256"].startswith(pattern.lower())]
            if len(hits) > 1:
                raise InvalidArgument(f"model {pattern!r} is ambiguous: it could be {len(hits)} models; give more "
                                      "of the sha256")
        if not hits:
            raise NotFound(f"no stored model matches {pattern!r} (`fleetmeter models list` shows them)")
        wanted.update(hits)
    return [m for m in models if m["sha256"] in wanted]


def _sources(pool: Any, platform: str, requested: Sequence[str], target: str) -> Tuple[List[Tuple[str, Any]],
                                                                                       List[str]]:
    """``([(platform id, Predictor)], [why a platform is no source])`` for ``target``."""
    from fleetmeter.modeler.predictor import Predictor
    from fleetmeter.modeler.serving import resolve_platform

    served = sorted({e["platform_id"] for e in pool.registry.list_predictors() if e["target"] == target})
    if requested:
        names = []
        for name in requested:
            hit = resolve_platform(name, served)
            if hit is None:
                raise NotFound(f"--from {name!r}: no platform with a {target} predictor matches it (platforms with "
                               f"one: {', '.join(served) or 'none yet: run `fleetmeter train` first'})")
            names.append(hit)
    else:
        names = served
    out, skipped = [], []
    for pid in dict.fromkeys(names):
        if pid == platform:
            continue
        try:
            loaded = pool.get(pid, target)
        except FailedPrecondition as exc:  # e.g. trained on another feature schema: no source, say why
            skipped.append(f"{pid}: {exc}")
            continue
        predictor = loaded.model_level  # a kernel-level version keeps its best model-level candidate too
        if not isinstance(predictor, Predictor):
            kind = loaded.manifest.get("granularity")
            what = ("transferred" if kind == "transferred" else
                    f"{kind}-level, trained before model-level candidates were kept beside it (retrain it)")
            skipped.append(f"{pid}: its {target} predictor is {what}, not a model-level one trained on its own "
                           "readings")
            continue
        out.append((pid, predictor))
    if not out:
        raise FailedPrecondition(f"no source platform for {platform}'s {target}: train a model-level {target} "
                                 "predictor on another platform first (`fleetmeter train`)"
                                 + (f" ({'; '.join(skipped)})" if skipped else ""))
    return out, skipped


def _plan_sync(api: Any, request: Any, platform: str, models: List[Dict[str, Any]]) -> Any:
    from fleetmeter.modeler.transfer import source_log_matrix, select_models

    target = request.target or "latency_ms"
    sources, skipped = _sources(api.pool, platform, list(request.from_platforms), target)
    feats, kept = [], []
    for m in models:
        if not api.blobs.has(m["sha256"]):
            continue
        try:
            feats.append(api._extract(m["sha256"], str(api.blobs.path(m["sha256"])), m["name"])[0])
        except InvalidArgument as exc:  # one model the parser cannot read is no reason to stop
            log.warning("adapt plan: %s left out: %s", m["name"], exc)
            continue
        kept.append(m)
    if not kept:
        raise FailedPrecondition("no candidate model to measure: upload some (`fleetmeter models add`, "
                                 "`fleetmeter zoo build --upload`)")
    logs = source_log_matrix(sources, feats)
    budget = request.budget or DEFAULT_BUDGET
    picked = select_models(logs, [m["sha256"] for m in kept], budget, seed=request.seed)
    import numpy as np

    return predictor_pb2.PlanAdaptResponse(
        platform=platform, from_platforms=[pid for pid, _ in sources], candidates=len(kept),
        skipped_sources=skipped,
        models=[predictor_pb2.PlannedModel(model_sha256=kept[i]["sha256"], model_name=kept[i]["name"],
                                           predicted_value=float(np.exp(logs[i]).mean())) for i in picked])


async def plan_adapt(api: Any, request: Any) -> Any:
    if request.budget < 0:
        raise InvalidArgument(f"budget must be >= 0 (0: {DEFAULT_BUDGET}), got {request.budget}")
    if not request.platform:
        raise InvalidArgument("PlanAdapt needs a platform (an id or a unique prefix)")
    (platform,) = await api._chosen_platforms([request.platform])
    models = match_models(list(request.models), await api.reads.call("list_models"))
    runtime = next((p.get("runtime") for p in await api.reads.call("list_platforms")
                    if p["platform_id"] == platform), "")
    if runtime:  # only what the platform's runtime can run (an imported platform: anything)
        runnable = [m for m in models if RUNTIME_FOR_FORMAT.get(m.get("format", "")) == runtime]
        if not runnable:
            raise FailedPrecondition(f"none of the {len(models)} candidate models is a format {platform} runs "
                                     f"({runtime}): upload some (`fleetmeter models add`)")
        models = runnable
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _plan_sync, api, request, platform, models)


def _adapt_sync(api: Any, request: Any, platform: str, own: List[Any], targets: Sequence[str]) -> List[Any]:
    """``(TrainResult-like or None, target, why skipped)`` per target."""
    from fleetmeter.modeler.train import samples_with
    from fleetmeter.modeler.transfer import (MIN_TRANSFER_SAMPLES, select_models, source_log_matrix,
                                             train_transfer)

    out = []
    for target in targets:
        measured = samples_with(own, target)
        if len(measured) < MIN_TRANSFER_SAMPLES:
            out.append((None, target, f"{len(measured)} readings with {target} on {platform}, need "
                                      f"{MIN_TRANSFER_SAMPLES}"))
            continue
        try:
            sources, _ = _sources(api.pool, platform, list(request.from_platforms), target)
        except (FailedPrecondition, NotFound) as exc:  # no source of this target (a --from without one)
            if request.targets:
                raise
            out.append((None, target, str(exc)))
            continue
        if request.budget and len(measured) > request.budget:
            measured = sorted(measured, key=lambda s: s.model_sha256)
            picked = select_models(source_log_matrix(sources, measured), [s.model_sha256 for s in measured],
                                   request.budget, seed=request.seed)
            measured = [measured[i] for i in picked]
        out.append((train_transfer(measured, sources, target, platform_id=platform, seed=request.seed), target, ""))
    return out


async def adapt(api: Any, request: Any, dataset: Any, registry: Any) -> AsyncIterator[Any]:
    """The ``Adapt`` stream: ``loading`` messages, then ``done`` with one result per target."""
    if request.budget < 0:
        raise InvalidArgument(f"budget must be >= 0 (0: every stored reading), got {request.budget}")
    if not request.platform:
        raise InvalidArgument("Adapt needs a platform (an id or a unique prefix)")
    targets = tuple(dict.fromkeys(request.targets)) or dataset.TARGETS
    bad = [t for t in targets if t not in dataset.TARGETS]
    if bad:
        raise InvalidArgument(f"unknown target {bad[0]!r}: choose from {', '.join(dataset.TARGETS)}")
    chosen = await api._chosen_platforms([request.platform])
    platform = chosen[0]
    yield predictor_pb2.TrainProgress(stage="loading", message=f"reading {platform}'s measurements")
    _, by_platform, _ = await api._training_data(targets, chosen, dataset)
    own = by_platform.get(platform, [])
    if request.models:
        keep = {m["sha256"] for m in match_models(list(request.models), await api.reads.call("list_models"))}
        own = [s for s in own if s.model_sha256 in keep]
    yield predictor_pb2.TrainProgress(stage="loading", message=f"{len(own)} readings of {platform}")
    loop = asyncio.get_running_loop()
    fitted = await loop.run_in_executor(None, _adapt_sync, api, request, platform, own, targets)
    reg = registry.Registry(api.registry_root)
    out = []
    for result, target, skipped in fitted:
        version = await loop.run_in_executor(None, reg.save_result, result) if result is not None else 0
        metrics = registry.json_safe(result.metrics) if result is not None else {}
        out.append(predictor_pb2.TrainedPredictor(
            platform=platform, target=target, version=version or 0, n_samples=result.n_samples if result else 0,
            skipped=skipped, granularity=result.granularity if result else "",
            chosen_because=result.chosen_because if result else "",
            metrics_json=json.dumps(metrics, sort_keys=True, allow_nan=False),
            method=result.method if result else "", warnings=metrics.get("warnings") or []))
    api.pool.invalidate()
    trained = sum(1 for r, _, _ in fitted if r is not None)
    yield predictor_pb2.TrainProgress(stage="done", done=trained, total=len(fitted), results=out,
                                      message=f"adapted {trained} predictor(s) of {platform}, skipped "
                                              f"{len(fitted) - trained}")
