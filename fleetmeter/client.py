"""Caller-side clients of the controller (used by the CLI, scripts and search loops).

:class:`FleetClient` speaks ``FleetService`` (devices, models, sweeps,
measurements); :class:`Client` adds ``PredictorService`` (predict, train,
list and pin predictors), and :func:`predict` is the one-call form for the
controller named by ``FLEETMETER_CONTROLLER``. Predictions come back as
:class:`Prediction` records with the fields of ``fleetmeter predict --json``.

Predicting sends what the features need, and only when the controller lacks
it: a request names the model by sha256 first; only when the controller
answers :class:`~fleetmeter.errors.ModelNotFound` (neither uploaded nor sent
before at these input shapes; an unknown *platform* is a plain, final
``NotFound``) does the same request go again with the model, an ONNX file
as its graph without weight bytes (``PredictRequest.model_graph``), a
TFLite file (or anything the stripper cannot walk) as its bytes. A
:class:`Client` keeps one channel for all its calls; :func:`predict` keeps
one client per (controller, token) for the process.

Every method raises a :mod:`fleetmeter.errors` exception on failure (a gRPC
status mapped back to its class), never a raw ``grpc.RpcError``.
"""
from __future__ import annotations

import hashlib
import os
import queue
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import grpc

from fleetmeter import _net
from fleetmeter._hashing import sha256_file
from fleetmeter._net import TlsFiles
from fleetmeter._rpc import from_rpc_error
from fleetmeter.errors import InvalidArgument, ModelNotFound, Unavailable, error_class_for
from fleetmeter.modelfile import detect_format
from fleetmeter.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc, predictor_pb2, predictor_pb2_grpc

__all__ = ["FleetClient", "Client", "Prediction", "TlsFiles", "predict"]

ModelArg = Union[str, os.PathLike, bytes, bytearray, memoryview]
#: Input shapes to predict at: ``{"images": (1, 3, 640, 640)}`` (the model's own layout).
ShapesArg = Optional[Mapping[str, Sequence[int]]]

UPLOAD_CHUNK_BYTES = 1024 * 1024


