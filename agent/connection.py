"""``fleetmeter-agent run``: join the fleet and serve jobs until stopped.

The agent dials out to the controller (it never listens) and keeps one
bidirectional stream open: hello, heartbeats and results up; welcome, jobs
and acks down. When the stream breaks it reconnects with exponential backoff
and jitter. One job runs at a time, in a worker thread that outlives a broken
connection; its result is spooled on disk before it is sent and dropped only
when the controller acknowledges it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform as _platform
import queue
import random
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

import grpc

from fleetmeter import _net, fields
from fleetmeter.records import fill
from fleetmeter._version import __version__
from fleetmeter.v1 import agent_pb2, agent_pb2_grpc, common_pb2

from .cache import HashMismatch, ModelCache
from .runconfig import DEFAULT_PROVIDER, AgentConfig, config_from_args
from .spool import Spool

log = logging.getLogger(__name__)

_CLOSE = object()
FETCH_RETRY_S = 120.0


# Errors that mean "the controller is not there (yet)": retried quickly, a connection attempt costs it nothing.
_QUICK_RETRY = (grpc.StatusCode.UNAVAILABLE,)
QUICK_RETRY_MAX_S = 2.0
# How long a new assignment waits for the previous job's thread, which has sent its result and is finishing.
FINISHING_JOB_WAIT_S = 10.0


def _private_file(path: Path, make) -> str:
    """The content of a small private file in the data dir, created (mode 0600) with ``make()`` if absent."""
    if path.exists():
        return path.read_text().strip()
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def _agent_id(data_dir: Path) -> str:
    """A stable id for this agent install, kept in its data dir (survives restarts)."""
    return _private_file(data_dir / "agent_id", lambda: "ag-" + uuid.uuid4().hex[:16])


def _agent_secret(data_dir: Path) -> str:
    """This install's secret (0600): the controller binds the agent id to it at enrolment and refuses a
    hello for the id without it, so an agent token alone cannot take over this agent's identity."""
    return _private_file(data_dir / "agent_secret", lambda: secrets.token_urlsafe(32))


