"""The controller on its host, as an operator starts it (`fleetmeter controller`, a real subprocess with its
real local Ray): where Ray listens, where Ray's files go, who may read the data dir, and how it stops.

One controller (short data dir under /tmp: Ray's files go to ``<data-dir>/ray``) serves the listening,
files and permission checks and is then stopped with SIGINT while an agent is connected; a second one
(a data dir too long for Ray's unix sockets: the private fallback folder) is stopped with SIGTERM.
Linux only: sockets and processes are read from /proc.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetmeter.local_fleet import wait_until

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

STOP_TIMEOUT_S = 15.0


# ------------------------------------------------------------------ /proc
def _session_pids(sid: int) -> set[int]:
    """Every live process in session ``sid`` (the controller was started as a session leader, so this is
    the controller and everything Ray started under it, even what was reparented)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat_line = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat_line.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.add(int(entry))
    return pids


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


def _proc_name(pid: int) -> str:
    """The process's name (``gcs_server``, ``raylet``, ``ray::FleetAc``...; 15 characters at most)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _hex_address(text: str) -> tuple[str, int]:
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = ipaddress.IPv4Address(raw[::-1])
    else:  # four little-endian 32-bit words
        ip = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
        if ip.ipv4_mapped is not None:
            return f"::ffff:{ip.ipv4_mapped}", int(port, 16)
    return str(ip), int(port, 16)


def _listening(pids: set[int]) -> list[tuple[int, str, str, int]]:
    """``(pid, process, ip, port)`` of every listening TCP socket the processes hold."""
    by_inode: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A":  # LISTEN
                by_inode[cols[9]] = _hex_address(cols[1])
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if m and m.group(1) in by_inode:
                found.append((pid, _proc_name(pid), *by_inode[m.group(1)]))
    return sorted(found)


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


# ------------------------------------------------------------------ a controller
@dataclass
class Served:
    popen: subprocess.Popen
    data_dir: Path
    address: str
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _start(data_dir: Path, logs: Path) -> Served:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for key in ("FLEETMETER_CONTROLLER", "FLEETMETER_AGENT_TOKEN", "FLEETMETER_API_TOKEN", "RAY_ADDRESS"):
        env.pop(key, None)
    logs.mkdir(parents=True, exist_ok=True)
    stderr_path = logs / "controller.err"
    with open(logs / "controller.out", "wb") as out, open(stderr_path, "wb") as err:
        popen = subprocess.Popen([sys.executable, "-m", "fleetmeter.cli", "controller", "--listen", "127.0.0.1:0",
                                  "--data-dir", str(data_dir), "--reference-interval-s", "0"],
                                 stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    addr_file = data_dir / "controller.json"

    def ready() -> bool:
        if popen.poll() is not None:
            raise RuntimeError(f"the controller exited during start-up:\n{stderr_path.read_text()[-3000:]}")
        return addr_file.exists()

    wait_until(ready, 180, "the controller to start")
    served = Served(popen, data_dir, json.loads(addr_file.read_text())["address"], stderr_path)
    from fleetmeter.client import Client

    with Client(served.address) as client:
        client.wait_ready(60)
    return served


def _kill(served: Served) -> None:
    if served.popen.poll() is None:
        try:
            os.killpg(served.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        served.popen.wait(30)


def _stop_and_check(served: Served, sig: int, whole_group: bool) -> None:
    """Send ``sig``; the controller must exit 0 within STOP_TIMEOUT_S, without a traceback, without a
    second Ray, and leave no process of its session behind."""
    ours = _session_pids(served.pid)
    assert len(ours) > 3, f"expected the controller and Ray's processes, found {ours}"
    (os.killpg if whole_group else os.kill)(served.pid, sig)
    started = time.monotonic()
    try:
        rc = served.popen.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the controller did not stop within {STOP_TIMEOUT_S} s of {sig.name}:\n"
                    f"{served.stderr()[-3000:]}")
    took_s = time.monotonic() - started
    err = served.stderr()
    assert rc == 0, f"exit code {rc} after {sig.name}:\n{err[-3000:]}"
    assert "Traceback" not in err, err
    # Ray's auto-init (a call reaching Ray after shutdown) starts a default Ray and says so.
    assert "Started a local Ray instance" not in err and err.count("starting Ray") == 1, err
    try:
        wait_until(lambda: not _alive(ours), 5, "the controller's processes to go")
    except TimeoutError:
        pytest.fail(f"left running after {sig.name}: " + ", ".join(f"{p} {_proc_name(p)}" for p in _alive(ours)))
    print(f"{sig.name}: rc {rc} after {took_s:.1f} s")


@pytest.fixture(scope="module")
def served():
    # Short on purpose: <data-dir>/ray fits Ray's unix socket paths, so Ray's files go there.
    root = Path(tempfile.mkdtemp(prefix="fmh-"))
    s = _start(root / "d", root / "logs")
    try:
        yield s
    finally:
        _kill(s)
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------ tests
def test_nothing_of_the_controller_listens_beyond_loopback(served):
    """With --listen 127.0.0.1, Ray (GCS, raylet, object manager, workers) listens on loopback only;
    a socket on 0.0.0.0 / :: would open Ray to the network."""
    sockets = _listening(_session_pids(served.pid))
    print("\n" + "\n".join(f"{pid:>7}  {name:<16} {ip}:{port}" for pid, name, ip, port in sockets))
    names = " ".join(name for _, name, _, _ in sockets)
    port = int(served.address.rpartition(":")[2])
    assert any(p == port for _, _, _, p in sockets), "the controller's own gRPC port is missing: reading failed"
    assert "gcs_server" in names and "raylet" in names, sockets
    wide = [s for s in sockets if not _is_loopback(s[2])]
    assert not wide, f"listening beyond loopback: {wide}"


def test_ray_keeps_its_files_under_the_data_dir(served):
    sessions = list((served.data_dir / "ray").glob(f"session_*_{served.pid}"))
    assert len(sessions) == 1 and (sessions[0] / "sockets").is_dir(), list((served.data_dir / "ray").iterdir())
    default = Path(tempfile.gettempdir()) / "ray"
    assert not list(default.glob(f"session_*_{served.pid}")), f"a session of this controller in {default}"


def test_the_data_dir_is_private(served):
    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    d = served.data_dir
    assert mode(d) == 0o700
    for name in ("fleetmeter.sqlite", "fleetmeter.sqlite-wal", "fleetmeter.sqlite-shm", "controller.json"):
        if name == "fleetmeter.sqlite" or (d / name).exists():
            assert mode(d / name) == 0o600, name
    assert mode(d / "blobs") == 0o700


def test_sigint_with_an_agent_connected_stops_cleanly(served):
    """Ctrl-C (SIGINT to the process group) while an agent's stream is open: the stream's last call to the
    fleet must not reach Ray after it stopped (Ray would start a second instance)."""
    from fleetmeter.client import Client

    logs = served.data_dir.parent / "logs"
    with open(logs / "agent.log", "wb") as out:
        agent = subprocess.Popen([sys.executable, "-m", "fleetmeter.agent.cli", "run", "--controller", served.address,
                                  "--name", "host-test", "--data-dir", str(served.data_dir.parent / "agent"),
                                  "--runtime", "onnxruntime", "--threads", "1"],
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    try:
        def connected() -> bool:
            if agent.poll() is not None:
                raise RuntimeError("the agent exited:\n" + (logs / "agent.log").read_text()[-3000:])
            with Client(served.address) as c:
                return any(d.name == "host-test" and d.connected for d in c.list_devices())

        wait_until(connected, 120, "the agent to connect", poll_s=0.2)
        session_dir = next((served.data_dir / "ray").glob(f"session_*_{served.pid}"))
        _stop_and_check(served, signal.SIGINT, whole_group=True)
        assert not session_dir.exists(), "this controller's Ray session files are left behind"
        assert not (served.data_dir / "ray").exists(), "the controller made <data-dir>/ray and left it"
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGTERM)
            agent.wait(30)


def test_sigterm_stops_cleanly_and_removes_the_fallback_temp_dir(tmp_path):
    """A data dir too long for Ray's unix sockets: Ray's files go to a private fm-ray-* folder (logged), which
    is gone after SIGTERM (to the controller process, as systemd KillMode=mixed or docker stop send it)."""
    data_dir = tmp_path / ("x" * 40) / "d"
    served = _start(data_dir, tmp_path / "logs")
    try:
        m = re.search(r"Ray keeps its files in (\S+) instead of", served.stderr())
        assert m, served.stderr()
        fallback = Path(m.group(1))
        assert fallback.name.startswith("fm-ray-") and stat.S_IMODE(fallback.stat().st_mode) == 0o700
        assert list(fallback.glob(f"*/session_*_{served.pid}/sockets"))
        assert not (data_dir / "ray").exists()
        _stop_and_check(served, signal.SIGTERM, whole_group=False)
        assert not fallback.exists(), f"{fallback} left behind"
    finally:
        _kill(served)