class FleetClient:
    """``FleetService`` calls. ``address``, ``token`` and ``tls`` default to ``$FLEETMETER_CONTROLLER``,
    ``$FLEETMETER_API_TOKEN`` and ``$FLEETMETER_TLS_CA`` / ``_CERT`` / ``_KEY`` (none set: plain text);
    ``TlsFiles()`` forces plain text."""

    def __init__(self, address: Optional[str] = None, token: Optional[str] = None,
                 tls: Optional[TlsFiles] = None, timeout_s: float = 30.0) -> None:
        self.address = _net.controller_address(address)
        self._metadata = _net.bearer(_net.api_token(token))
        tls = tls if tls is not None else _net.caller_tls()
        self._tls = tls.enabled  # for the hint when a connection fails on a TLS mismatch
        self._channel = _net.open_channel(self.address, tls)
        self._stub = fleet_pb2_grpc.FleetServiceStub(self._channel)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "FleetClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, request, timeout_s: Optional[float] = None, stub=None):
        try:
            return getattr(stub or self._stub, method)(request, metadata=self._metadata,
                                                       timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, tls=self._tls) from exc

    def _stream(self, method: str, request, timeout_s: Optional[float] = None, stub=None) -> Iterator:
        try:
            yield from getattr(stub or self._stub, method)(request, metadata=self._metadata, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, tls=self._tls) from exc

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError as exc:
            raise Unavailable(f"no controller answered at {self.address} within {timeout_s:.0f} s "
                              "(is `fleetmeter controller` running? is FLEETMETER_CONTROLLER right?)") from exc

    def list_devices(self) -> list:
        return list(self._call("ListDevices", fleet_pb2.ListDevicesRequest()).devices)

    def list_platforms(self) -> list:
        return list(self._call("ListPlatforms", fleet_pb2.ListPlatformsRequest()).platforms)

    def forget_device(self, agent_id: str) -> fleet_pb2.ForgetDeviceResponse:
        """Remove an offline device and its enrolment (its measurements stay)."""
        return self._call("ForgetDevice", fleet_pb2.ForgetDeviceRequest(agent_id=agent_id))

    def create_agent_token(self, name: str = "", agent_id: str = "") -> fleet_pb2.CreateAgentTokenResponse:
        """A per-agent token; ``.secret`` is the token itself, returned this once."""
        return self._call("CreateAgentToken", fleet_pb2.CreateAgentTokenRequest(name=name, agent_id=agent_id))

    def list_agent_tokens(self) -> list:
        return list(self._call("ListAgentTokens", fleet_pb2.ListAgentTokensRequest()).tokens)

    def revoke_agent_token(self, token_id: str) -> fleet_pb2.AgentToken:
        return self._call("RevokeAgentToken", fleet_pb2.RevokeAgentTokenRequest(token_id=token_id))

    def list_models(self) -> list:
        return list(self._call("ListModels", fleet_pb2.ListModelsRequest()).models)

    def upload_model(self, path: str | Path, name: Optional[str] = None,
                     progress: Optional[Callable[[int, int], None]] = None) -> fleet_pb2.UploadModelResponse:
        path = Path(path)
        size = path.stat().st_size
        sha256 = sha256_file(path)

        def requests():
            yield fleet_pb2.UploadModelRequest(header=fleet_pb2.ModelUploadHeader(
                name=name or path.name, size_bytes=size, sha256=sha256))
            sent = 0
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(UPLOAD_CHUNK_BYTES), b""):
                    sent += len(block)
                    yield fleet_pb2.UploadModelRequest(chunk=block)
                    if progress:
                        progress(sent, size)

        timeout_s = max(self.timeout_s, 60.0 + size / (5 * 1024 * 1024))
        return self._call("UploadModel", requests(), timeout_s=timeout_s)

    def delete_model(self, model: str, force: bool = False) -> fleet_pb2.DeleteModelResponse:
        """Remove an uploaded model (sha256, unique prefix or name): its file and row; its measurements stay.
        FailedPrecondition while jobs need it (``force`` drops its pending ones), NotFound if unknown."""
        return self._call("DeleteModel", fleet_pb2.DeleteModelRequest(model=model, force=force))

    def list_sweeps(self, states: Sequence[str] = ()) -> list:
        """Sweeps (with their progress), newest first; only those in ``states`` ("running", "paused",
        "cancelled", "done") when given."""
        return list(self._call("ListSweeps", fleet_pb2.ListSweepsRequest(states=list(states))).sweeps)

    def submit_sweep(self, spec: fleet_pb2.SweepSpec) -> fleet_pb2.Sweep:
        return self._call("SubmitSweep", fleet_pb2.SubmitSweepRequest(spec=spec)).sweep

    def get_sweep(self, sweep_id: str) -> fleet_pb2.Sweep:
        return self._call("GetSweep", fleet_pb2.GetSweepRequest(sweep_id=sweep_id)).sweep

    def cancel_sweep(self, sweep_id: str) -> fleet_pb2.Sweep:
        return self._call("CancelSweep", fleet_pb2.SweepControlRequest(sweep_id=sweep_id)).sweep

    def pause_sweep(self, sweep_id: str) -> fleet_pb2.Sweep:
        return self._call("PauseSweep", fleet_pb2.SweepControlRequest(sweep_id=sweep_id)).sweep

    def resume_sweep(self, sweep_id: str) -> fleet_pb2.Sweep:
        return self._call("ResumeSweep", fleet_pb2.SweepControlRequest(sweep_id=sweep_id)).sweep

    def watch_sweep(self, sweep_id: str, timeout_s: Optional[float] = None) -> Iterator[fleet_pb2.SweepProgress]:
        return self._stream("WatchSweep", fleet_pb2.WatchSweepRequest(sweep_id=sweep_id), timeout_s)

    def import_measurements(self, source: str, rows: list) -> fleet_pb2.ImportMeasurementsResponse:
        """``rows``: ``fleet_pb2.ImportedMeasurement`` messages; all are stored or none."""
        return self._call("ImportMeasurements", fleet_pb2.ImportMeasurementsRequest(source=source, rows=rows),
                          timeout_s=max(self.timeout_s, 120.0))

    def list_measurements(self, sweep_id: str = "", platform_id: str = "", model_sha256: str = "",
                          include_samples: bool = False) -> list:
        return list(self._stream("ListMeasurements", fleet_pb2.ListMeasurementsRequest(
            sweep_id=sweep_id, platform_id=platform_id, model_sha256=model_sha256,
            include_samples=include_samples), timeout_s=max(self.timeout_s, 120.0)))

    def results_df(self, sweep: Optional[str] = None, platform: Optional[str] = None, *, samples: bool = False):
        """The measurements (of one sweep and/or platform id when given) as a pandas DataFrame: one row per
        measurement, its columns exactly the fields of ``fleetmeter results --json`` in that order (``samples``:
        plus ``samples_ms``, as ``--samples`` adds it). Needs the ``data`` extra (pandas)."""
        from fleetmeter.frames import data_frame, fetch_result_rows, result_keys

        return data_frame(fetch_result_rows(self, sweep, platform, samples), result_keys(samples), "results_df")


