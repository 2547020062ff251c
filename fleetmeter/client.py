"""Caller-side clients of the controller (used by the CLI, scripts and search loops).

:class:`FleetClient` speaks ``FleetService`` (devices, models, sweeps,
measurements); :class:`Client` adds ``PredictorService`` (predict, train,
list and pin predictors), and :func:`predict` is the one-call form for the
controller named by ``FLEETMETER_CONTROLLER``. Predictions come back as
:class:`Prediction` records with the fields of ``fleetmeter predict --json``.

Every method raises a :mod:`fleetmeter.errors` exception on failure (a gRPC
status mapped back to its class), never a raw ``grpc.RpcError``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

from fleetmeter import _net
from fleetmeter._hashing import sha256_file
from fleetmeter.errors import InvalidArgument, from_rpc_error
from fleetmeter.v1 import fleet_pb2, fleet_pb2_grpc, predictor_pb2, predictor_pb2_grpc

__all__ = ["FleetClient", "Client", "Prediction", "predict"]

ModelArg = Union[str, os.PathLike, bytes, bytearray, memoryview]

UPLOAD_CHUNK_BYTES = 1024 * 1024


class FleetClient:
    def __init__(self, address: Optional[str] = None, token: Optional[str] = None,
                 tls: Optional[_net.TlsFiles] = None, timeout_s: float = 30.0) -> None:
        self.address = _net.controller_address(address)
        self._metadata = _net.bearer(_net.api_token(token))
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
            raise from_rpc_error(exc) from exc

    def _stream(self, method: str, request, timeout_s: Optional[float] = None, stub=None) -> Iterator:
        try:
            yield from getattr(stub or self._stub, method)(request, metadata=self._metadata, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError as exc:
            from fleetmeter.errors import Unavailable
            raise Unavailable(f"no controller answered at {self.address} within {timeout_s:.0f} s "
                              "(is `fleetmeter controller` running? is FLEETMETER_CONTROLLER right?)") from exc

    def list_devices(self) -> list:
        return list(self._call("ListDevices", fleet_pb2.ListDevicesRequest()).devices)

    def list_platforms(self) -> list:
        return list(self._call("ListPlatforms", fleet_pb2.ListPlatformsRequest()).platforms)

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

    @classmethod
    def from_proto(cls, p: predictor_pb2.Prediction) -> "Prediction":
        return cls(platform=p.platform, target=p.target, value=p.value,
                   lower=p.lower if p.HasField("lower") else None, upper=p.upper if p.HasField("upper") else None,
                   unit=p.unit, predictor_version=p.predictor_version, granularity=p.granularity,
                   interval_level=p.interval_level, warnings=tuple(p.warnings))

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        return out


def _as_list(value: Union[None, str, Iterable[str]]) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def predict_request(model: ModelArg, platforms=None, targets=("latency_ms",), request_id: str = ""
                    ) -> predictor_pb2.PredictRequest:
    """The request for ``model``: a path (read here and sent) or the file's bytes."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, name = bytes(model), "model"
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise InvalidArgument(f"model file not found: {path}")
        data, name = path.read_bytes(), path.name
    else:
        raise InvalidArgument(f"model must be a path or bytes, got {type(model).__name__}")
    return predictor_pb2.PredictRequest(model_bytes=data, model_name=name, platforms=_as_list(platforms),
                                        targets=_as_list(targets), request_id=request_id)


class Client(FleetClient):
    """A :class:`FleetClient` that also predicts: ``Client(address, token).predict("m.onnx")``."""

    def __init__(self, address: Optional[str] = None, token: Optional[str] = None,
                 tls: Optional[_net.TlsFiles] = None, timeout_s: float = 30.0) -> None:
        super().__init__(address, token, tls, timeout_s)
        self._predictor = predictor_pb2_grpc.PredictorServiceStub(self._channel)

    def _pcall(self, method: str, request, timeout_s: Optional[float] = None):
        return self._call(method, request, timeout_s, stub=self._predictor)

    def _pstream(self, method: str, request, timeout_s: Optional[float] = None) -> Iterator:
        return self._stream(method, request, timeout_s, stub=self._predictor)

    def predict(self, model: ModelArg, platforms: Union[None, str, Sequence[str]] = None,
                targets: Union[str, Sequence[str]] = ("latency_ms",)) -> List[Prediction]:
        """Predicted costs of ``model`` (a path or bytes) on ``platforms`` (default: every one with a
        predictor), one :class:`Prediction` per (platform, target)."""
        response = self._pcall("Predict", predict_request(model, platforms, targets))
        return [Prediction.from_proto(p) for p in response.predictions]

    def predict_batch(self, models: Iterable[ModelArg], platforms: Union[None, str, Sequence[str]] = None,
                      targets: Union[str, Sequence[str]] = ("latency_ms",)
                      ) -> Iterator[Union[List[Prediction], Exception]]:
        """Many models over one stream (for search loops): per model, in order, its predictions, or the
        exception saying why that one failed (the others go on). A path that does not exist raises
        before anything is sent."""
        from fleetmeter.errors import FleetmeterError, _BY_CODE

        requests = [predict_request(m, platforms, targets, request_id=str(i)) for i, m in enumerate(models)]
        for response in self._pstream("PredictBatch", iter(requests)):
            if response.error:
                cls = _BY_CODE.get(getattr(grpc.StatusCode, response.error_code, None), FleetmeterError)
                yield cls(response.error)
            else:
                yield [Prediction.from_proto(p) for p in response.predictions]

    def predict_sha256(self, sha256: str, platforms=None, targets=("latency_ms",)) -> List[Prediction]:
        """Predictions for a model already uploaded to the controller (nothing is sent but its hash)."""
        response = self._pcall("Predict", predictor_pb2.PredictRequest(
            model_sha256=sha256, platforms=_as_list(platforms), targets=_as_list(targets)))
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


def predict(model: ModelArg, platforms: Union[None, str, Sequence[str]] = None,
            targets: Union[str, Sequence[str]] = ("latency_ms",)) -> List[Prediction]:
    """What ``model`` (a path or the file's bytes) costs on each platform, asked of the controller named by
    ``FLEETMETER_CONTROLLER`` (token: ``FLEETMETER_API_TOKEN``). See :class:`Client` for explicit use."""
    with Client() as client:
        return client.predict(model, platforms, targets)
