"""Caller-side client of the controller's ``FleetService`` (used by the CLI and scripts).

Every method raises a :mod:`fleetmeter.errors` exception on failure (a gRPC
status mapped back to its class), never a raw ``grpc.RpcError``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Optional

import grpc

from fleetmeter import _net
from fleetmeter._hashing import sha256_file
from fleetmeter.errors import from_rpc_error
from fleetmeter.v1 import fleet_pb2, fleet_pb2_grpc

__all__ = ["FleetClient"]

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

    def _call(self, method: str, request, timeout_s: Optional[float] = None):
        try:
            return getattr(self._stub, method)(request, metadata=self._metadata,
                                               timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    def _stream(self, method: str, request, timeout_s: Optional[float] = None) -> Iterator:
        try:
            yield from getattr(self._stub, method)(request, metadata=self._metadata, timeout=timeout_s)
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
