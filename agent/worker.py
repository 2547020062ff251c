"""Measurement isolation: every session runs in a process of its own.

The agent's process holds the gRPC stream, heartbeats and the spool; its
threads wake up and take the GIL at times the timed loop cannot choose.
So the agent never times a model itself: it hands each session to a
*measurement worker*, a small child process started once
(``python -m fleetmeter.agent.worker``) that imports the runtimes up front
and then, for every session, forks a fresh child that loads the model, runs
the benchmark with the interference guard and the power sensor, writes its
result back and exits. A session therefore gets its own load of the model
(its own allocations and arena) in a process where nothing else runs, and
the fork costs milliseconds instead of a Python start-up.

The worker starts at the agent's priority before the agent lowers its own
(``--control-nice``); ``--measure-cpus`` pins every session to given CPUs.
Where ``os.fork`` does not exist the worker runs sessions itself, one after
another (still away from the agent's threads).

Protocol (JSON lines): the agent writes a request ``{"model_path", "runtime",
"threads", "provider", "settings", "shapes", "fills", "seed", "limits"}`` on
the worker's stdin and reads one line back: ``{"result": <BenchResult JSON>}``
or ``{"error": "..."}``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any, Dict, Optional, Sequence

log = logging.getLogger(__name__)

__all__ = ["MeasurementWorker", "run_session"]


def run_session(request: Dict[str, Any], power_sensor: Any = None, probe: Any = None) -> Dict[str, Any]:
    """One session here and now: the benchmark with the guard; returns the BenchResult JSON dict.

    ``request["limits"]`` holds the guard's limits, plus ``max_probe_slowdown``
    and ``probe_baseline_us`` (the worker's recent best probe) for the speed probe.
    """
    from .bench import BenchSettings, run_benchmark
    from .interference import GuardLimits, InterferenceGuard
    from .speedprobe import ProbedGuard, SpeedProbe
    from .thermal import read_thermal_zones

    limits = request.get("limits") or {}
    guard = None
    if request.get("guard", True):
        inner = InterferenceGuard(GuardLimits(**{f: limits[f] for f in GuardLimits.__dataclass_fields__
                                                 if f in limits}))
        guard = ProbedGuard(inner, probe or SpeedProbe(), limits.get("probe_baseline_us"),
                            float(limits.get("max_probe_slowdown", 0.10)))
    result = run_benchmark(
        request["model_path"], runtime=request.get("runtime") or None, threads=int(request.get("threads") or 1),
        provider=request.get("provider") or None, settings=BenchSettings(**request.get("settings") or {}),
        shapes={k: tuple(v) for k, v in (request.get("shapes") or {}).items()}, fills=request.get("fills") or {},
        power_sensor=power_sensor, read_temps=read_thermal_zones, seed=int(request.get("seed") or 0), guard=guard)
    return result.to_json_dict()


class MeasurementWorker:
    """The agent's handle on its measurement worker process (started lazily, restarted if it dies).

    ``run(request)`` blocks until the session ends; one session at a time
    (the agent runs one job at a time). Thread-safe.
    """

    def __init__(self, *, runtimes: Sequence[str] = (), cpus: Sequence[int] = (), use_power_sensor: bool = True,
                 fork: bool = True) -> None:
        self.runtimes, self.cpus = tuple(runtimes), tuple(int(c) for c in cpus)
        self.use_power_sensor, self.fork = use_power_sensor, fork
        self._proc: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self._ensure()

    def _ensure(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        argv = [sys.executable, "-m", "fleetmeter.agent.worker"]
        for rt in self.runtimes:
            argv += ["--runtime", rt]
        if self.cpus:
            argv += ["--cpus", ",".join(map(str, self.cpus))]
        if not self.use_power_sensor:
            argv.append("--no-power")
        if not self.fork:
            argv.append("--no-fork")
        env = dict(os.environ)
        env.setdefault("OPENBLAS_NUM_THREADS", "1")  # no idle BLAS pool beside the timed loop
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
                                      bufsize=1)
        log.info("measurement worker started (pid %d%s)", self._proc.pid,
                 f", sessions pinned to CPUs {list(self.cpus)}" if self.cpus else "")
        return self._proc

    def run(self, request: Dict[str, Any]) -> Dict[str, Any]:
        """One session in the worker; the BenchResult JSON dict. Raises RuntimeError if the worker is lost."""
        with self._lock:
            for attempt in (1, 2):
                proc = self._ensure()
                try:
                    proc.stdin.write(json.dumps(request) + "\n")
                    proc.stdin.flush()
                    line = proc.stdout.readline()
                except (BrokenPipeError, OSError, ValueError) as exc:
                    line, err = "", exc
                else:
                    err = None
                if line:
                    reply = json.loads(line)
                    if "error" in reply:
                        raise RuntimeError(f"measurement worker: {reply['error']}")
                    return reply["result"]
                log.warning("measurement worker exited (%s); restarting", err or f"code {proc.poll()}")
                self._proc = None
            raise RuntimeError("the measurement worker died twice in a row")

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()


# ------------------------------------------------------------------ the worker process
def _forked(request: Dict[str, Any], power_sensor: Any, cpus: Sequence[int], probe: Any) -> Dict[str, Any]:
    """Run one session in a fresh child; its JSON reply comes back through a pipe."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one session, then gone
        os.close(rfd)
        code = 0
        try:
            if cpus:
                os.sched_setaffinity(0, set(cpus))
            reply: Dict[str, Any] = {"result": run_session(request, power_sensor, probe)}
        except BaseException as exc:  # noqa: BLE001 - reported to the agent as the session's error
            reply, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
        with os.fdopen(wfd, "w") as fh:
            fh.write(json.dumps(reply))
        os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd) as fh:
        text = fh.read()
    _, status = os.waitpid(pid, 0)
    if text:
        return json.loads(text)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return {"result": _died(request, f"the session process was killed by signal {sig} "
                                         f"({signal.Signals(sig).name})")}
    return {"result": _died(request, f"the session process exited with code {os.WEXITSTATUS(status)}")}


