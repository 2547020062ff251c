"""Reads that do not queue behind the fleet actor's writes.

The fleet actor (``fleet.py`` in a Ray actor, ``max_concurrency=1``) is the store's only writer and the
scheduler: every call waits for the one before it. With a thousand agents heartbeating and results arriving,
a listing queued behind that work took seconds (docs/benchmarks.md, section 14). Reads therefore take another
way, in the servicer's process:

- **the store, read directly** through a read-only SQLite connection of its own (:class:`ReadOnlyStore`; WAL
  lets readers run while the actor writes, and every reader sees only committed transactions);
- **the live agent state** that exists only in the actor's memory (connected, platforms, host, last seen,
  suspension) from a *snapshot* the fleet publishes (:func:`live_snapshot`, :class:`LiveAgent`).
  :meth:`ReadSide.refresh_loop` fetches it when something changed (a connect or disconnect notifies), at most
  every :data:`LIVE_MIN_GAP_S` and at least every :data:`LIVE_REFRESH_S`; a read never waits for it. Who
  holds which job is the store's leases, read fresh.

:class:`FleetReader` is the :class:`~fleetmeter.controller.fleet.Fleet` over those two, so a listing is computed
by the same code whichever way it is read; only its read methods (listings, a sweep and its progress,
measurements) are called, and a write through its read-only connection fails.

The predictor service reads the same way (:meth:`ReadSide.call`: platforms, models, measurements).

The answers are cached as serialized responses and shared: one computation serves every caller that arrives
while it runs, and a cached answer is served again while the store's ``PRAGMA data_version`` and the snapshot
are unchanged. A caller whose own write (a sweep submitted, a device forgotten) finished after an in-flight
computation began waits for a fresh one (:meth:`ReadSide.wrote`), so it reads its writes. The computations run
in one thread of their own (SQLite's connection is used by that thread alone), off the event loop that serves
the agents.

What a read may miss: the live state is up to one refresh old (a device that connected a moment ago may still
show ``offline``), and a platform's noise ceiling up to :data:`QUALITY_TTL_S`.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import grpc

from fleetmeter.v1 import fleet_pb2

from .convert import device_to_proto, model_to_proto, platform_to_proto, sweep_to_proto
from .engine import ActorRef
from .fleet import Fleet, FleetConfig
from .store import Store

log = logging.getLogger(__name__)

#: The live agent state is fetched from the fleet at least this often (and on every connect or disconnect) ...
LIVE_REFRESH_S = 2.0
#: ... but not more often than this, however busy the fleet is (at 10,000 agents a snapshot costs the actor
#: 5-50 ms: docs/benchmarks.md §16).
LIVE_MIN_GAP_S = 1.0
#: A platform's noise ceiling and canary reading, computed from its readings, are reused this long.
QUALITY_TTL_S = 5.0
#: The ``FleetService`` methods whose cached answers travel as bytes (:func:`add_fleet_service`).
CACHED_RPCS = ("ListDevices", "ListPlatforms", "ListModels", "ListSweeps", "GetSweep")
#: The fleet actor's read methods :meth:`ReadSide.call` answers for the predictor service (predictions, training
#: data, adaptation plans), so a ``Predict`` never waits in the actor's queue either.
READ_METHODS = frozenset({"list_platforms", "list_models", "list_measurements", "sweep_inputs"})


class ReadOnlyStore(Store):
    """The store opened read-only (``mode=ro``, ``query_only``): the query methods of :class:`Store`, no
    migration, no write. The file must exist (the fleet actor creates and upgrades it)."""

    def __init__(self, path: str | Path) -> None:  # noqa: D107 - Store.__init__ would migrate: not called
        self.path = Path(path)
        uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?mode=ro"
        self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        self._depth = 0
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA query_only=ON")

    def data_version(self) -> int:
        """Changes whenever another connection (the fleet actor) committed since the last call."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])


class LiveAgent(NamedTuple):
    """What the fleet's read methods use of an :class:`~fleetmeter.controller.fleet.AgentState`."""
    agent_id: str
    name: str
    host_id: str
    platform_ids: list
    connected: bool
    last_seen_unix: float
    suspended_until_unix: float
    suspended_reason: str


