"""``AgentService``: the one class in the controller that speaks to agents.

Per connected agent a reader coroutine takes hello, heartbeats and results off
its stream. Work with the fleet actor is batched, so that one actor call serves
many agents (a thousand agents would otherwise mean thousands of calls a second):

- a dispatcher asks the fleet to ``assign`` jobs to *all* idle agents at once,
  whenever something changed (a sweep arrived, a job finished, a lease expired);
- results are collected and recorded together (``record_results``), and each is
  acknowledged to its agent only after the store committed it (or knew it already);
  a result refused for good (forged, invalid) is answered with a rejecting ack, and
  one that could not be stored is tried again, never acknowledged;
- heartbeats are collected and flushed together (``heartbeats``).

Who holds which job is the store's leases alone: the dispatcher offers every
connected agent and the fleet skips those holding a lease. Identity is the
fleet's to decide (``register_agent``, ``identity.py``); the gateway keeps each
live session's hello and credential so that it can say hello again for it when
the fleet actor restarted and forgot its agents (heartbeats name the unknown ones).
"""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Optional

from fleetmeter.blobs import BlobStore
from fleetmeter.errors import FleetmeterError, InvalidArgument, NotFound, PermissionDenied, Unauthenticated, Unavailable
from fleetmeter.v1 import agent_pb2, agent_pb2_grpc

from .convert import assignment_to_proto, hello_to_dict, measurement_to_dict
from .engine import ActorRef
from .identity import AgentDoor, RefusalLog, sha256_text
from .boundary import _token_from

log = logging.getLogger(__name__)

# Wake idle agents at least this often even without a notification.
IDLE_POLL_S = 1.0
# A batch of results that could not be stored (the fleet actor restarting) is tried again after this.
RESULT_RETRY_S = 0.5
# Per-agent tokens checked against the store are trusted this long by FetchModel (a revoke clears them).
TOKEN_CACHE_S = 30.0


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
    def __init__(self, agent_id: str, hello: dict, auth: dict, token_id: str) -> None:
        self.agent_id = agent_id
        self.hello = hello                  # to say hello again for it after a fleet actor restart
        self.auth = auth
        self.token_id = token_id            # the per-agent token its stream uses ("" for none)
        self.reported_job = hello.get("current_job_id") or ""   # what its last heartbeat said it runs
        self.unstored: dict[str, str] = {}  # measurement_id → job_id of its results not yet stored
        self.out: asyncio.Queue = asyncio.Queue()
        self.ready = False                  # welcomed: may be given work
        self.closed = False