def _died(request: Dict[str, Any], message: str) -> Dict[str, Any]:
    """A session whose process died without a word: a failed run (data), like any runtime failure."""
    from .bench import BenchResult

    return BenchResult(model_sha256="", runtime=request.get("runtime") or "", runtime_version=None,
                       threads=int(request.get("threads") or 1), latency_ms=None, samples_ms=[], load_ms=None,
                       first_run_ms=None, peak_rss_bytes=None, energy_mj_per_inference=None, avg_power_w=None,
                       power_sensor=None, temps_c_before={}, temps_c_after={}, failure_kind="runtime_error",
                       failure_message=message, model_path=request.get("model_path")).to_json_dict()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleetmeter.agent.worker",
                                     description="the agent's measurement worker (speaks JSON lines on stdin/stdout)")
    parser.add_argument("--runtime", action="append", default=[], help="runtime to import up front")
    parser.add_argument("--cpus", default="", help="pin every session to these CPUs, e.g. 1 or 2,3")
    parser.add_argument("--no-power", action="store_true")
    parser.add_argument("--no-fork", action="store_true", help="run sessions in this process")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s worker %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent stops us by closing stdin
    cpus = [int(c) for c in args.cpus.split(",") if c.strip()]
    from .runtimes import get_runtime

    for name in args.runtime:  # import once here, so that each forked session starts warm
        try:
            get_runtime(name)
        except Exception as exc:  # noqa: BLE001 - a missing runtime fails its sessions, as data
            log.warning("runtime %s unavailable in the worker: %s", name, exc)
    power_sensor = None
    if not args.no_power:
        from .power import default_power_sensor

        power_sensor = default_power_sensor()
    fork = hasattr(os, "fork") and not args.no_fork
    if cpus and not fork:
        os.sched_setaffinity(0, set(cpus))
    # The protocol gets a private copy of stdout; fd 1 itself goes to stderr, so
    # whatever a runtime prints (LiteRT announces its delegate) cannot corrupt it.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    from .speedprobe import ProbeBaseline, SpeedProbe, wait_for_speed

    probe, baseline = SpeedProbe(), ProbeBaseline()
    baseline.add(probe.measure() for _ in range(10))
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        limits = request.setdefault("limits", {})
        waited_s = wait_for_speed(probe, baseline, float(limits.get("max_probe_slowdown", 0.10)),
                                  float(limits.get("max_speed_wait_s", 0.0)))
        limits["probe_baseline_us"] = baseline.best_us()
        if fork:
            reply = _forked(request, power_sensor, cpus, probe)
        else:
            try:
                reply = {"result": run_session(request, power_sensor, probe)}
            except Exception as exc:  # noqa: BLE001 - reported to the agent
                reply = {"error": f"{type(exc).__name__}: {exc}"}
        figures = (reply.get("result") or {}).get("interference") or {}
        baseline.add(figures.get("probe_us") or [])
        if figures:
            figures["speed_wait_s"] = waited_s
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
