"""``PredictorService``: predictions served from the registry, training fanned out as Ray tasks.

Predictions run in the controller process (no Ray hop: a ``Predict`` is a
feature extraction plus a few tree walks, milliseconds), on a small thread
pool so the event loop keeps serving agents. Features are cached by the
model's sha256 and the request's input shapes, whichever way the model came
(uploaded, sent as bytes, sent as a weightless graph), so a caller asks by
sha256 first and sends the model only when told it is unknown here
(:class:`~fleetmeter.errors.ModelNotFound`: ``NOT_FOUND`` with trailing
metadata ``fleetmeter-not-found: model``; in ``PredictBatch``,
``PredictResponse.model_not_found``). Features of an uploaded model or of
bytes sent with the request are *verified* (the server hashed them); a
``model_graph`` only *declares* its sha256 (its weights are stripped, so the
server cannot check it). Declared features are cached under the hash of the
graph itself, never under the sha256: a graph request gets its own graph's
features, and verified features are never shadowed by a declared graph. A
request by sha256 alone uses verified features first and falls back to the
graph last declared for that sha256 (callers hold the API token).

Training (:meth:`PredictorApi.Train`): the measurements and models come from
the fleet actor (a snapshot; the actor is the store's only writer), features
are extracted once per model (cached in this process), and
:func:`~fleetmeter.modeler.train.train_all` runs one Ray task per (platform,
target); each result is saved as the next version in the registry under
``<data dir>/predictors``.

The modeler (LightGBM, onnx) is imported on first use; a controller
installed without the ``modeler`` extra answers ``FAILED_PRECONDITION``
saying what to install.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence

from fleetmeter.blobs import BlobStore, is_sha256
from fleetmeter.errors import FailedPrecondition, FleetmeterError, InvalidArgument, ModelNotFound, NotFound
from fleetmeter.modelfile import detect_format
from fleetmeter.v1 import predictor_pb2, predictor_pb2_grpc

from .engine import ActorRef

log = logging.getLogger(__name__)

FEATURE_CACHE_SIZE = 4096
KNOWN_PLATFORMS_TTL_S = 5.0
#: A Train stream sends a message at least this often, progress or not.
TRAIN_KEEPALIVE_S = 15.0


def _modeler():
    try:
        from fleetmeter.modeler import dataset, features, registry, serving, train
    except ImportError as exc:
        raise FailedPrecondition(f"this controller cannot predict or train: {exc}; "
                                 "pip install 'fleetmeter[controller]'") from exc
    return dataset, features, registry, serving, train


class _StoreSnapshot:
    """What :func:`~fleetmeter.modeler.dataset.load_from_store` reads, fetched from the fleet actor."""

    def __init__(self, models: List[dict], measurements: List[dict],
                 sweep_inputs: Optional[Dict[str, List[dict]]] = None) -> None:
        self._models = models
        self._measurements = measurements
        self._sweep_inputs = sweep_inputs or {}

    def list_models(self) -> List[dict]:
        return self._models

    def list_measurements(self, include_samples: bool = False) -> List[dict]:
        return self._measurements

    def sweep_inputs(self) -> Dict[str, List[dict]]:
        return self._sweep_inputs


class _SharedFeatures:
    """The API's feature cache in the shape :func:`~fleetmeter.modeler.dataset.load_from_store` asks for."""

    def __init__(self, api: "PredictorApi") -> None:
        self._api = api

    def get(self, sha256: str, path: Any, input_shapes: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
        features, _ = self._api._extract(sha256, str(path), sha256[:12], input_shapes)
        return dict(features.model)


class _DeclaredShapes:
    """The API's feature cache as ``sha256 -> ModelFeatures`` at the declared input shapes (what
    :func:`~fleetmeter.modeler.kernel_match.load_kernel_samples` reads and fills)."""

    def __init__(self, api: "PredictorApi") -> None:
        self._api = api

    def get(self, sha256: str, default: Any = None) -> Any:
        return self._api._cached(sha256, {}) or default

    def __setitem__(self, sha256: str, features: Any) -> None:
        self._api._remember((sha256, ()), features)


def request_shapes(request: predictor_pb2.PredictRequest) -> Dict[str, tuple]:
    """``PredictRequest.input_shapes`` as ``{name: dims}``; InvalidArgument for a name given twice or a bad
    dimension."""
    _, features, _, _, _ = _modeler()
    names = [i.name for i in request.input_shapes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidArgument(f"input shape given twice for {', '.join(map(repr, twice))}")
    return features.normalize_input_shapes({i.name: list(i.shape) for i in request.input_shapes})


def _json(obj: Any) -> str:
    registry = _modeler()[2]
    return json.dumps(registry.json_safe(obj), sort_keys=True, allow_nan=False)


def prediction_to_proto(record: Dict[str, Any]) -> predictor_pb2.Prediction:
    p = predictor_pb2.Prediction(
        platform=record["platform"], target=record["target"], value=record["value"], unit=record["unit"],
        predictor_version=record["predictor_version"], granularity=record.get("granularity", "model"),
        interval_level=record.get("interval_level", 0.0), warnings=record.get("warnings", []),
        method=record.get("method") or "")
    if record.get("lower") is not None:
        p.lower = record["lower"]
    if record.get("upper") is not None:
        p.upper = record["upper"]
    return p


def info_to_proto(entry: Dict[str, Any]) -> predictor_pb2.PredictorInfo:
    info = predictor_pb2.PredictorInfo(
        platform=entry["platform"], target=entry["target"], version=entry["version"], versions=entry["versions"],
        pinned=entry["pinned"], granularity=entry["granularity"], chosen_because=entry["chosen_because"],
        n_samples=entry["n_samples"], feature_schema_version=entry["feature_schema_version"],
        training_fingerprint=entry["training_fingerprint"], created_unix=entry["created_unix"], unit=entry["unit"],
        interval_level=entry["interval_level"], metrics_json=_json(entry["metrics"]),
        method=entry.get("method") or "", warnings=(entry["metrics"] or {}).get("warnings") or [])
    if entry.get("interval_coverage") is not None:
        info.interval_coverage = entry["interval_coverage"]
    return info


async def _training_progress(job: "asyncio.Future[Any]", queue: asyncio.Queue
                             ) -> AsyncIterator[predictor_pb2.TrainProgress]:
    """``training`` progress from ``queue`` until ``job`` is done; a ``working`` one every
    :data:`TRAIN_KEEPALIVE_S` while a long chunk runs (keeps proxies and the caller informed)."""
    last = (0, 0)
    while True:
        getter = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait({job, getter}, timeout=TRAIN_KEEPALIVE_S,
                                     return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            _, n, total = getter.result()
            last = (n, total)
            yield predictor_pb2.TrainProgress(stage="training", done=n, total=total)
            continue
        getter.cancel()
        if not done:
            yield predictor_pb2.TrainProgress(stage="training", done=last[0], total=last[1], message="working")
            continue
        break
    while not queue.empty():
        _, n, total = queue.get_nowait()
        yield predictor_pb2.TrainProgress(stage="training", done=n, total=total)


def _extract_task(item: tuple) -> Any:
    """An engine task: the features of ``(sha256, model bytes, input shapes)``, or None when they do not
    extract (the loader then reports why)."""
    from fleetmeter.modeler import features

    sha, data, shapes = item
    try:
        return features.extract_features(data, None, input_shapes=dict(shapes))
    except (FleetmeterError, ValueError):
        log.debug("model %s does not extract at %s", sha[:12], dict(shapes), exc_info=True)
        return None


class PredictorApi(predictor_pb2_grpc.PredictorServiceServicer):
    def __init__(self, fleet: ActorRef, blobs: BlobStore, engine: Any, registry_root: Path,
                 *, threads: int = 2, reads: Any = None) -> None:
        self.fleet = fleet
        # platforms, models and measurements: from the read side (readside.py, ReadSide.call) when the controller
        # has one, so predictions and training never queue behind the fleet actor's writes; else the actor
        self.reads = reads if reads is not None else fleet
        self.blobs = blobs
        self.engine = engine
        self.registry_root = Path(registry_root)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="predict")
        # (sha256, input_shapes_key) -> ModelFeatures, LRU
        self._features: "OrderedDict[tuple, Any]" = OrderedDict()
        self._features_lock = threading.Lock()  # the predict threads share it
        # sha256 -> "graph:<sha256 of the graph>" of the graph last declared for it (see the module docstring)
        self._declared: "OrderedDict[str, str]" = OrderedDict()
        self._pool = None
        self._known: List[str] = []
        self._known_at = -1e9
        self._train_lock = asyncio.Lock()

    # ------------------------------------------------------------ helpers
    @property
    def pool(self):
        if self._pool is None:
            _, _, registry, serving, _ = _modeler()
            self._pool = serving.PredictorPool(registry.Registry(self.registry_root))
        return self._pool

    async def _refresh_known(self) -> None:
        if time.monotonic() - self._known_at > KNOWN_PLATFORMS_TTL_S:
            self._known = [p["platform_id"] for p in await self.reads.call("list_platforms")]
            self._known_at = time.monotonic()

    def _cached(self, sha256: str, input_shapes: Optional[Dict[str, Any]]) -> Any:
        """The cached features of the model at ``input_shapes``, or None."""
        _, features, _, _, _ = _modeler()
        key = (sha256, features.input_shapes_key(input_shapes))
        with self._features_lock:
            cached = self._features.get(key)
            if cached is not None:
                self._features.move_to_end(key)
            return cached

    def _remember(self, key: tuple, extracted: Any) -> None:
        with self._features_lock:
            self._features[key] = extracted
            while len(self._features) > FEATURE_CACHE_SIZE:
                self._features.popitem(last=False)

    def _extract(self, sha256: str, source: Any, name: str, input_shapes: Optional[Dict[str, Any]] = None,
                 format: Optional[str] = None):  # noqa: A002
        """Cached features of one model at ``input_shapes``; InvalidArgument naming ``name`` when it does not
        parse or does not take those shapes."""
        cached = self._cached(sha256, input_shapes)
        if cached is not None:
            return cached, 0.0
        _, features, _, _, _ = _modeler()
        start = time.perf_counter()
        try:
            extracted = features.extract_features(source, format, input_shapes=input_shapes)
        except FleetmeterError as exc:
            raise InvalidArgument(f"{name}: {exc}") from exc
        except ValueError as exc:
            raise InvalidArgument(f"{name}: not a valid ONNX or TFLite model ({exc})") from exc
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        self._remember((sha256, features.input_shapes_key(input_shapes)), extracted)
        return extracted, elapsed_ms

    def _predict_sync(self, request: predictor_pb2.PredictRequest) -> predictor_pb2.PredictResponse:
        kind = request.WhichOneof("model")
        name = request.model_name or "model"
        shapes = request_shapes(request)
        if kind == "model_bytes":
            if not request.model_bytes:
                raise InvalidArgument(f"{name}: empty model (no bytes)")
            sha = hashlib.sha256(request.model_bytes).hexdigest()
            # the content's format, else the name's: a damaged .tflite is reported as not a valid TFLite model
            feats, ms = self._extract(sha, request.model_bytes, name, shapes,
                                      format=detect_format(request.model_bytes, name))
        elif kind == "model_graph":
            sha = request.model_graph.sha256.lower()
            if not is_sha256(sha):
                raise InvalidArgument(f"model_graph.sha256 {request.model_graph.sha256!r} is not a sha256 hex digest")
            if not request.model_graph.onnx:
                raise InvalidArgument(f"{name}: empty model graph (no bytes)")
            feats, ms = self._cached(sha, shapes), 0.0  # verified features of this sha256 win over a declaration
            if feats is None and self.blobs.has(sha):
                feats, ms = self._extract(sha, str(self.blobs.path(sha)), name, shapes)
            if feats is None:
                graph_key = "graph:" + hashlib.sha256(request.model_graph.onnx).hexdigest()
                feats, ms = self._extract(graph_key, request.model_graph.onnx, name, shapes, format="onnx")
                with self._features_lock:
                    self._declared[sha] = graph_key
                    self._declared.move_to_end(sha)
                    while len(self._declared) > FEATURE_CACHE_SIZE:
                        self._declared.popitem(last=False)
        elif kind == "model_sha256":
            sha = request.model_sha256.lower()
            if not is_sha256(sha):
                raise InvalidArgument(f"model_sha256 {request.model_sha256!r} is not a sha256 hex digest")
            feats, ms = self._cached(sha, shapes), 0.0
            if feats is None and not self.blobs.has(sha) and sha in self._declared:
                feats = self._cached(self._declared[sha], shapes)
            if feats is None:
                if not self.blobs.has(sha):
                    raise ModelNotFound(f"no model with sha256 {sha} here: not uploaded (`fleetmeter models add`) "
                                        f"and not sent before{' at these input shapes' if shapes else ''}; send "
                                        "the model's bytes")
                feats, ms = self._extract(sha, str(self.blobs.path(sha)), request.model_name or sha[:12], shapes)
        else:
            raise InvalidArgument("PredictRequest needs model_bytes, model_graph or model_sha256")
        known = list(self._known)
        records = self.pool.predict(feats, list(request.platforms), list(request.targets), known=lambda: known)
        for record in records:  # what the model's features say (an input left dynamic) goes with every value
            record["warnings"] = list(record.get("warnings") or ()) + list(feats.warnings)
        return predictor_pb2.PredictResponse(request_id=request.request_id, model_sha256=sha,
                                             predictions=[prediction_to_proto(r) for r in records],
                                             features_ms=ms)

    async def _predict(self, request) -> predictor_pb2.PredictResponse:
        if request.platforms:
            await self._refresh_known()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._predict_sync, request)

    # ------------------------------------------------------------ RPCs
    async def Predict(self, request, context):
        return await self._predict(request)

    async def PredictBatch(self, request_iterator, context) -> AsyncIterator[predictor_pb2.PredictResponse]:
        async for request in request_iterator:
            try:
                yield await self._predict(request)
            except FleetmeterError as exc:
                yield predictor_pb2.PredictResponse(request_id=request.request_id, error=str(exc),
                                                    error_code=exc.code_name,
                                                    model_not_found=isinstance(exc, ModelNotFound))

    async def ListPredictors(self, request, context):
        loop = asyncio.get_running_loop()
        entries = await loop.run_in_executor(
            self._executor, self.pool.describe, list(request.platforms), list(request.targets))
        return predictor_pb2.ListPredictorsResponse(predictors=[info_to_proto(e) for e in entries])

    async def PinPredictor(self, request, context):
        if not request.platform:
            raise InvalidArgument("PinPredictor needs a platform (an id or a unique prefix)")
        target = request.target or "latency_ms"
        (platform,) = self.pool.resolve_platforms([request.platform], [target])
        reg = self.pool.registry
        if request.version:
            reg.pin(platform, target, request.version)  # NotFound for a version that does not exist
        else:
            reg.resolve_version(platform, target)  # NotFound when there is nothing to unpin
            reg.unpin(platform, target)
        self.pool.invalidate()
        (entry,) = [e for e in self.pool.describe([platform], [target]) if e["platform"] == platform]
        return info_to_proto(entry)

    async def Train(self, request, context) -> AsyncIterator[predictor_pb2.TrainProgress]:
        dataset, _, registry, _, train = _modeler()
        targets = tuple(dict.fromkeys(request.targets)) or dataset.TARGETS
        bad = [t for t in targets if t not in dataset.TARGETS]
        if bad:
            raise InvalidArgument(f"unknown target {bad[0]!r}: choose from {', '.join(dataset.TARGETS)}")
        if self._train_lock.locked():
            log.info("a training run is in progress; this one waits for it")
        async with self._train_lock:
            async for message in self._train(request, targets, dataset, registry, train):
                yield message

    async def PlanAdapt(self, request, context):
        from .adapt import plan_adapt

        return await plan_adapt(self, request)

    async def Adapt(self, request, context) -> AsyncIterator[predictor_pb2.TrainProgress]:
        from .adapt import adapt

        dataset, _, registry, _, _ = _modeler()
        async with self._train_lock:  # one writer of the registry's versions at a time, as for Train
            async for message in adapt(self, request, dataset, registry):
                yield message

    async def _train(self, request, targets: Sequence[str], dataset, registry, train):
        chosen = await self._chosen_platforms(request.platforms)
        yield predictor_pb2.TrainProgress(stage="loading", message="reading measurements")
        samples, by_platform, kernel_samples = await self._training_data(targets, chosen, dataset)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def progress(done: int, total: int) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ("progress", done, total))

        def map_fn(fn, items):
            return asyncio.run_coroutine_threadsafe(self.engine.map(fn, items), loop).result()

        min_samples = request.min_samples or train.MIN_TRAIN_SAMPLES

        def run() -> List[Any]:
            return train.train_all(by_platform, targets, map_fn, seed=request.seed,
                                   leave_family_out=not request.skip_family_split, min_samples=min_samples,
                                   progress=progress, chunk_size=self.engine.parallelism(),
                                   kernel_samples=kernel_samples)

        n_models = len({s.model_sha256 for s in samples})
        n_kernel = sum(len(v) for v in kernel_samples.values())
        yield predictor_pb2.TrainProgress(stage="loading", message=f"{len(samples)} samples of {n_models} models "
                                          f"on {len(by_platform)} platform(s); {n_kernel} with operator profiles")
        job = loop.run_in_executor(None, run)
        async for update in _training_progress(job, queue):
            yield update
        results = job.result()
        reg = registry.Registry(self.registry_root)
        out = []
        for result in results:
            version = await loop.run_in_executor(None, reg.save_result, result)
            out.append(predictor_pb2.TrainedPredictor(
                platform=result.platform_id, target=result.target, version=version or 0,
                n_samples=result.n_samples, skipped=result.skipped,
                granularity=result.granularity if not result.skipped else "",
                chosen_because=result.chosen_because, metrics_json=_json(result.metrics),
                method=result.method if not result.skipped else "",
                warnings=result.metrics.get("warnings") or []))
        self.pool.invalidate()
        trained = sum(1 for r in results if not r.skipped)
        yield predictor_pb2.TrainProgress(stage="done", done=trained, total=len(results), results=out,
                                          message=f"trained {trained} predictor(s), skipped "
                                                  f"{len(results) - trained}")

    async def _chosen_platforms(self, requested: Sequence[str]) -> Optional[List[str]]:
        """The known platforms ``requested`` names (``None``: all); ``NotFound`` names one nobody knows."""
        if not requested:
            return None
        from fleetmeter.modeler.serving import resolve_platform

        known = sorted(p["platform_id"] for p in await self.reads.call("list_platforms"))
        chosen = []
        for name in requested:
            hit = resolve_platform(name, known)
            if hit is None:
                raise NotFound(f"unknown platform {name!r} (known platforms: {', '.join(known) or 'none yet'})")
            chosen.append(hit)
        return chosen

    async def _extract_on_workers(self, snapshot: _StoreSnapshot, chosen: Optional[List[str]], dataset) -> None:
        """Extract, as engine tasks, the features training will read and the cache lacks: one task per (model,
        input shapes), the model's bytes sent to it and its features sent back through the engine (no path: on a
        cluster the task runs on another node). A model that does not extract there is left to the loader,
        which skips it with the reason."""
        shapes_of = {sweep_id: dataset.sweep_input_shapes(inputs)
                     for sweep_id, inputs in snapshot.sweep_inputs().items()}
        wanted = {(m["model_sha256"], shapes_of.get(m.get("sweep_id") or "", ()))
                  for m in snapshot.list_measurements() if dataset.usable_for_training(m)
                  and (chosen is None or m["platform_id"] in chosen)}
        missing = sorted(key for key in wanted if self._cached(key[0], dict(key[1])) is None and self.blobs.has(key[0]))
        if not missing:
            return
        _, features, _, _, _ = _modeler()
        items = [(sha, self.blobs.path(sha).read_bytes(), shapes) for sha, shapes in missing]
        for (sha, shapes), extracted in zip(missing, await self.engine.map(_extract_task, items)):
            if extracted is not None:
                self._remember((sha, features.input_shapes_key(dict(shapes))), extracted)

    async def _training_data(self, targets: Sequence[str], chosen: Optional[List[str]], dataset):
        """``(samples, samples by platform, kernel samples by platform)`` read from the fleet's store.

        Every ``chosen`` platform is in the grouping, with no samples if it has none;
        ``FailedPrecondition`` when there is nothing at all to train on.
        """
        measurements = await self.reads.call("list_measurements", include_samples=False)
        models = await self.reads.call("list_models")
        snapshot = _StoreSnapshot(models, measurements, await self.reads.call("sweep_inputs"))
        loop = asyncio.get_running_loop()
        await self._extract_on_workers(snapshot, chosen, dataset)
        shared = _SharedFeatures(self)  # one extraction per model for both loaders and later predictions
        samples = await loop.run_in_executor(None, lambda: dataset.load_from_store(
            snapshot, self.blobs.root, targets, platform_ids=chosen, cache=shared))
        kernel_samples: Dict[str, List[Any]] = {}
        if "latency_ms" in targets:
            from fleetmeter.modeler.kernel_match import load_kernel_samples

            loaded = await loop.run_in_executor(None, lambda: load_kernel_samples(
                snapshot, self.blobs.root, platform_ids=chosen, cache=_DeclaredShapes(self)))
            for sample in loaded:
                kernel_samples.setdefault(sample.platform_id, []).append(sample)
        by_platform = dataset.group_by_platform(samples)
        for pid in chosen or ():
            by_platform.setdefault(pid, [])
        if not by_platform:
            where = f" on {', '.join(chosen)}" if chosen else ""
            disturbed = sum(1 for m in measurements
                            if not m.get("failure_kind") and "disturbed" in (m.get("flags") or ())
                            and (not chosen or m.get("platform_id") in chosen))
            if disturbed:
                raise FailedPrecondition(
                    f"nothing to train on{where}: all {disturbed} successful reading(s) were flagged 'disturbed' "
                    "(the device was busy while measuring, see docs/measurement.md): measure again on a quiet "
                    "device, or widen the sweep's reading limits")
            raise FailedPrecondition(f"nothing to train on: no successful measurements{where}"
                                     " (run a sweep, or `fleetmeter import` measurements first)")
        return samples, by_platform, kernel_samples

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