class AgentGateway(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, fleet: ActorRef, blobs: BlobStore, notifier: Notifier, door: Optional[AgentDoor] = None,
                 refusals: Optional[RefusalLog] = None) -> None:
        self.fleet = fleet
        self.blobs = blobs
        self.notifier = notifier
        self.door = door or AgentDoor(None)
        self.refusals = refusals or RefusalLog()
        self.sessions: dict[str, _Session] = {}
        self._results: asyncio.Queue = asyncio.Queue()   # (session, record) awaiting the store
        self._beats: dict[str, str] = {}                  # agent_id → the job it reports
        self._tokens_ok: dict[str, float] = {}            # token sha256 → when the store last confirmed it
        self.heartbeat_flush_s = 0.5

    async def refresh_door(self) -> None:
        """Mirror the store's "per-agent tokens exist" into the door (at start, after a create or revoke)."""
        self.door.has_tokens = bool(await self.fleet.call("has_agent_tokens"))

    def token_revoked(self, token_id: str) -> None:
        """Disconnect the agents whose stream uses this token and forget confirmed tokens."""
        self._tokens_ok.clear()
        for session in list(self.sessions.values()):
            if session.token_id == token_id:
                log.info("agent %s disconnected: its token %s was revoked", session.agent_id, token_id)
                self._close(session)

    async def run(self) -> None:
        """The gateway's background work: the dispatcher and the result and heartbeat flushers."""
        await asyncio.gather(self._dispatch(), self._flush_results(), self._flush_heartbeats())

    def _auth(self, context) -> dict:
        token = _token_from(context.invocation_metadata())
        return {"token_sha256": sha256_text(token)} if self.door.kind(token) == "agent" else {}

    async def _register(self, hello: dict, auth: dict, context) -> dict:
        try:
            return await self.fleet.call("register_agent", hello, auth)
        except (Unauthenticated, PermissionDenied) as exc:
            self.refusals.note(context.peer() if context is not None else "", "hello", str(exc))
            raise
        except FleetmeterError:
            raise
        except Exception as exc:  # noqa: BLE001 - the fleet actor is away (restarting): the agent retries
            log.warning("could not register agent %s: %s", hello.get("agent_id"), exc)
            raise Unavailable("the controller's fleet state is restarting; connect again") from None

    async def Connect(self, request_iterator, context) -> AsyncIterator[agent_pb2.ControllerMessage]:
        first = await request_iterator.__anext__()
        if first.WhichOneof("kind") != "hello":
            raise InvalidArgument("the first message on Connect must be a hello")
        hello = hello_to_dict(first.hello)
        auth = self._auth(context)
        # Identity is decided here (the fleet refuses an id enrolled with another secret), so a second
        # hello for a connected id replaces it only with proof of the same credential.
        welcome = await self._register(hello, auth, context)
        agent_id = welcome["agent_id"]
        previous = self.sessions.get(agent_id)
        if previous is not None:  # a reconnect that overtook the old stream's end (same credential)
            self._close(previous)
        session = self.sessions[agent_id] = _Session(agent_id, hello, auth, welcome.get("token_id", ""))
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
            session.closed = True
            if self.sessions.get(agent_id) is session:
                del self.sessions[agent_id]
                try:
                    await self.fleet.call("agent_disconnected", agent_id)
                except Exception:  # noqa: BLE001 - shutting down
                    log.debug("could not mark %s disconnected", agent_id, exc_info=True)
                self.notifier.notify()
            log.info("agent %s disconnected", agent_id)

    def close_streams(self) -> None:
        """End every agent's stream normally (the controller is stopping; agents reconnect)."""
        for session in list(self.sessions.values()):
            self._close(session)

    def _close(self, session: _Session) -> None:
        session.closed = True
        session.out.put_nowait(None)

    async def _read(self, session: _Session, request_iterator) -> None:
        try:
            async for msg in request_iterator:
                kind = msg.WhichOneof("kind")
                if kind == "heartbeat":
                    session.reported_job = msg.heartbeat.current_job_id
                    self._beats[session.agent_id] = msg.heartbeat.current_job_id
                elif kind == "result":
                    record = measurement_to_dict(msg.result.measurement)
                    record["agent_id"] = session.agent_id  # who sent it is the stream's identity, not the message's
                    session.unstored[record["measurement_id"]] = record["job_id"]
                    self._results.put_nowait((session, record))
                else:
                    log.warning("agent %s sent an unexpected %s; ignored", session.agent_id, kind)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the stream broke; the session ends
            log.info("stream of agent %s ended with an error", session.agent_id, exc_info=True)
        finally:
            session.out.put_nowait(None)

    def _retry_later(self, items: list) -> None:
        """Results not stored this time: tried again while their agent's stream lives (the agent re-sends its
        spool when it reconnects, so those of a closed stream are dropped here, never acknowledged)."""
        live = [(session, record) for session, record in items if not session.closed]

        async def again() -> None:
            await asyncio.sleep(RESULT_RETRY_S)
            for item in live:
                self._results.put_nowait(item)

        if live:
            asyncio.get_running_loop().create_task(again())

    async def _flush_results(self) -> None:
        while True:
            batch = [await self._results.get()]
            while not self._results.empty():
                batch.append(self._results.get_nowait())
            try:
                outcomes = await self.fleet.call("record_results", [record for _, record in batch])
            except Exception as exc:  # noqa: BLE001 - not acked: tried again (the actor may be restarting)
                log.warning("could not record %d result(s) (%s); trying again", len(batch), exc)
                self._retry_later(batch)
                continue
            failed = []
            for (session, record), outcome in zip(batch, outcomes):
                if outcome == "error":
                    failed.append((session, record))
                    continue
                session.unstored.pop(record["measurement_id"], None)
                rejected = outcome[len("rejected: "):] if outcome.startswith("rejected: ") else ""
                session.out.put_nowait(agent_pb2.ControllerMessage(ack=agent_pb2.Ack(
                    measurement_id=record["measurement_id"], job_id=record["job_id"], rejected=rejected)))
                log.debug("result %s from %s: %s", record["measurement_id"], session.agent_id, outcome)
            self._retry_later(failed)
            self.notifier.notify()

    async def _flush_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_flush_s)
            if self._beats:
                beats, self._beats = self._beats, {}
                try:
                    unknown = await self.fleet.call("heartbeats", beats)
                except Exception as exc:  # noqa: BLE001 - the next beats extend the leases
                    log.warning("could not record %d heartbeat(s): %s", len(beats), exc)
                    continue
                if unknown:
                    await self._say_hello_again(unknown)

    async def _say_hello_again(self, agent_ids: list[str]) -> None:
        """The fleet actor restarted and lost its table of agents: register the live sessions again, with
        the job each last reported and the jobs of its results still on their way to the store."""
        again = 0
        for agent_id in agent_ids:
            session = self.sessions.get(agent_id)
            if session is None or session.closed:
                continue
            hello = {**session.hello, "current_job_id": session.reported_job,
                     "spooled_job_ids": sorted({j for j in session.unstored.values() if j})}
            try:
                await self.fleet.call("register_agent", hello, session.auth)
                again += 1
            except Exception as exc:  # noqa: BLE001 - it reconnects and says hello itself
                log.warning("could not register agent %s again (%s); closing its stream", agent_id, exc)
                self._close(session)
        if again:
            log.warning("the fleet state restarted: %d connected agent(s) registered again", again)
            self.notifier.notify()

    async def _dispatch(self) -> None:
        while True:
            event = self.notifier.current()
            # Every welcomed agent: the fleet skips those holding a lease (the store's leases are the record).
            idle = [s.agent_id for s in self.sessions.values() if s.ready and not s.closed]
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
                try:
                    message = agent_pb2.ControllerMessage(job=assignment_to_proto(job))
                except Exception:  # noqa: BLE001 - the dispatcher serves every agent: it must outlive one bad job
                    log.exception("job %s could not be sent; its lease expires and it returns to the queue",
                                  job["job_id"])
                    continue
                log.info("job %s → agent %s", job["job_id"], session.agent_id)
                session.out.put_nowait(message)
            if not jobs:
                await self.notifier.wait(event, IDLE_POLL_S)

    async def FetchModel(self, request, context) -> AsyncIterator[agent_pb2.ModelChunk]:
        auth = self._auth(context)
        if auth:
            await self._check_token(auth["token_sha256"], context)
        if not self.blobs.has(request.sha256):
            raise NotFound(f"no model with sha256 {request.sha256!r} on this controller")
        total = self.blobs.size_bytes(request.sha256)
        if request.offset < 0 or request.offset > total:
            raise InvalidArgument(f"offset {request.offset} outside the model's {total} bytes")
        offset = request.offset
        for data in self.blobs.read_chunks(request.sha256, offset):
            yield agent_pb2.ModelChunk(data=data, offset=offset, total_size_bytes=total)
            offset += len(data)

    async def _check_token(self, token_sha256: str, context) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._tokens_ok.get(token_sha256, -1e18) < TOKEN_CACHE_S:
            return
        try:
            await self.fleet.call("check_agent_token", token_sha256)
        except Unauthenticated as exc:
            self.refusals.note(context.peer() or "", "FetchModel", str(exc))
            raise
        self._tokens_ok[token_sha256] = loop.time()
