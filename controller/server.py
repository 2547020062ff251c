"""Start the controller: Ray, the fleet actor, both gRPC services, health and reflection."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import signal
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fleetmeter._net import CHANNEL_OPTIONS, TlsFiles
from fleetmeter.blobs import BlobStore
from fleetmeter.v1 import agent_pb2, agent_pb2_grpc, fleet_pb2, predictor_pb2, predictor_pb2_grpc

from .fleet_service import FleetApi
from .engine import DEFAULT_NO_WORKER_TIMEOUT_S, RayEngine
from .fleet import Fleet, FleetConfig
from .gateway import AgentGateway, Notifier
from .identity import AgentDoor, RefusalLog
from .predictor_service import PredictorApi
from .reference import build_and_inspect
from .boundary import BoundaryInterceptor
from .readside import ReadSide, add_fleet_service, live_snapshot
from .store import Store

log = logging.getLogger(__name__)

REFERENCE_FORMATS = ("onnx", "tflite")

DEFAULT_LISTEN = "127.0.0.1:50051"
#: Where FleetService's listings are read (ControllerConfig.read_path, --read-path).
READ_PATHS = ("store", "actor")
# Callers ping every 20 s (CHANNEL_OPTIONS); gRPC servers by default count pings closer than 5 min on a
# connection without data as abuse and send GOAWAY "too many pings", which killed long quiet streams (a
# Train run between two progress messages). Accept them every 10 s, and never end a connection over pings:
# on a loaded machine a caller's timers fire late and then in a burst, which counted as strikes and still
# ended watch streams with "too many pings" (max_ping_strikes 0: no limit; dead peers are found by keepalive).
#
# New calls wait in gRPC's queue until the (one-threaded, Python) server picks them up; past 1,000 waiting gRPC
# starts refusing new calls at random and past 3,000 refuses them all (grpc.server.max_pending_requests and its
# hard limit). A fleet that (re)connects at once — 10,000 agents after a controller restart — arrives faster than
# that: 3,000-4,000 of 10,000 streams were refused with INTERNAL "Internal error from Core" in the load test
# (docs/benchmarks.md §16). Agents retry, but a refused hello costs the agent a backoff and the controller a
# second hello; the queue is allowed to hold a fleet's worth of hellos instead (they still wait at most gRPC's
# 30 s in the queue).
MAX_PENDING_CALLS = 20_000
SERVER_OPTIONS = CHANNEL_OPTIONS + (("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
                                    ("grpc.http2.max_ping_strikes", 0),
                                    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
                                    ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS))


@dataclass(frozen=True)
class ControllerConfig:
    listen: str = DEFAULT_LISTEN
    data_dir: Path = Path(".fleetmeter")
    ray_address: Optional[str] = None
    agent_token: Optional[str] = None
    api_token: Optional[str] = None
    tls: TlsFiles = field(default_factory=TlsFiles)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    ray_num_cpus: Optional[int] = None
    # Lower the controller's priority (and so its local Ray's, started after) by this much:
    # on a host it shares with agents it yields the CPU to their measurements.
    nice: int = 10
    # The address Ray advertises and, when it is loopback, the only one Ray listens on. None: the host of
    # `listen`; a wildcard (0.0.0.0, ::) in either place: Ray's own choice (the routable address; Ray then
    # listens on every interface).
    ray_node_ip: Optional[str] = None
    # Where listings and progress are read: "store" (the store and the fleet's live snapshot, readside.py:
    # never queued behind the fleet actor) or "actor" (through the fleet actor, as before; for comparison).
    read_path: str = "store"
    # How long a Ray fan-out (training, feature extraction, an upload's inspection) waits while no alive Ray node
    # has CPUs before it cancels its tasks and fails (RayEngine.map); 0: forever.
    no_worker_timeout_s: float = DEFAULT_NO_WORKER_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.no_worker_timeout_s >= 0:
            raise ValueError(f"--no-worker-timeout-s must be >= 0 (0: wait forever), got {self.no_worker_timeout_s}")
        if not 0 <= int(self.nice) <= 19:
            raise ValueError(f"--nice must be 0..19, got {self.nice}")
        if self.read_path not in READ_PATHS:
            raise ValueError(f"--read-path must be one of {', '.join(READ_PATHS)}, got {self.read_path!r}")
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--listen must be HOST:PORT, got {self.listen!r}")
        if self.tls.ca and not self.tls.cert:
            raise ValueError("--tls-ca on the controller requires --tls-cert/--tls-key (mutual TLS)")
        if self.ray_node_ip is not None and self.ray_node_ip.strip("[]").lower() != "localhost":
            try:
                ipaddress.ip_address(self.ray_node_ip.strip("[]"))
            except ValueError:
                raise ValueError(f"--ray-node-ip must be an IP address, got {self.ray_node_ip!r}") from None

    def ray_node_ip_to_use(self) -> Optional[str]:
        """The node ip Ray starts (or joins) with: ``ray_node_ip``, else the host of ``listen`` (a host name
        resolved); None, Ray's choice, for a wildcard or a name that does not resolve."""
        host = (self.ray_node_ip if self.ray_node_ip is not None else self.listen.rpartition(":")[0]).strip("[]")
        if host in ("", "*", "0.0.0.0", "::"):
            return None
        if host.lower() == "localhost":
            return "127.0.0.1"
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
        try:
            return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
        except OSError as exc:
            log.warning("cannot resolve %s (%s): Ray picks its own node ip and listens on every interface; "
                        "--ray-node-ip sets it", host, exc)
            return None


