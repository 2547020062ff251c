"""A whole fleet on this machine: a controller and agents as real subprocesses.

Used by ``fleetmeter demo``, the integration tests and the benchmarks, so
that all three exercise exactly the processes an operator runs. Readiness is
decided by conditions (the controller's address file and a gRPC health
check; agents showing up as connected), never by sleeping a fixed time.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from fleetmeter.errors import Unavailable

if TYPE_CHECKING:
    from fleetmeter._net import TlsFiles

log = logging.getLogger(__name__)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class LocalFleet:
    """A controller and agents under ``root`` (data dirs and ``logs/``), each a subprocess in its own session.

    ``agent_token`` / ``api_token`` reach the processes as ``$FLEETMETER_AGENT_TOKEN`` /
    ``$FLEETMETER_API_TOKEN``; no other inherited ``FLEETMETER_*`` variable does (the fleet is
    self-contained). ``tls``: what this object's own client presents when the controller serves TLS
    (started with ``--tls-cert``/``--tls-key``, and ``--tls-ca`` for mutual TLS, as extra arguments of
    :meth:`start_controller`); agents get their ``--tls-*`` flags as extra arguments of :meth:`start_agent`.
    """

    def __init__(self, root: str | Path, *, agent_token: Optional[str] = None, api_token: Optional[str] = None,
                 lease_timeout_s: float = 30.0, heartbeat_s: float = 2.0, tls: Optional["TlsFiles"] = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self.agent_token = agent_token
        self.api_token = api_token
        self.lease_timeout_s = lease_timeout_s
        self.heartbeat_s = heartbeat_s
        self.tls = tls
        self.controller: Optional[Proc] = None
        self.address: Optional[str] = None
        self.agents: dict[str, Proc] = {}

    @property
    def data_dir(self) -> Path:
        return self.root / "controller"

    def env(self) -> dict[str, str]:
        """The environment the fleet's processes run with (also right for a CLI call against this fleet): this
        one's, less every ``FLEETMETER_*`` variable, plus the fleet's tokens."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETMETER_")}
        env["PYTHONUNBUFFERED"] = "1"
        for key, value in (("FLEETMETER_AGENT_TOKEN", self.agent_token), ("FLEETMETER_API_TOKEN", self.api_token)):
            if value:
                env[key] = value
        return env

    def _spawn(self, name: str, argv: list[str], env: Optional[dict[str, str]] = None) -> Proc:
        log_path = self.root / "logs" / f"{name}.log"
        out = open(log_path, "ab")
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**self.env(), **(env or {})}, start_new_session=True)
        out.close()
        return Proc(name, popen, log_path)

    # ------------------------------------------------------------ controller
    def start_controller(self, listen: Optional[str] = None, timeout_s: float = 180.0, *args: str) -> str:
        """Start ``fleetmeter controller`` (extra flags in ``args``) and wait until its health check answers;
        returns its address. ``listen`` defaults to the previous address (a restart), else a free port."""
        listen = listen or self.address or "127.0.0.1:0"
        addr_file = self.data_dir / "controller.json"
        addr_file.unlink(missing_ok=True)
        self.controller = self._spawn("controller", [
            sys.executable, "-m", "fleetmeter.cli", "controller", "--listen", listen,
            "--data-dir", str(self.data_dir), "--lease-timeout-s", str(self.lease_timeout_s),
            "--heartbeat-s", str(self.heartbeat_s), *args])

        def ready() -> bool:
            if not self.controller.alive():
                raise RuntimeError("the controller exited during start-up:\n" + self.controller.log_tail())
            try:  # the file appears before its content: ready once it parses
                self.address = json.loads(addr_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                return False
            return True

        try:
            wait_until(ready, timeout_s, "the controller to start")
            with self.client() as c:
                c.wait_ready(timeout_s)  # Unavailable when it does not answer (e.g. TLS the client cannot speak)
        except (TimeoutError, Unavailable) as exc:
            raise type(exc)(f"{exc}; controller log:\n{self.controller.log_tail()}") from None
        return self.address

    def stop_controller(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> None:
        if self.controller is not None:
            _stop(self.controller, sig, timeout_s)
            self.controller = None

    # ------------------------------------------------------------ agents
    def start_agent(self, name: str, *args: str, env: Optional[dict[str, str]] = None) -> Proc:
        """``fleetmeter-agent run`` with its own data dir under the fleet root; extra flags in ``args``, extra
        environment variables in ``env``."""
        if self.address is None:
            raise RuntimeError("start the controller first")
        proc = self._spawn(name, [sys.executable, "-m", "fleetmeter.agent.cli", "run", "--controller", self.address,
                                  "--name", name, "--data-dir", str(self.root / "agents" / name), *args], env)
        self.agents[name] = proc
        return proc

    def stop_agent(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
        proc = self.agents.pop(name, None)
        if proc is not None:
            _stop(proc, sig, timeout_s)

    def wait_agents_connected(self, names: list[str], timeout_s: float = 120.0) -> None:
        def ready() -> bool:
            for n in names:
                p = self.agents.get(n)
                if p is not None and not p.alive():
                    raise RuntimeError(f"agent {n} exited:\n" + p.log_tail())
            with self.client() as c:
                connected = {d.name for d in c.list_devices() if d.connected}
            return set(names) <= connected

        try:
            wait_until(ready, timeout_s, f"agents {names} to connect", poll_s=0.2)
        except TimeoutError as exc:
            tails = "".join(f"\n{n} log:\n{self.agents[n].log_tail()}" for n in names if n in self.agents)
            raise TimeoutError(f"{exc}{tails}") from None

    def client(self):
        """A :class:`~fleetmeter.client.Client` of this fleet's controller (its API token, ``tls``; never the
        caller's ``$FLEETMETER_TLS_*``, which name another controller's files)."""
        from fleetmeter.client import Client, TlsFiles

        return Client(self.address, self.api_token, self.tls or TlsFiles())

    def close(self) -> None:
        for name in list(self.agents):
            self.stop_agent(name)
        self.stop_controller()

    def __enter__(self) -> "LocalFleet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stop(proc: Proc, sig: int, timeout_s: float) -> None:
    """Stop a process as an operator would: ``sig`` to the process itself (it stops what it started: the
    controller its Ray, in ~2 s; signalling Ray's processes too makes Ray take ~8 s), then SIGKILL whatever
    of its process group is left. SIGKILL goes to the whole group at once (a crash of everything)."""
    if not proc.alive():
        return
    try:
        if sig == signal.SIGKILL:
            os.killpg(proc.popen.pid, sig)
        else:
            os.kill(proc.popen.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0f s; killing it", proc.name, timeout_s)
    try:
        os.killpg(proc.popen.pid, signal.SIGKILL)  # leftovers (none after a clean stop)
    except (ProcessLookupError, PermissionError):
        pass
    proc.popen.wait()