def live_snapshot(fleet: Fleet) -> list[tuple]:
    """The fleet's live agent state, as the read side needs it: one :class:`LiveAgent` tuple per known agent.
    Cheap: no store access, plain tuples to pickle."""
    return [(a.agent_id, a.name, a.host_id, a.platform_ids, a.connected, a.last_seen_unix, a.suspended_until_unix,
             a.suspended_reason) for a in fleet.agents.values()]


class FleetReader(Fleet):
    """A :class:`Fleet` for reads only: its store is a :class:`ReadOnlyStore`, its agents the last published
    snapshot (:meth:`apply`). ``Fleet.__init__`` is not run (it extends leases, a write)."""

    def __init__(self, store: ReadOnlyStore, config: FleetConfig = FleetConfig(),
                 clock: Callable[[], float] = time.time) -> None:  # noqa: D107 - see the class docstring
        self.store = store
        self.config = config
        self.clock = clock
        self._snapshot: list[tuple] = []
        self._agents: Optional[dict[str, LiveAgent]] = {}
        self.by_host: dict[str, dict[str, LiveAgent]] = {}
        self.host_of: dict[str, str] = {}
        self._quality: dict[str, dict] = {}
        self._sweep_facts: dict[str, dict] = {}
        self._quality_since = time.monotonic()

    def apply(self, snapshot: list[tuple]) -> None:
        """Take a :func:`live_snapshot` as the agents' state. Kept as it came: the table of :attr:`agents` is built
        by the first read that needs it (during a sweep of a 10,000-agent fleet snapshots arrive every second and
        building each table was 12 % of the controller process, docs/benchmarks.md §16; reads are rarer)."""
        self._snapshot, self._agents = snapshot, None

    @property
    def agents(self) -> dict[str, LiveAgent]:
        """agent_id → :class:`LiveAgent`, from the last snapshot applied."""
        if self._agents is None:
            self._agents = {a[0]: LiveAgent._make(a) for a in self._snapshot}
        return self._agents

    def platform_quality(self, platform_id: str) -> dict:
        if time.monotonic() - self._quality_since > QUALITY_TTL_S:
            self._quality.clear()
            self._quality_since = time.monotonic()
        return super().platform_quality(platform_id)


class _Flight:
    """One computation of one read: its result, shared by every caller that joined it."""

    def __init__(self, future: asyncio.Future, epoch: int) -> None:
        self.future = future
        self.epoch = epoch