def _lock_data_dir(data_dir: Path):
    """Hold an exclusive lock on the data dir for the agent's lifetime: two agents sharing one data dir would
    share one identity and knock each other off the controller. Returns the open lock file (keep it)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        return None
    f = open(data_dir / "agent.lock", "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise RuntimeError(f"data dir {data_dir} is in use by another agent (pid {holder}); give this agent "
                           "its own --data-dir (each data dir is one agent identity)") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        data_dir = Path(config.data_dir)
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)  # its secret and spooled results are this agent's alone
        self._dir_lock = _lock_data_dir(data_dir)
        self.agent_id = _agent_id(data_dir)
        self._secret = _agent_secret(data_dir)
        self.spool = Spool(data_dir / "spool")
        self.cache = ModelCache(data_dir / "models", config.cache_bytes)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._out: Optional[queue.Queue] = None      # the live session's outgoing queue
        self._stub: Optional[agent_pb2_grpc.AgentServiceStub] = None
        self._responses = None
        self._job_id: str = ""
        self._worker: Optional[threading.Thread] = None
        self._heartbeat_s = 2.0
        self._last_job_end: Optional[float] = None  # monotonic time the previous job ended (cool-down)
        self._metadata = _net.bearer(_net.agent_token(config.token))
        self.connected = threading.Event()
        if config.cpus:
            if not hasattr(os, "sched_setaffinity"):
                raise RuntimeError("--pin-cpus needs a platform with sched_setaffinity (Linux, Android)")
            try:
                os.sched_setaffinity(0, {int(c) for c in config.cpus})
            except OSError as exc:
                raise RuntimeError(f"cannot pin to CPUs {list(config.cpus)}: {exc}") from exc
            log.info("pinned to CPUs %s", sorted(os.sched_getaffinity(0)))
        self._init_device()
        from .worker import MeasurementWorker

        self.worker = MeasurementWorker(runtimes=[r["name"] for r in self.runtimes], cpus=config.measure_cpus,
                                        use_power_sensor=config.use_power_sensor)
        if config.isolation == "process":
            self.worker.start()  # before the renice below: sessions keep the agent's original priority
        if config.control_nice and hasattr(os, "nice"):
            try:  # threads made from here on (gRPC, heartbeats, jobs) inherit it
                os.nice(config.control_nice)
            except OSError as exc:
                log.warning("cannot lower the agent's priority by %d: %s", config.control_nice, exc)

    # ------------------------------------------------------------ device
    def _init_device(self) -> None:
        from .probe import hardware_identity, probe_device
        from .runtimes import describe_runtimes

        probe = probe_device()
        self.probe = probe.to_json_dict()
        runtimes = [r for r in describe_runtimes()
                    if not self.config.runtimes or r["name"] in self.config.runtimes]
        if not runtimes:
            wanted = ", ".join(self.config.runtimes) or "onnxruntime or litert"
            raise RuntimeError(f"no runtime to serve: install {wanted} (pip install 'fleetmeter[onnx,tflite]')")
        self.runtimes = runtimes
        self.offers = [agent_pb2.PlatformOffer(runtime=r["name"], runtime_version=r["version"],
                                               provider=self.config.provider or DEFAULT_PROVIDER[r["name"]],
                                               threads=int(t))
                       for r in runtimes for t in self.config.threads]
        self.device = common_pb2.DeviceInfo(
            hostname=probe.hostname or _platform.node(), host_id=probe.host_id or "",
            os=" ".join(x for x in (probe.os_distro or probe.os_system, probe.os_release) if x),
            arch=probe.arch or _platform.machine(), cpu_model=probe.cpu_model or "",
            cpu_cores=int(probe.cpu_cores_logical or 0), cpu_max_freq_mhz=float(probe.cpu_max_freq_mhz or 0.0),
            memory_total_bytes=int(probe.memory_total_bytes or 0), device_model=probe.device_model or "",
            gpus=list(probe.gpu_names or []),
            runtimes=[common_pb2.RuntimeInfo(name=r["name"], version=r["version"], providers=r.get("providers", []))
                      for r in runtimes],
            power_sensors=[s["name"] for s in probe.power_sensors or []],
            thermal_zones=sorted(probe.thermal_zones or {}),
            probe_json=json.dumps(self.probe, sort_keys=True, default=str),
            hardware_json=json.dumps(hardware_identity(probe), sort_keys=True, default=str))
        self.power_sensor = None
        if self.config.use_power_sensor:
            from .power import default_power_sensor
            self.power_sensor = default_power_sensor()
        from .thermal import read_thermal_zones
        self.read_temps = read_thermal_zones
        log.info("agent %s: %s; power sensor: %s", self.agent_id,
                 ", ".join(f"{o.runtime} {o.runtime_version} t{o.threads}" for o in self.offers),
                 getattr(self.power_sensor, "name", None) or "none (energy will be absent)")

    # ------------------------------------------------------------ main loop
    def run(self) -> None:
        """Serve until :meth:`stop`; reconnect with backoff whenever the controller goes away."""
        delay = self.config.reconnect_min_s
        while not self.stopping.is_set():
            code = None
            try:
                self._session()
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code == grpc.StatusCode.CANCELLED and self.stopping.is_set():
                    break
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    log.error("controller refused this agent: %s (check --agent-token / FLEETMETER_AGENT_TOKEN)",
                              exc.details())
                elif code == grpc.StatusCode.PERMISSION_DENIED:
                    log.error("controller refused this agent's identity: %s", exc.details())
                else:
                    log.warning("connection to %s lost: %s", self.config.controller,
                                exc.details() if hasattr(exc, "details") else exc)
            except Exception:  # noqa: BLE001 - keep serving; logged with traceback
                log.exception("agent session failed")
            welcomed = self.connected.is_set()
            self.connected.clear()
            if self.stopping.is_set():
                break
            if welcomed:
                delay = self.config.reconnect_min_s  # it was serving: the controller went away just now
            wait_s = delay * (0.5 + random.random())
            log.info("reconnecting in %.1f s", wait_s)
            self.stopping.wait(wait_s)
            # Back off up to reconnect_max_s from a controller that answers and refuses; one that is not
            # there at all (restarting) costs nothing to ask again, so it is asked every few seconds at most.
            cap = min(QUICK_RETRY_MAX_S, self.config.reconnect_max_s) if code in _QUICK_RETRY else \
                self.config.reconnect_max_s
            delay = min(delay * 2, cap)

    def stop(self) -> None:
        self.stopping.set()
        self.worker.close()
        if self._dir_lock is not None:  # another agent may use this data dir from now on
            self._dir_lock.close()
            self._dir_lock = None
        with self._lock:
            if self._out is not None:
                self._out.put(_CLOSE)
            if self._responses is not None:
                self._responses.cancel()

    def _session(self) -> None:
        channel = _net.open_channel(self.config.controller, self.config.tls)
        out: queue.Queue = queue.Queue()
        try:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            spooled = self.spool.items()
            spooled_jobs = []
            for _, payload in spooled:
                m = common_pb2.Measurement.FromString(payload)
                spooled_jobs.append(m.job_id)
            out.put(agent_pb2.AgentMessage(hello=agent_pb2.Hello(
                agent_id=self.agent_id, name=self.config.name or self.device.hostname, device=self.device,
                offers=self.offers, labels=self.config.labels, agent_version=__version__,
                current_job_id=self._job_id, spooled_results=len(spooled), spooled_job_ids=spooled_jobs,
                agent_secret=self._secret)))
            for _, payload in spooled:
                out.put(agent_pb2.AgentMessage(result=agent_pb2.JobResult(
                    measurement=common_pb2.Measurement.FromString(payload))))
            if spooled:
                log.info("re-sending %d spooled result(s)", len(spooled))

            def requests():
                while True:
                    msg = out.get()
                    if msg is _CLOSE:
                        return
                    yield msg

            responses = stub.Connect(requests(), metadata=self._metadata)
            with self._lock:
                self._out, self._stub, self._responses = out, stub, responses
            beat = threading.Thread(target=self._heartbeats, args=(out,), daemon=True, name="heartbeat")
            beat.start()
            for msg in responses:
                kind = msg.WhichOneof("kind")
                if kind == "welcome":
                    self._heartbeat_s = msg.welcome.heartbeat_interval_s or self._heartbeat_s
                    self.connected.set()
                    log.info("connected to %s as %s; platforms: %s", self.config.controller,
                             msg.welcome.agent_id, ", ".join(msg.welcome.platform_ids))
                elif kind == "job":
                    self._start_job(msg.job)
                elif kind == "ack":
                    if msg.ack.rejected:
                        log.error("controller refused result %s of job %s: %s (dropped)", msg.ack.measurement_id,
                                  msg.ack.job_id, msg.ack.rejected)
                    self.spool.remove(msg.ack.measurement_id)
                if self.stopping.is_set():
                    break
        finally:
            with self._lock:
                if self._out is out:
                    self._out, self._stub, self._responses = None, None, None
            out.put(_CLOSE)
            channel.close()

    def _heartbeats(self, out: queue.Queue) -> None:
        while not self.stopping.is_set():
            with self._lock:
                if self._out is not out:
                    return
            out.put(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(
                current_job_id=self._job_id, sent_unix=time.time())))
            self.stopping.wait(self._heartbeat_s)

    def _send(self, msg: agent_pb2.AgentMessage) -> None:
        with self._lock:
            if self._out is not None:
                self._out.put(msg)

    # ------------------------------------------------------------ jobs
    def _start_job(self, job: agent_pb2.JobAssignment) -> None:
        if self._worker is not None and self._worker.is_alive() and not self._job_id:
            # The previous job's result is sent (that is why the controller assigned a new one) and its
            # thread is only finishing up: wait for it instead of dropping the assignment.
            self._worker.join(timeout=FINISHING_JOB_WAIT_S)
        if self._worker is not None and self._worker.is_alive():
            log.warning("job %s assigned while %s still runs; ignored (its lease will expire)",
                        job.job_id, self._job_id or "the previous job")
            return
        self._job_id = job.job_id
        self._worker = threading.Thread(target=self._run_job, args=(job,), daemon=True, name=f"job-{job.job_id}")
        self._worker.start()

    def _run_job(self, job: agent_pb2.JobAssignment) -> None:
        try:
            measurement = self._measure(job)
        except Exception as exc:  # noqa: BLE001 - a job must never kill the agent: report it as data
            log.exception("job %s: the agent failed to run it", job.job_id)
            measurement = common_pb2.Measurement(
                measurement_id=uuid.uuid4().hex, job_id=job.job_id, agent_id=self.agent_id,
                platform_id=job.platform_id, model_sha256=job.model_sha256, runtime=job.runtime,
                provider=job.provider, threads=job.threads, sweep_id=job.sweep_id, failure_kind="agent_error",
                failure_message=f"{type(exc).__name__}: {exc}", finished_at_unix=time.time())
        self.spool.put(measurement.measurement_id, measurement.SerializeToString())
        self._last_job_end = time.monotonic()
        self._job_id = ""
        self._send(agent_pb2.AgentMessage(result=agent_pb2.JobResult(measurement=measurement)))
        log.info("job %s done: %s", job.job_id, measurement.failure_kind or
                 f"median {measurement.latency_ms.median:.3f} ms over {measurement.latency_ms.n} runs")

    def _measure(self, job: agent_pb2.JobAssignment) -> common_pb2.Measurement:
        started = time.time()
        base = dict(measurement_id=uuid.uuid4().hex, job_id=job.job_id, agent_id=self.agent_id,
                    platform_id=job.platform_id, model_sha256=job.model_sha256, runtime=job.runtime,
                    provider=job.provider, threads=job.threads, sweep_id=job.sweep_id)
        try:
            path = self._fetch_model(job.model_sha256, job.model_size_bytes)
        except (HashMismatch, grpc.RpcError, OSError, TimeoutError, ValueError) as exc:
            msg = exc.details() if isinstance(exc, grpc.RpcError) and hasattr(exc, "details") else str(exc)
            return common_pb2.Measurement(**base, failure_kind="model_unavailable",
                                          failure_message=f"could not get the model: {msg}",
                                          started_at_unix=started, finished_at_unix=time.time())
        from .bench import BenchSettings
        from .reading import ReadingSettings, combine, measure_reading

        cooldown_wait_s, thermal_wait_s, gate_timed_out = self._wait_until_ready(job)
        s = job.settings
        try:
            reading = ReadingSettings.from_proto(job.reading if job.HasField("reading") else None)
            defaults = BenchSettings(min_duration_ms=min(reading.session_min_duration_ms,
                                                         BenchSettings.max_duration_ms))
            settings = BenchSettings(**{f: getattr(s, f) if s.HasField(f) else getattr(defaults, f)
                                        for f in fields.SETTINGS_FIELDS})
        except ValueError as exc:  # settings the agent cannot honour are the job's failure, as data
            return common_pb2.Measurement(**base, failure_kind="invalid_input",
                                          failure_message=f"bad measurement settings: {exc}",
                                          started_at_unix=started, finished_at_unix=time.time())
        shapes = {i.name: tuple(int(d) for d in i.shape) for i in job.inputs if i.shape}
        fills = {i.name: i.fill for i in job.inputs if i.HasField("fill")}
        provider = None if job.provider == DEFAULT_PROVIDER.get(job.runtime) else job.provider
        request = {"model_path": str(path), "runtime": job.runtime, "threads": job.threads, "provider": provider,
                   "settings": settings.to_dict(), "shapes": {k: list(v) for k, v in shapes.items()},
                   "fills": fills, "limits": {"max_other_cpu_cores": reading.max_other_cpu_cores,
                                              "max_steal_share": reading.max_steal_share,
                                              "max_probe_slowdown": reading.max_probe_slowdown,
                                              "max_speed_wait_s": reading.max_speed_wait_s}}
        result = combine(measure_reading(lambda: _session_run(self._session_here_or_isolated(request, reading)),
                                         reading))
        m = result_to_measurement(result, **base)
        m.job_kind = job.job_kind
        m.cooldown_wait_s, m.thermal_wait_s, m.thermal_gate_timed_out = cooldown_wait_s, thermal_wait_s, gate_timed_out
        if job.profile_operators and job.runtime == "onnxruntime" and not m.failure_kind:
            from .profile import profile_operators

            try:  # a separate pass: profiling never touches the latency samples above
                ops = profile_operators(str(path), threads=job.threads, provider=provider, shapes=shapes,
                                        fills=fills)
                m.operators.extend(common_pb2.OperatorProfile(**o) for o in ops)
            except Exception as exc:  # noqa: BLE001 - the latency measurement stands on its own
                log.warning("job %s: profiled pass failed: %s", job.job_id, exc)
        return m

    def _session_here_or_isolated(self, request: dict, reading) -> dict:
        """One session: in the measurement worker (isolated), or in this thread when asked not to isolate."""
        if reading.isolate and self.config.isolation == "process":
            return self.worker.run(request)
        from .worker import run_session

        return run_session(request, self.power_sensor)

    def _wait_until_ready(self, job: agent_pb2.JobAssignment) -> tuple[float, float, bool]:
        """Cool-down since the previous job, then the thermal gate (bounded). Returns the waits.

        Without readable temperature sensors the gate cannot judge and lets the job start.
        """
        cooldown_wait_s = 0.0
        if job.cooldown_s > 0 and self._last_job_end is not None:
            remaining = job.cooldown_s - (time.monotonic() - self._last_job_end)
            if remaining > 0:
                self.stopping.wait(remaining)
                cooldown_wait_s = remaining
        if job.max_start_temp_c <= 0:
            return cooldown_wait_s, 0.0, False
        from .thermal import hottest_temp_c

        started = time.monotonic()
        while True:
            hottest = hottest_temp_c(self.read_temps())
            waited = time.monotonic() - started
            if hottest is None or hottest < job.max_start_temp_c:
                return cooldown_wait_s, waited, False
            if waited >= job.max_thermal_wait_s or self.stopping.is_set():
                log.warning("job %s: still %.1f °C after %.0f s (gate %.1f °C); starting anyway", job.job_id,
                            hottest, waited, job.max_start_temp_c)
                return cooldown_wait_s, waited, True
            self.stopping.wait(min(1.0, job.max_thermal_wait_s - waited))

    def _fetch_model(self, sha256: str, size_bytes: int) -> Path:
        deadline = time.monotonic() + FETCH_RETRY_S
        while True:
            with self._lock:
                stub = self._stub
            try:
                if stub is None:
                    raise ConnectionError("not connected")

                def chunks(offset: int):
                    for chunk in stub.FetchModel(agent_pb2.FetchModelRequest(sha256=sha256, offset=offset),
                                                 metadata=self._metadata, timeout=600):
                        yield chunk.data

                return self.cache.fetch(sha256, size_bytes, chunks)
            except (grpc.RpcError, ConnectionError, ValueError) as exc:  # ValueError: channel closed under us
                code = exc.code() if isinstance(exc, grpc.RpcError) else None
                if code == grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline or self.stopping.is_set():
                    raise
                log.info("model download of %s interrupted (%s); retrying", sha256[:12], code or exc)
                self.stopping.wait(1.0)


def _session_run(result: dict):
    from .reading import SessionRun

    return SessionRun(samples_ms=result.get("samples_ms") or [], result=result,
                      interference=result.get("interference"), failure_kind=result.get("failure_kind"))


def result_to_measurement(r: dict, **base) -> common_pb2.Measurement:
    """A reading's result (``reading.combine``: a ``BenchResult`` dict plus sessions, spread, interference and
    flags) → the wire ``Measurement``, by the one record rule of ``fleetmeter.records``. The ids come from
    ``base``: an empty value in ``r`` never overrides one; the agent's own keys (the model's local path, the
    runtime config, the seed ...) stay on the device."""
    m = common_pb2.Measurement(**base)
    fill(m, {k: v for k, v in r.items() if not (k in base and not v)}, ignore_unknown=True)
    if not m.finished_at_unix:
        m.finished_at_unix = time.time()
    return m


# ---------------------------------------------------------------- CLI glue
def run_command(args: argparse.Namespace) -> int:
    import signal
    import sys

    try:
        agent = Agent(config_from_args(args))
    except (ValueError, RuntimeError) as exc:
        print(f"fleetmeter-agent: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum, frame):  # noqa: ARG001
        log.info("signal %d: stopping", signum)
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()
    return 0