# ------------------------------------------------------------------ predictions


@dataclass(frozen=True)
class Prediction:
    """One predicted cost: ``value`` in ``unit`` on ``platform``, with its interval.

    ``lower``/``upper`` bound the ``interval_level`` interval learned from
    held-out residuals (``None`` when the predictor has none); ``warnings``
    says when the value extrapolates (e.g. an operator never seen in
    training). :meth:`to_dict` gives the ``fleetmeter predict --json`` record.
    """

    platform: str
    target: str
    value: float
    lower: Optional[float]
    upper: Optional[float]
    unit: str
    predictor_version: int
    granularity: str = "model"
    interval_level: float = 0.0
    warnings: Tuple[str, ...] = field(default=())
    #: Which candidate serves (``lgbm``, ``additive``, ``additive_lgbm``, a baseline, or ``kernel``).
    method: str = ""

    @classmethod
    def from_proto(cls, p: predictor_pb2.Prediction) -> "Prediction":
        return cls(platform=p.platform, target=p.target, value=p.value,
                   lower=p.lower if p.HasField("lower") else None, upper=p.upper if p.HasField("upper") else None,
                   unit=p.unit, predictor_version=p.predictor_version, granularity=p.granularity,
                   interval_level=p.interval_level, warnings=tuple(p.warnings), method=p.method)

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        return out


#: The fields of a ``fleetmeter predict --json`` record (:meth:`Prediction.to_dict`), in order.
PREDICTION_COLUMNS = tuple(f.name for f in fields(Prediction))


def _as_list(value: Union[None, str, Iterable[str]]) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def shapes_to_proto(shapes: ShapesArg) -> List[common_pb2.InputOverride]:
    """``{"images": (1, 3, 640, 640)}`` as ``PredictRequest.input_shapes``; InvalidArgument for a bad entry."""
    out = []
    for name, dims in (shapes or {}).items():
        if isinstance(dims, (str, bytes)):
            raise InvalidArgument(f"shape of {name!r} must be a sequence of integers such as (1, 3, 640, 640), "
                                  f"got {dims!r}")
        try:
            shape = [int(d) for d in dims]
        except (TypeError, ValueError):
            raise InvalidArgument(f"shape of {name!r} must be a sequence of integers, got {dims!r}") from None
        if not name or not shape or any(d < 1 for d in shape):
            raise InvalidArgument(f"bad input shape {name!r}: {dims!r} (a name and positive dimensions)")
        out.append(common_pb2.InputOverride(name=str(name), shape=shape))
    return out


def _read_model(model: ModelArg) -> Tuple[bytes, str]:
    """``(content, name)`` of a path (read here) or the file's bytes."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "model"
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise InvalidArgument(f"model file not found: {path}")
        return path.read_bytes(), path.name
    raise InvalidArgument(f"model must be a path or bytes, got {type(model).__name__}")


def predict_request(model: ModelArg, platforms=None, targets=("latency_ms",), request_id: str = "",
                    shapes: ShapesArg = None) -> predictor_pb2.PredictRequest:
    """The request that sends ``model`` whole: a path (read here) or the file's bytes."""
    data, name = _read_model(model)
    return predictor_pb2.PredictRequest(model_bytes=data, model_name=name, platforms=_as_list(platforms),
                                        targets=_as_list(targets), request_id=request_id,
                                        input_shapes=shapes_to_proto(shapes))


class _Model:
    """A model as the caller has it: its content, name and sha256 (computed once)."""

    def __init__(self, model: ModelArg) -> None:
        self.data, self.name = _read_model(model)
        self.sha256 = hashlib.sha256(self.data).hexdigest()

    def by_sha256(self, base: predictor_pb2.PredictRequest, request_id: str = "") -> predictor_pb2.PredictRequest:
        """``base`` naming the model by its sha256 alone."""
        request = predictor_pb2.PredictRequest()
        request.CopyFrom(base)
        request.model_sha256 = self.sha256
        request.request_id = request_id
        return request

    def sent(self, base: predictor_pb2.PredictRequest, request_id: str = "") -> predictor_pb2.PredictRequest:
        """``base`` carrying the model: an ONNX file's graph without its weights when stripping makes it
        smaller, else the bytes (TFLite, a small model, or content the stripper cannot walk: the
        controller's parser then names what is wrong)."""
        request = predictor_pb2.PredictRequest()
        request.CopyFrom(base)
        request.request_id = request_id
        light = None
        if detect_format(self.data, self.name) == "onnx":
            from fleetmeter._onnx_wire import light_model_bytes

            try:
                light = light_model_bytes(self.data, mark=True)
            except (ValueError, IndexError):
                light = None
        if light is not None and len(light) < len(self.data):
            request.model_graph.onnx = light
            request.model_graph.sha256 = self.sha256
        else:
            request.model_bytes = self.data
        return request


