"""``FleetService``: the caller-facing front door (operators, scripts, the CLI).

Thin: every method parses the request, calls the fleet actor (or a Ray task
for CPU work) and converts the answer; listings and progress are read from the
store and the fleet's live snapshot instead (``readside.py``), so that they do not
queue behind the actor's writes. Errors are fleetmeter exceptions, mapped to
status codes by the boundary interceptor.
"""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, BinaryIO, Optional

from fleetmeter.blobs import BlobStore, is_sha256
from fleetmeter.errors import FailedPrecondition, InvalidArgument
from fleetmeter.modelfile import ModelDigest
from fleetmeter.v1 import fleet_pb2, fleet_pb2_grpc

from .convert import (agent_token_to_proto, device_to_proto, measurement_from_dict, model_to_proto, platform_to_proto,
                      progress_to_proto, spec_to_dict, sweep_to_proto)
from .engine import ActorRef
from .gateway import Notifier
from . import limits
from .inspect_model import inspect_model_file
from .readside import ReadSide

log = logging.getLogger(__name__)

MAX_MODEL_BYTES = 2 * 1024 ** 3
WATCH_POLL_S = 2.0


class FleetApi(fleet_pb2_grpc.FleetServiceServicer):
    def __init__(self, fleet: ActorRef, blobs: BlobStore, notifier: Notifier, engine, gateway=None,
                 reads: Optional[ReadSide] = None) -> None:
        self.fleet = fleet
        # Listings and progress: from the store and the fleet's live snapshot (readside.py), never queued behind
        # the fleet actor's writes; None: through the actor (the old path, kept for comparison).
        self.reads = reads
        self.blobs = blobs
        self.notifier = notifier
        self.engine = engine
        self.gateway = gateway  # the AgentGateway: told of token changes (it mirrors and enforces them)
        # Held while a model's file and row change together (an upload adopting a file and adding the row, a
        # removal deleting both), so that neither is left without the other.
        self._model_files = asyncio.Lock()

    def _wrote(self) -> None:
        """A write of this caller finished: its next read must see it (readside.py)."""
        if self.reads is not None:
            self.reads.wrote()

    async def ListDevices(self, request, context):
        if self.reads is not None:
            return await self.reads.list_devices()
        devices = await self.fleet.call("list_devices")
        return fleet_pb2.ListDevicesResponse(devices=[device_to_proto(d) for d in devices])

    async def ListPlatforms(self, request, context):
        if self.reads is not None:
            return await self.reads.list_platforms()
        platforms = await self.fleet.call("list_platforms")
        return fleet_pb2.ListPlatformsResponse(platforms=[platform_to_proto(p) for p in platforms])

    async def UploadModel(self, request_iterator, context):
        """The model streams into a staging file of the blob store, hashed as it arrives (the controller never
        holds the whole model); a Ray task inspects that file; it is adopted, or deleted on any refusal."""
        f, staged = self.blobs.staging_file()
        try:
            with f:
                header, size, sha256 = await _receive_model(request_iterator, f)
            name = header.name or "model"
            if header.size_bytes and header.size_bytes != size:
                raise InvalidArgument(f"UploadModel: {name}: received {size} bytes, the header announced "
                                      f"{header.size_bytes} (upload cut short?)")
            if not size:
                raise InvalidArgument(f"UploadModel: {name}: empty file")
            if header.sha256 and header.sha256 != sha256:
                raise InvalidArgument(f"UploadModel: {name}: content sha256 {sha256} does not match the "
                                      f"header's {header.sha256}")
            (model,) = await self.engine.map(inspect_model_file, [(str(staged), name, sha256)])
            if header.format and header.format != model["format"]:
                raise InvalidArgument(f"UploadModel: {name}: header says {header.format}, content is "
                                      f"{model['format']}")
            async with self._model_files:
                if not self.blobs.has(sha256):
                    self.blobs.adopt_hashed(staged, sha256)
                stored, already = await self.fleet.call("add_model", model)
                self._wrote()
        finally:
            staged.unlink(missing_ok=True)
        log.info("model %s (%s, %d bytes) %s", name, sha256[:12], size, "already present" if already else "added")
        return fleet_pb2.UploadModelResponse(model=model_to_proto(stored), already_present=already)

    async def ListModels(self, request, context):
        if self.reads is not None:
            return await self.reads.list_models()
        models = await self.fleet.call("list_models")
        return fleet_pb2.ListModelsResponse(models=[model_to_proto(m) for m in models])

    async def DeleteModel(self, request, context):
        """The fleet removes the row (or says why not), then the file goes."""
        async with self._model_files:
            result = await self.fleet.call("delete_model", request.model, request.force)
            self._wrote()
            sha256 = result["model"]["sha256"]
            if not self.blobs.remove(sha256):
                log.warning("model %s had no file in the blob store", sha256[:12])
        self.notifier.notify()  # sweeps whose pending jobs were dropped may have ended: tell their watchers
        log.info("model %s (%s) removed by a caller", result["model"]["name"], sha256[:12])
        return fleet_pb2.DeleteModelResponse(model=model_to_proto(result["model"]),
                                             jobs_removed=result["jobs_removed"],
                                             measurements_kept=result["measurements_kept"])

    async def ListSweeps(self, request, context):
        if self.reads is not None:
            return await self.reads.list_sweeps(list(request.states))
        sweeps = await self.fleet.call("list_sweeps", list(request.states))
        return fleet_pb2.ListSweepsResponse(sweeps=[sweep_to_proto(s) for s in sweeps])

    async def SubmitSweep(self, request, context):
        sweep = await self.fleet.call("submit_sweep", spec_to_dict(request.spec))
        self._wrote()
        self.notifier.notify()
        return fleet_pb2.SubmitSweepResponse(sweep=sweep_to_proto(sweep))

    async def GetSweep(self, request, context):
        if self.reads is not None:
            return await self.reads.get_sweep(request.sweep_id)
        sweep = await self.fleet.call("get_sweep", request.sweep_id)
        return fleet_pb2.GetSweepResponse(sweep=sweep_to_proto(sweep))

    async def WatchSweep(self, request, context) -> AsyncIterator[fleet_pb2.SweepProgress]:
        last = None
        while True:
            event = self.notifier.current()
            progress = await (self.reads.sweep_progress(request.sweep_id) if self.reads is not None
                              else self.fleet.call("sweep_progress", request.sweep_id))
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
        self._wrote()
        self.notifier.notify()
        return fleet_pb2.GetSweepResponse(sweep=sweep_to_proto(sweep))

    async def ImportMeasurements(self, request, context):
        rows = [{"line": r.line, "model_sha256": r.model_sha256, "platform": r.platform, "latency_ms": r.latency_ms,
                 "energy_mj": r.energy_mj if r.HasField("energy_mj") else None,
                 "peak_rss_bytes": r.peak_rss_bytes if r.HasField("peak_rss_bytes") else None, "family": r.family}
                for r in request.rows]
        limits.validate_import_rows(rows, source=request.source)
        result = await self.fleet.call("import_measurements", request.source or "import", rows)
        self._wrote()
        return fleet_pb2.ImportMeasurementsResponse(**result)

    async def ListMeasurements(self, request, context):
        filters = {"sweep_id": request.sweep_id, "platform_id": request.platform_id,
                   "model_sha256": request.model_sha256, "include_samples": request.include_samples}
        records = await (self.reads.list_measurements(**filters) if self.reads is not None
                         else self.fleet.call("list_measurements", **filters))
        for record in records:
            yield measurement_from_dict(record)

    # ------------------------------------------------------------ credentials and devices (operators)
    async def CreateAgentToken(self, request, context):
        created = await self.fleet.call("create_agent_token", request.name, request.agent_id)
        if self.gateway is not None:
            await self.gateway.refresh_door()
        return fleet_pb2.CreateAgentTokenResponse(token=agent_token_to_proto(created["token"]),
                                                  secret=created["secret"])

    async def ListAgentTokens(self, request, context):
        tokens = await self.fleet.call("list_agent_tokens")
        return fleet_pb2.ListAgentTokensResponse(tokens=[agent_token_to_proto(t) for t in tokens])

    async def RevokeAgentToken(self, request, context):
        token = await self.fleet.call("revoke_agent_token", request.token_id)
        if self.gateway is not None:
            self.gateway.token_revoked(token["token_id"])
            await self.gateway.refresh_door()
        return agent_token_to_proto(token)

    async def ForgetDevice(self, request, context):
        if self.gateway is not None and request.agent_id in self.gateway.sessions:
            raise FailedPrecondition(f"agent {request.agent_id} is connected: stop it first, then forget it")
        result = await self.fleet.call("forget_device", request.agent_id)
        self._wrote()
        self.notifier.notify()
        return fleet_pb2.ForgetDeviceResponse(**result)


