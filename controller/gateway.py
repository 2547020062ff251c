"""``AgentService``: the one class in the controller that speaks to agents.

Per connected agent a reader coroutine takes hello, heartbeats and results off
its stream. Work with the fleet actor is batched, so that one actor call serves
many agents (a thousand agents would otherwise mean thousands of calls a second):

- a dispatcher asks the fleet to ``assign`` jobs to *all* idle agents at once,
  whenever something changed (a sweep arrived, a job finished, a lease expired);
- results are collected and recorded together (``record_results``), and each is
  acknowledged to its agent only after the store committed it;
- heartbeats are collected and flushed together (``heartbeats``).
"""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Optional

from fleetmeter.errors import InvalidArgument, NotFound
from fleetmeter.v1 import agent_pb2, agent_pb2_grpc

from .blobs import BlobStore
from .convert import assignment_to_proto, hello_to_dict, measurement_to_dict
from .engine import ActorRef

log = logging.getLogger(__name__)

# Wake idle agents at least this often even without a notification.
IDLE_POLL_S = 1.0


class Notifier:
    """Broadcast "something changed" to every waiting coroutine (never loses a wake-up:
    take ``current()`` before checking, then ``wait()`` on it)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    @staticmethod
    async def wait(event: asyncio.Event, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass


class _Session:
    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.out: asyncio.Queue = asyncio.Queue()
        self.job_id: Optional[str] = None   # the job we handed out and await a result for
        self.ready = False                  # welcomed: may be given work


class AgentGateway(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, fleet: ActorRef, blobs: BlobStore, notifier: Notifier) -> None:
        self.fleet = fleet
        self.blobs = blobs
        self.notifier = notifier
        self.sessions: dict[str, _Session] = {}
        self._results: asyncio.Queue = asyncio.Queue()   # (session, record) awaiting the store
        self._beats: dict[str, str] = {}                  # agent_id → the job it reports
        self.heartbeat_flush_s = 0.5

    async def run(self) -> None:
        """The gateway's background work: the dispatcher and the result and heartbeat flushers."""
        await asyncio.gather(self._dispatch(), self._flush_results(), self._flush_heartbeats())

    async def Connect(self, request_iterator, context) -> AsyncIterator[agent_pb2.ControllerMessage]:
        first = await request_iterator.__anext__()
        if first.WhichOneof("kind") != "hello":
            raise InvalidArgument("the first message on Connect must be a hello")
        hello = hello_to_dict(first.hello)
        welcome = await self.fleet.call("register_agent", hello)
        agent_id = welcome["agent_id"]
        previous = self.sessions.get(agent_id)
        if previous is not None:  # a reconnect that overtook the old stream's end
            previous.out.put_nowait(None)
        session = self.sessions[agent_id] = _Session(agent_id)
        session.job_id = hello["current_job_id"] or None
        log.info("agent %s (%s) connected: %d platform(s)", hello["name"], agent_id, len(welcome["platform_ids"]))
        yield agent_pb2.ControllerMessage(welcome=agent_pb2.Welcome(
            agent_id=agent_id, platform_ids=welcome["platform_ids"],
            heartbeat_interval_s=welcome["heartbeat_interval_s"]))
        session.ready = True
        self.notifier.notify()
        reader = asyncio.create_task(self._read(session, request_iterator))
        try:
            while True:
                msg = await session.out.get()
                if msg is None:
                    break
                yield msg
        finally:
            reader.cancel()
            if self.sessions.get(agent_id) is session:
                del self.sessions[agent_id]
                try:
                    await self.fleet.call("agent_disconnected", agent_id)
                except Exception:  # noqa: BLE001 - shutting down
                    log.debug("could not mark %s disconnected", agent_id, exc_info=True)
                self.notifier.notify()
            log.info("agent %s disconnected", agent_id)

    async def _read(self, session: _Session, request_iterator) -> None:
        try:
            async for msg in request_iterator:
                kind = msg.WhichOneof("kind")
                if kind == "heartbeat":
                    self._beats[session.agent_id] = msg.heartbeat.current_job_id
                elif kind == "result":
                    record = measurement_to_dict(msg.result.measurement)
                    record["agent_id"] = session.agent_id
                    self._results.put_nowait((session, record))
                else:
                    log.warning("agent %s sent an unexpected %s; ignored", session.agent_id, kind)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the stream broke; the session ends
            log.info("stream of agent %s ended with an error", session.agent_id, exc_info=True)
        finally:
            session.out.put_nowait(None)

    async def _flush_results(self) -> None:
        while True:
            batch = [await self._results.get()]
            while not self._results.empty():
                batch.append(self._results.get_nowait())
            try:
                stored = await self.fleet.call("record_results", [record for _, record in batch])
            except Exception:  # noqa: BLE001 - not acked: the agents keep them spooled and re-send
                log.exception("could not record %d result(s); they stay in the agents' spools", len(batch))
                continue
            for (session, record), new in zip(batch, stored):
                if record["job_id"] and record["job_id"] == session.job_id:
                    session.job_id = None
                session.out.put_nowait(agent_pb2.ControllerMessage(ack=agent_pb2.Ack(
                    measurement_id=record["measurement_id"], job_id=record["job_id"])))
                log.debug("result %s from %s (%s)", record["measurement_id"], session.agent_id,
                          "stored" if new else "duplicate")
            self.notifier.notify()

    async def _flush_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_flush_s)
            if self._beats:
                beats, self._beats = self._beats, {}
                try:
                    await self.fleet.call("heartbeats", beats)
                except Exception:  # noqa: BLE001 - the next beats extend the leases
                    log.exception("could not record %d heartbeat(s)", len(beats))

    async def _dispatch(self) -> None:
        while True:
            event = self.notifier.current()
            idle = [s.agent_id for s in self.sessions.values() if s.ready and s.job_id is None]
            jobs = []
            if idle:
                try:
                    jobs = await self.fleet.call("assign", idle)
                except Exception:  # noqa: BLE001 - try again at the next change
                    log.exception("assigning jobs failed")
            for job in jobs:
                session = self.sessions.get(job["agent_id"])
                if session is None:  # gone meanwhile: its lease expires and the job returns to the queue
                    continue
                session.job_id = job["job_id"]
                log.info("job %s → agent %s", job["job_id"], session.agent_id)
                session.out.put_nowait(agent_pb2.ControllerMessage(job=assignment_to_proto(job)))
            if not jobs:
                await self.notifier.wait(event, IDLE_POLL_S)

    def jobs_released(self, job_ids: list[str]) -> None:
        """Leases that expired: the sessions holding them may be handed new work."""
        released = set(job_ids)
        for session in self.sessions.values():
            if session.job_id in released:
                session.job_id = None

    async def FetchModel(self, request, context) -> AsyncIterator[agent_pb2.ModelChunk]:
        if not self.blobs.has(request.sha256):
            raise NotFound(f"no model with sha256 {request.sha256!r} on this controller")
        total = self.blobs.size_bytes(request.sha256)
        if request.offset < 0 or request.offset > total:
            raise InvalidArgument(f"offset {request.offset} outside the model's {total} bytes")
        offset = request.offset
        for data in self.blobs.read_chunks(request.sha256, offset):
            yield agent_pb2.ModelChunk(data=data, offset=offset, total_size_bytes=total)
            offset += len(data)