def _base_request(name: str, platforms, targets, shapes: ShapesArg) -> predictor_pb2.PredictRequest:
    return predictor_pb2.PredictRequest(model_name=name, platforms=_as_list(platforms), targets=_as_list(targets),
                                        input_shapes=shapes_to_proto(shapes))


class Client(FleetClient):
    """A :class:`FleetClient` that also predicts: ``Client(address, token).predict("m.onnx")``."""

    def __init__(self, address: Optional[str] = None, token: Optional[str] = None,
                 tls: Optional[TlsFiles] = None, timeout_s: float = 30.0) -> None:
        super().__init__(address, token, tls, timeout_s)
        self._predictor = predictor_pb2_grpc.PredictorServiceStub(self._channel)

    def _pcall(self, method: str, request, timeout_s: Optional[float] = None):
        return self._call(method, request, timeout_s, stub=self._predictor)

    def _pstream(self, method: str, request, timeout_s: Optional[float] = None) -> Iterator:
        return self._stream(method, request, timeout_s, stub=self._predictor)

    def predict(self, model: ModelArg, platforms: Union[None, str, Sequence[str]] = None,
                targets: Union[str, Sequence[str]] = ("latency_ms",), *, shapes: ShapesArg = None
                ) -> List[Prediction]:
        """Predicted costs of ``model`` (a path or bytes) on ``platforms`` (default: every one with a
        predictor), one :class:`Prediction` per (platform, target), at the input ``shapes`` given
        (``{"images": (1, 3, 640, 640)}``; others as the file declares them, dynamic dimensions 1).

        Asks by sha256 first and sends the model only on :class:`~fleetmeter.errors.ModelNotFound`
        (see the module docstring)."""
        m = _Model(model)
        base = _base_request(m.name, platforms, targets, shapes)
        try:
            response = self._pcall("Predict", m.by_sha256(base))
        except ModelNotFound:
            response = self._pcall("Predict", m.sent(base))
        return [Prediction.from_proto(p) for p in response.predictions]

    def predict_batch(self, models: Iterable[ModelArg], platforms: Union[None, str, Sequence[str]] = None,
                      targets: Union[str, Sequence[str]] = ("latency_ms",), *, shapes: ShapesArg = None
                      ) -> Iterator[Union[List[Prediction], Exception]]:
        """Many models over one stream (for search loops): per model, in order, its predictions, or the
        exception saying why that one failed (the others go on). A path that does not exist raises
        before anything is sent. Each model is asked for by sha256 first; the ones the controller does
        not have go again on the same stream, with their graph or bytes."""
        return self._predict_loaded([_Model(m) for m in models], platforms, targets, shapes)

    def _predict_loaded(self, loaded: List[_Model], platforms, targets, shapes: ShapesArg
                        ) -> Iterator[Union[List[Prediction], Exception]]:
        """:meth:`predict_batch` of models already read."""
        base = _base_request("", platforms, targets, shapes)
        outbox: "queue.SimpleQueue[Optional[predictor_pb2.PredictRequest]]" = queue.SimpleQueue()
        for i, m in enumerate(loaded):
            request = m.by_sha256(base, str(i))
            request.model_name = m.name
            outbox.put(request)
        if not loaded:
            outbox.put(None)

        def requests() -> Iterator[predictor_pb2.PredictRequest]:
            while True:
                request = outbox.get()
                if request is None:
                    return
                yield request

        done: Dict[int, Union[List[Prediction], Exception]] = {}
        resent: set = set()
        next_index = 0
        try:
            for response in self._pstream("PredictBatch", requests()):
                i = int(response.request_id)
                if response.model_not_found and i not in resent:
                    resent.add(i)
                    request = loaded[i].sent(base, str(i))
                    request.model_name = loaded[i].name
                    outbox.put(request)
                    continue
                if response.error:
                    done[i] = error_class_for(response.error_code, response.model_not_found)(response.error)
                else:
                    done[i] = [Prediction.from_proto(p) for p in response.predictions]
                while next_index in done:
                    yield done.pop(next_index)
                    next_index += 1
                if next_index == len(loaded):
                    outbox.put(None)  # every model answered: end the stream
        finally:
            outbox.put(None)  # the caller stopped early or the call failed: let the sending thread end

    def predictions_df(self, models: Iterable[ModelArg], platforms: Union[None, str, Sequence[str]] = None,
                       targets: Union[str, Sequence[str]] = ("latency_ms",), *, shapes: ShapesArg = None):
        """Predictions for many ``models`` (paths or bytes, over one :meth:`predict_batch` stream) as a pandas
        DataFrame: one row per (model, platform, target), its columns ``model`` (the path as given; for bytes,
        the first 12 hex digits of the sha256) and ``model_sha256``, then exactly the fields of ``fleetmeter
        predict --json`` (:data:`PREDICTION_COLUMNS`). A model that cannot be predicted raises its error,
        prefixed with the model. Needs the ``data`` extra (pandas)."""
        from fleetmeter.frames import data_frame

        given = list(models)
        loaded = [_Model(m) for m in given]
        rows: List[Dict[str, Any]] = []
        for arg, m, result in zip(given, loaded, self._predict_loaded(loaded, platforms, targets, shapes)):
            label = os.fspath(arg) if isinstance(arg, (str, os.PathLike)) else m.sha256[:12]
            if isinstance(result, Exception):
                raise type(result)(f"{label}: {result}") from result
            rows += [{"model": label, "model_sha256": m.sha256, **p.to_dict()} for p in result]
        return data_frame(rows, ("model", "model_sha256", *PREDICTION_COLUMNS), "predictions_df")

    def predict_sha256(self, sha256: str, platforms=None, targets=("latency_ms",), *,
                       shapes: ShapesArg = None) -> List[Prediction]:
        """Predictions for a model the controller has (uploaded, or sent before at these ``shapes``): nothing
        is sent but its hash. :class:`~fleetmeter.errors.ModelNotFound` when it has neither."""
        response = self._pcall("Predict", predictor_pb2.PredictRequest(
            model_sha256=sha256, platforms=_as_list(platforms), targets=_as_list(targets),
            input_shapes=shapes_to_proto(shapes)))
        return [Prediction.from_proto(p) for p in response.predictions]

    def list_predictors(self, platforms=None, targets=None) -> list:
        return list(self._pcall("ListPredictors", predictor_pb2.ListPredictorsRequest(
            platforms=_as_list(platforms), targets=_as_list(targets))).predictors)

    def pin_predictor(self, platform: str, target: str, version: int) -> predictor_pb2.PredictorInfo:
        """Serve ``version`` of (platform, target) from now on; ``version=0`` unpins (the latest serves)."""
        return self._pcall("PinPredictor", predictor_pb2.PinPredictorRequest(
            platform=platform, target=target, version=version))

    def train(self, platforms=None, targets=None, *, seed: int = 0, skip_family_split: bool = False,
              min_samples: int = 0, timeout_s: Optional[float] = None) -> Iterator[predictor_pb2.TrainProgress]:
        """Train on the controller; yields progress, the last message carries the results."""
        return self._pstream("Train", predictor_pb2.TrainRequest(
            platforms=_as_list(platforms), targets=_as_list(targets), seed=seed,
            skip_family_split=skip_family_split, min_samples=min_samples), timeout_s)

    def plan_adapt(self, platform: str, from_platforms=None, budget: int = 20, models=None, *, seed: int = 0,
                   target: str = "latency_ms") -> predictor_pb2.PlanAdaptResponse:
        """Which ``budget`` models to measure on the new ``platform`` for a transfer from ``from_platforms``
        (default: every other platform with a model-level predictor), among ``models`` (sha256, prefixes,
        names or name patterns; default: every stored model); cheapest first."""
        return self._pcall("PlanAdapt", predictor_pb2.PlanAdaptRequest(
            platform=platform, from_platforms=_as_list(from_platforms), budget=budget, models=_as_list(models),
            seed=seed, target=target))

    def adapt_from_readings(self, platform: str, from_platforms=None, budget: int = 0, models=None, *,
                            targets=None, seed: int = 0, timeout_s: Optional[float] = None
                            ) -> Iterator[predictor_pb2.TrainProgress]:
        """Fit the transferred predictors of ``platform`` from its stored readings (all; ``budget`` > 0: the
        ones a plan would choose among them; ``models``: only those); yields progress, the last message
        carries the results (as :meth:`train`)."""
        return self._pstream("Adapt", predictor_pb2.AdaptRequest(
            platform=platform, from_platforms=_as_list(from_platforms), targets=_as_list(targets), budget=budget,
            models=_as_list(models), seed=seed), timeout_s)

    def adapt(self, platform: str, from_platforms=None, budget: int = 20, models=None, *, wait: bool = True,
              from_readings: bool = False, targets=None, seed: int = 0,
              progress: Optional[Callable[[str, Any], None]] = None,
              spec: Optional[fleet_pb2.SweepSpec] = None) -> Dict[str, Any]:
        """``fleetmeter adapt``: a predictor for a new ``platform`` from ``budget`` measurements.

        Plans which models to measure (:meth:`plan_adapt`), submits them as a sweep on ``platform``, and
        with ``wait`` follows it and fits the transferred predictors (:meth:`adapt_from_readings` on the
        planned models). ``from_readings``: no sweep; the platform's stored readings (or the ``budget``
        chosen among them; 0: all) are used. ``progress(stage, message)`` hears ``"plan"`` (the plan),
        ``"measuring"`` (each ``SweepProgress``) and ``"training"`` (each ``TrainProgress``).
        ``spec``: the sweep's settings (``settings``, ``reading``, ``repeats``...; its name, models and
        platforms are set here).
        Returns ``{"platform", "from_platforms", "models", "sweep_id", "sweep_state", "results"}``;
        ``results`` are ``TrainedPredictor`` messages (empty when not waiting).
        """
        say = progress or (lambda stage, message: None)
        out: Dict[str, Any] = {"platform": platform, "from_platforms": [], "models": [], "sweep_id": "",
                               "sweep_state": "", "results": []}
        chosen: List[str] = []
        if not from_readings:
            plan = self.plan_adapt(platform, from_platforms, budget, models, seed=seed)
            say("plan", plan)
            chosen = [m.model_sha256 for m in plan.models]
            out.update(platform=plan.platform, from_platforms=list(plan.from_platforms), models=chosen)
            sweep_spec = fleet_pb2.SweepSpec()
            if spec is not None:
                sweep_spec.CopyFrom(spec)
            sweep_spec.name = sweep_spec.name or f"adapt {plan.platform}"
            sweep_spec.ClearField("models")
            sweep_spec.models.extend(chosen)
            sweep_spec.platforms.CopyFrom(fleet_pb2.PlatformSelector(platform_ids=[plan.platform]))
            sweep = self.submit_sweep(sweep_spec)
            out.update(sweep_id=sweep.sweep_id, sweep_state=sweep.progress.state)
            if not wait:
                return out
            for update in self.watch_sweep(sweep.sweep_id):
                say("measuring", update)
                out["sweep_state"] = update.state
            platform = plan.platform
        for message in self.adapt_from_readings(platform, from_platforms, budget if from_readings else 0,
                                                chosen or models, targets=targets, seed=seed):
            say("training", message)
            if message.stage == "done":
                out["results"] = list(message.results)
        return out