async def _receive_model(request_iterator, f: BinaryIO) -> tuple:
    """Write an upload's chunks to ``f`` as they arrive, hashing them; ``(header, size_bytes, sha256)``.

    Refuses (InvalidArgument) as soon as the stream is wrong: no header first, two headers, a malformed
    header, more bytes than the header announced or than :data:`MAX_MODEL_BYTES`.
    """
    header, size, digest = None, 0, ModelDigest()
    async for msg in request_iterator:
        kind = msg.WhichOneof("part")
        if kind == "header":
            if header is not None:
                raise InvalidArgument("UploadModel: more than one header")
            header = msg.header
            if len(header.name) > limits.MAX_ID_CHARS:
                raise InvalidArgument(f"UploadModel: header.name is {len(header.name)} characters long, at most "
                                      f"{limits.MAX_ID_CHARS} allowed")
            if not 0 <= header.size_bytes <= MAX_MODEL_BYTES:
                raise InvalidArgument(f"UploadModel: header.size_bytes must be 0 (unknown) to {MAX_MODEL_BYTES}, "
                                      f"got {header.size_bytes}")
            if header.sha256 and not is_sha256(header.sha256):
                raise InvalidArgument(f"UploadModel: header.sha256 {header.sha256[:80]!r} is not a sha256 hex "
                                      "digest")
        elif kind == "chunk":
            if header is None:
                raise InvalidArgument("UploadModel: the first message must be the header")
            size += len(msg.chunk)
            if size > MAX_MODEL_BYTES:
                raise InvalidArgument(f"UploadModel: {header.name or 'model'}: model larger than "
                                      f"{MAX_MODEL_BYTES} bytes")
            if header.size_bytes and size > header.size_bytes:
                raise InvalidArgument(f"UploadModel: {header.name or 'model'}: received more than the "
                                      f"{header.size_bytes} bytes the header announced")
            digest.update(msg.chunk)
            f.write(msg.chunk)
    if header is None:
        raise InvalidArgument("UploadModel: empty upload (no header)")
    return header, size, digest.sha256