STORE_FILE = "fleetmeter.sqlite"


def make_private_data_dir(data_dir: Path) -> None:
    """The controller's data dir, 0700, and its store file, 0600 (tightened, with a warning, when they exist
    wider). The store is created here, empty, because the fleet actor opens it in a Ray worker that may not
    share this process's umask (a joined cluster); SQLite gives its -wal and -shm files the store's mode."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = data_dir / STORE_FILE
    os.close(os.open(store, os.O_WRONLY | os.O_CREAT, 0o600))
    for path, private in ((data_dir, 0o700), (store, 0o600), (data_dir / f"{STORE_FILE}-wal", 0o600),
                          (data_dir / f"{STORE_FILE}-shm", 0o600)):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                os.chmod(path, private)
            except OSError as exc:  # not ours to change: say so, serve anyway
                log.warning("%s is open to other users (mode %04o) and cannot be made %04o: %s", path, mode,
                            private, exc)
            else:
                log.warning("%s was open to other users (mode %04o); made it %04o", path, mode, private)


class FleetActor(Fleet):
    """The fleet as a Ray actor: it opens the store itself (a sqlite handle cannot travel)."""

    def __init__(self, db_path: str, config: FleetConfig) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        super().__init__(Store(db_path), config)

    def ping(self) -> bool:
        return True

    def live_agents(self) -> list[tuple]:
        """The live agent state the read side serves listings with (readside.live_snapshot)."""
        return live_snapshot(self)


class Controller:
    """A running controller. ``await start()``, then ``await wait()`` or ``await stop()``."""

    def __init__(self, config: ControllerConfig, engine=None) -> None:
        self.config = config
        self.engine = engine or RayEngine(config.ray_address, num_cpus=config.ray_num_cpus,
                                          node_ip=config.ray_node_ip_to_use(),
                                          temp_root=Path(config.data_dir) / "ray",
                                          no_worker_timeout_s=config.no_worker_timeout_s)
        self.server: Optional[grpc.aio.Server] = None
        self.address: Optional[str] = None
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> str:
        cfg = self.config
        data_dir = Path(cfg.data_dir)
        make_private_data_dir(data_dir)
        self.engine.start()
        self.fleet = self.engine.actor(FleetActor, str(data_dir / STORE_FILE), cfg.fleet)
        await self.fleet.call("ping")
        self.blobs = BlobStore(data_dir / "blobs")
        self.notifier = Notifier()
        door, refusals = AgentDoor(cfg.agent_token), RefusalLog()
        self.gateway = AgentGateway(self.fleet, self.blobs, self.notifier, door, refusals)
        await self.gateway.refresh_door()
        self.reads = None
        if cfg.read_path == "store":
            self.reads = ReadSide(data_dir / STORE_FILE, self.fleet, cfg.fleet)
            await self.reads.refresh()
        self.api = FleetApi(self.fleet, self.blobs, self.notifier, self.engine, self.gateway, self.reads)
        self.predictor_api = PredictorApi(self.fleet, self.blobs, self.engine, data_dir / "predictors",
                                          reads=self.reads)
        if cfg.fleet.reference_interval_s > 0:  # before serving: the models are there when the first agent is
            await self._install_reference_models()
        server = grpc.aio.server(interceptors=[BoundaryInterceptor(door, cfg.api_token, refusals)],
                                 options=SERVER_OPTIONS)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(self.gateway, server)
        add_fleet_service(self.api, server)
        predictor_pb2_grpc.add_PredictorServiceServicer_to_server(self.predictor_api, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = (agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
                 fleet_pb2.DESCRIPTOR.services_by_name["FleetService"].full_name,
                 predictor_pb2.DESCRIPTOR.services_by_name["PredictorService"].full_name,
                 health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        if cfg.tls.enabled:
            creds = grpc.ssl_server_credentials(
                [(Path(cfg.tls.key).read_bytes(), Path(cfg.tls.cert).read_bytes())],
                root_certificates=Path(cfg.tls.ca).read_bytes() if cfg.tls.ca else None,
                require_client_auth=bool(cfg.tls.ca))
            port = server.add_secure_port(cfg.listen, creds)
        else:
            port = server.add_insecure_port(cfg.listen)
        if port == 0:
            raise OSError(f"cannot listen on {cfg.listen} (address in use?)")
        await server.start()
        self.server = server
        host = cfg.listen.rpartition(":")[0]
        self.address = f"{host}:{port}"
        open_services = [name for name, closed in (("agent", not door.open), ("API", cfg.api_token)) if not closed]
        if open_services:
            log.warning("no %s token configured: anyone who can reach %s may use %s (fine on loopback or a "
                        "trusted network only)", " or ".join(open_services), self.address,
                        "them" if len(open_services) > 1 else "it")
        for name in names[:3] + ("",):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._tasks.append(asyncio.create_task(self._expire_loop()))
        self._tasks.append(asyncio.create_task(self.gateway.run()))
        if self.reads is not None:
            self._tasks.append(asyncio.create_task(self.reads.refresh_loop(self.notifier)))
        staged = data_dir / "controller.json.tmp"  # written whole, then renamed: a reader never sees half of it
        staged.write_text(json.dumps({"address": self.address, "pid": os.getpid()}))
        os.replace(staged, data_dir / "controller.json")
        log.info("controller serving on %s (%s), data in %s", self.address,
                 "TLS" if cfg.tls.enabled else "plain text", data_dir)
        return self.address

    async def _install_reference_models(self) -> None:
        """Build the drift canary's reference models (about a second, in a thread: two tiny models do not
        pay for a Ray worker's start), store them like uploads and hand them to the fleet. A format that
        cannot be built here is logged and skipped; the controller serves on in any case."""
        loop = asyncio.get_running_loop()
        try:
            built = [await loop.run_in_executor(None, build_and_inspect, fmt) for fmt in REFERENCE_FORMATS]
            models = []
            for item in built:
                if "error" in item:
                    log.warning("no %s reference model (the drift canary skips those platforms): %s",
                                item["format"], item["error"])
                    continue
                model = item["model"]
                if not self.blobs.has(model["sha256"]):
                    f, staged = self.blobs.staging_file()
                    with f:
                        f.write(item["data"])
                    self.blobs.adopt(staged, model["sha256"])
                models.append(model)
            stored = await self.fleet.call("set_reference_models", models)
            log.info("drift canary: reference models %s", ", ".join(f"{m['name']} ({m['sha256'][:12]})"
                                                                     for m in stored) or "none")
        except Exception:  # noqa: BLE001 - the controller serves on without the canary; logged
            log.exception("could not install the reference models; the drift canary is off")

    async def _expire_loop(self) -> None:
        period_s = max(0.2, self.config.fleet.lease_timeout_s / 4)
        while True:
            await asyncio.sleep(period_s)
            try:
                released = await self.fleet.call("expire_leases")
            except Exception:  # noqa: BLE001 - keep the loop alive; logged
                log.exception("lease expiry failed")
                continue
            if released:  # their agents are free again (the store's leases say so)
                self.notifier.notify()

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop serving (in-flight calls get ``grace_s``), then Ray. Also after a start that failed or was
        cancelled half-way; a second call does nothing new. Calls to the fleet that come after Ray stopped
        (an agent stream's last words) fail with ``Unavailable``, never start Ray again."""
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # gone before Ray is
        gateway = getattr(self, "gateway", None)
        if gateway is not None:
            # End every agent's stream normally (the agent reconnects with backoff) rather than have the
            # server cancel it after the grace: its last call to the fleet then runs while Ray is up.
            gateway.close_streams()
        if self.server is not None:
            await self.server.stop(grace_s)
        predictor_api = getattr(self, "predictor_api", None)
        if predictor_api is not None:
            predictor_api.close()
        reads = getattr(self, "reads", None)
        if reads is not None:
            reads.close()
        self.engine.shutdown()

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def run_controller(config: ControllerConfig) -> int:
    """Serve until SIGINT or SIGTERM, then stop: the gRPC server, then Ray (ours stopped, its session files
    removed); 0. A signal during start-up stops as soon as Ray is up. A failed start stops what it started
    and raises."""
    # What the controller and its local Ray create (store, blobs, predictors, controller.json, Ray's
    # session files) is for this user alone. Set for this process only, before anything is created; Ray's
    # processes inherit it. It does not reach agents (separate processes) or callers of Controller in-process.
    os.umask(0o077)
    if config.nice and hasattr(os, "nice"):
        try:  # before Ray and gRPC start: every thread and process they make inherits it
            os.nice(config.nice)
        except OSError as exc:
            log.warning("cannot lower the controller's priority by %d: %s", config.nice, exc)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):  # before start: no KeyboardInterrupt half-way through
            loop.add_signal_handler(sig, stop.set)
        controller = Controller(config)
        starting = asyncio.ensure_future(controller.start())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()  # a failed start raises here
                print(f"fleetmeter controller listening on {controller.address}", flush=True)
                await stopping
            else:
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
            log.info("shutting down")
        finally:
            stopping.cancel()
            await controller.stop()

    asyncio.run(main())
    return 0