_SHARED_CLIENTS: Dict[Tuple[str, Optional[str], TlsFiles], Client] = {}
_SHARED_LOCK = threading.Lock()


def _shared_client() -> Client:
    """The process's client for the controller, token and TLS files the environment names (one channel
    each, reused)."""
    key = (_net.controller_address(None), _net.api_token(None), _net.caller_tls())
    with _SHARED_LOCK:
        client = _SHARED_CLIENTS.get(key)
        if client is None:
            client = _SHARED_CLIENTS[key] = Client(*key)
        return client


def predict(model: ModelArg, platforms: Union[None, str, Sequence[str]] = None,
            targets: Union[str, Sequence[str]] = ("latency_ms",), *, shapes: ShapesArg = None) -> List[Prediction]:
    """What ``model`` (a path or the file's bytes) costs on each platform, at the input ``shapes`` given
    (``{"images": (1, 3, 640, 640)}``), asked of the controller named by ``FLEETMETER_CONTROLLER`` (token:
    ``FLEETMETER_API_TOKEN``; TLS: ``FLEETMETER_TLS_CA``, and ``FLEETMETER_TLS_CERT`` / ``FLEETMETER_TLS_KEY``
    for mutual TLS) over a channel kept for the process. See :class:`Client` for explicit use."""
    return _shared_client().predict(model, platforms, targets, shapes=shapes)