class ReadSide:
    """The read paths of ``FleetService``: answers from the store and the live snapshot, never through the
    fleet actor's queue. Async methods return what the servicer sends (serialized responses for the cached
    listings). ``close()`` when done."""

    def __init__(self, db_path: str | Path, fleet: ActorRef, config: FleetConfig = FleetConfig()) -> None:
        self.fleet = fleet
        self.reader = FleetReader(ReadOnlyStore(db_path), config)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fm-reads")
        self._cache: dict[tuple, tuple[tuple, Any]] = {}   # key → (generation, answer)
        self._flights: dict[tuple, _Flight] = {}
        self._live_version = 0   # bumped when a new snapshot is applied
        self._epoch = 0          # bumped when a caller's write through this process finished
        self.snapshots = 0       # how many snapshots were applied (for tests and the benchmark)

    # ------------------------------------------------------------ the live snapshot
    async def refresh(self) -> bool:
        """Fetch the fleet's live snapshot and apply it; False (logged) when the fleet did not answer."""
        try:
            snapshot = await self.fleet.call("live_agents")
        except Exception as exc:  # noqa: BLE001 - the actor may be restarting: the old snapshot stays
            log.debug("live agent state not refreshed: %s", exc)
            return False
        await self._run(self._apply, snapshot)
        return True

    def _apply(self, snapshot: list[tuple]) -> None:
        self.reader.apply(snapshot)
        self._live_version += 1
        self.snapshots += 1

    async def refresh_loop(self, notifier) -> None:
        """Refresh on every change the notifier announces, at most every :data:`LIVE_MIN_GAP_S`, at least every
        :data:`LIVE_REFRESH_S`."""
        while True:
            event = notifier.current()
            started = time.monotonic()
            await self.refresh()
            await notifier.wait(event, max(0.0, LIVE_REFRESH_S - (time.monotonic() - started)))
            await asyncio.sleep(max(0.0, LIVE_MIN_GAP_S - (time.monotonic() - started)))

    def wrote(self) -> None:
        """A caller's write finished: reads that start from now on see it (none joins an older computation)."""
        self._epoch += 1

    # ------------------------------------------------------------ the reads
    async def list_devices(self) -> bytes:
        return await self._cached(("devices",), lambda r: fleet_pb2.ListDevicesResponse(
            devices=[device_to_proto(d) for d in r.list_devices()]).SerializeToString())

    async def list_platforms(self) -> bytes:
        return await self._cached(("platforms",), lambda r: fleet_pb2.ListPlatformsResponse(
            platforms=[platform_to_proto(p) for p in r.list_platforms()]).SerializeToString())

    async def list_models(self) -> bytes:
        return await self._cached(("models",), lambda r: fleet_pb2.ListModelsResponse(
            models=[model_to_proto(m) for m in r.list_models()]).SerializeToString())

    async def list_sweeps(self, states: list[str]) -> bytes:
        return await self._cached(("sweeps", tuple(states)), lambda r: fleet_pb2.ListSweepsResponse(
            sweeps=[sweep_to_proto(s) for s in r.list_sweeps(states)]).SerializeToString())

    async def get_sweep(self, sweep_id: str) -> bytes:
        return await self._cached(("sweep", sweep_id), lambda r: fleet_pb2.GetSweepResponse(
            sweep=sweep_to_proto(r.get_sweep(sweep_id))).SerializeToString())

    async def sweep_progress(self, sweep_id: str) -> dict:
        return await self._cached(("progress", sweep_id), lambda r: r.sweep_progress(sweep_id))

    async def list_measurements(self, **filters) -> list[dict]:
        """Not cached (filtered, and large): read in the read thread each time."""
        return await self._run(lambda: self.reader.list_measurements(**filters))

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """The fleet actor's read method ``method`` (:data:`READ_METHODS`), answered here: what the predictor
        service reads (platforms, models, measurements) without queueing behind the actor. Same records."""
        if method not in READ_METHODS:
            raise ValueError(f"{method!r} is not a read the read side answers ({', '.join(sorted(READ_METHODS))})")
        if method == "list_platforms":  # asked on every Predict that names a platform: cached
            return await self._cached(("platform records",), lambda r: r.list_platforms())
        return await self._run(lambda: getattr(self.reader, method)(*args, **kwargs))

    # ------------------------------------------------------------ the machinery
    async def _cached(self, key: tuple, compute: Callable[[FleetReader], Any]) -> Any:
        flight = self._flights.get(key)
        if flight is None or flight.epoch != self._epoch:
            future = asyncio.ensure_future(self._run(self._answer, key, compute))
            flight = self._flights[key] = _Flight(future, self._epoch)
            future.add_done_callback(lambda _f, k=key, f=flight: self._landed(k, f))
        return await asyncio.shield(flight.future)

    def _landed(self, key: tuple, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.future.cancelled():
            flight.future.exception()  # retrieved: a failed read is its callers' error, not the loop's

    def _answer(self, key: tuple, compute: Callable[[FleetReader], Any]) -> Any:
        """In the read thread: the cached answer while the store and the snapshot are unchanged, else a new one."""
        generation = (self.reader.store.data_version(), self._live_version)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1]
        answer = compute(self.reader)
        self._cache[key] = (generation, answer)
        if len(self._cache) > 1024:  # per-sweep keys: keep the newest
            for old in list(self._cache)[:256]:
                del self._cache[old]
        return answer

    async def _run(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.reader.store.close()


def _bytes_or(serializer: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def serialize(message: Any) -> bytes:
        return message if isinstance(message, bytes) else serializer(message)
    return serialize


class _CollectingServer:
    """Takes the generated ``add_..._to_server``'s handlers instead of a server."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass  # rebuilt from the registered handlers in add_fleet_service

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.service, self.handlers = service, dict(handlers)


def add_fleet_service(servicer: Any, server: grpc.aio.Server) -> None:
    """``add_FleetServiceServicer_to_server``, except that the methods in :data:`CACHED_RPCS` may answer with
    an already serialized response (bytes), so a cached listing is not serialized again for every caller."""
    from fleetmeter.v1 import fleet_pb2_grpc

    collected = _CollectingServer()
    fleet_pb2_grpc.add_FleetServiceServicer_to_server(servicer, collected)
    handlers = {name: (h._replace(response_serializer=_bytes_or(h.response_serializer)) if name in CACHED_RPCS
                       else h) for name, h in collected.handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(collected.service, handlers),))
    server.add_registered_method_handlers(collected.service, handlers)
