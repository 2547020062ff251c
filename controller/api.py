"""``FleetService``: the caller-facing front door (operators, scripts, the CLI).

Thin: every method parses the request, calls the fleet actor (or a Ray task
for CPU work) and converts the answer. Errors are fleetmeter exceptions,
mapped to status codes by the boundary interceptor.
"""
from __future__ import annotations

import logging
from typing import AsyncIterator

from fleetmeter.errors import InvalidArgument
from fleetmeter.v1 import fleet_pb2, fleet_pb2_grpc

from .blobs import BlobStore, is_sha256
from .convert import (device_to_proto, measurement_from_dict, model_to_proto, platform_to_proto,
                      progress_to_proto, spec_to_dict, sweep_to_proto)
from .engine import ActorRef
from .gateway import Notifier
from .inspect_model import inspect_model_bytes

log = logging.getLogger(__name__)

MAX_MODEL_BYTES = 2 * 1024 ** 3
WATCH_POLL_S = 2.0


class FleetApi(fleet_pb2_grpc.FleetServiceServicer):
    def __init__(self, fleet: ActorRef, blobs: BlobStore, notifier: Notifier, engine) -> None:
        self.fleet = fleet
        self.blobs = blobs
        self.notifier = notifier
        self.engine = engine

    async def ListDevices(self, request, context):
        devices = await self.fleet.call("list_devices")
        return fleet_pb2.ListDevicesResponse(devices=[device_to_proto(d) for d in devices])

    async def ListPlatforms(self, request, context):
        platforms = await self.fleet.call("list_platforms")
        return fleet_pb2.ListPlatformsResponse(platforms=[platform_to_proto(p) for p in platforms])

    async def UploadModel(self, request_iterator, context):
        header = None
        parts: list[bytes] = []
        size = 0
        async for msg in request_iterator:
            kind = msg.WhichOneof("part")
            if kind == "header":
                if header is not None:
                    raise InvalidArgument("UploadModel: more than one header")
                header = msg.header
            elif kind == "chunk":
                if header is None:
                    raise InvalidArgument("UploadModel: the first message must be the header")
                size += len(msg.chunk)
                if size > MAX_MODEL_BYTES:
                    raise InvalidArgument(f"UploadModel: model larger than {MAX_MODEL_BYTES} bytes")
                parts.append(msg.chunk)
        if header is None:
            raise InvalidArgument("UploadModel: empty upload (no header)")
        data = b"".join(parts)
        del parts
        if header.size_bytes and header.size_bytes != len(data):
            raise InvalidArgument(f"UploadModel: {header.name}: received {len(data)} bytes, the header announced "
                                  f"{header.size_bytes} (upload cut short?)")
        if header.sha256 and not is_sha256(header.sha256):
            raise InvalidArgument(f"UploadModel: header sha256 {header.sha256!r} is not a sha256 hex digest")
        name = header.name or "model"
        (model,) = await self.engine.map(inspect_model_bytes, [(data, name)])
        if header.sha256 and header.sha256 != model["sha256"]:
            raise InvalidArgument(f"UploadModel: {name}: content sha256 {model['sha256']} does not match the "
                                  f"header's {header.sha256}")
        if header.format and header.format != model["format"]:
            raise InvalidArgument(f"UploadModel: {name}: header says {header.format}, content is {model['format']}")
        if not self.blobs.has(model["sha256"]):
            f, staged = self.blobs.staging_file()
            with f:
                f.write(data)
            self.blobs.adopt(staged, model["sha256"])
        stored, already = await self.fleet.call("add_model", model)
        log.info("model %s (%s, %d bytes) %s", name, model["sha256"][:12], len(data),
                 "already present" if already else "added")
        return fleet_pb2.UploadModelResponse(model=model_to_proto(stored), already_present=already)

    async def ListModels(self, request, context):
        models = await self.fleet.call("list_models")
        return fleet_pb2.ListModelsResponse(models=[model_to_proto(m) for m in models])

    async def SubmitSweep(self, request, context):
        sweep = await self.fleet.call("submit_sweep", spec_to_dict(request.spec))
        self.notifier.notify()
        return fleet_pb2.SubmitSweepResponse(sweep=sweep_to_proto(sweep))

    async def GetSweep(self, request, context):
        sweep = await self.fleet.call("get_sweep", request.sweep_id)
        return fleet_pb2.GetSweepResponse(sweep=sweep_to_proto(sweep))

    async def WatchSweep(self, request, context) -> AsyncIterator[fleet_pb2.SweepProgress]:
        last = None
        while True:
            event = self.notifier.current()
            progress = await self.fleet.call("sweep_progress", request.sweep_id)
            key = tuple(progress[k] for k in ("pending", "leased", "done", "failed", "cancelled", "state"))
            if key != last:
                last = key
                yield progress_to_proto(progress)
            if progress["state"] in ("done", "cancelled") and progress["leased"] == 0:
                return
            await self.notifier.wait(event, WATCH_POLL_S)

    async def CancelSweep(self, request, context):
        return await self._control("cancel_sweep", request.sweep_id)

    async def PauseSweep(self, request, context):
        return await self._control("pause_sweep", request.sweep_id)

    async def ResumeSweep(self, request, context):
        return await self._control("resume_sweep", request.sweep_id)

    async def _control(self, method: str, sweep_id: str):
        sweep = await self.fleet.call(method, sweep_id)
        self.notifier.notify()
        return fleet_pb2.GetSweepResponse(sweep=sweep_to_proto(sweep))

    async def ImportMeasurements(self, request, context):
        rows = [{"line": r.line, "model_sha256": r.model_sha256, "platform": r.platform, "latency_ms": r.latency_ms,
                 "energy_mj": r.energy_mj if r.HasField("energy_mj") else None,
                 "peak_rss_bytes": r.peak_rss_bytes if r.HasField("peak_rss_bytes") else None, "family": r.family}
                for r in request.rows]
        result = await self.fleet.call("import_measurements", request.source or "import", rows)
        return fleet_pb2.ImportMeasurementsResponse(**result)

    async def ListMeasurements(self, request, context):
        records = await self.fleet.call("list_measurements", sweep_id=request.sweep_id,
                                        platform_id=request.platform_id, model_sha256=request.model_sha256,
                                        include_samples=request.include_samples)
        for record in records:
            yield measurement_from_dict(record)
