"""The controller on a real multi-node Ray cluster, all of it on 127.0.0.1.

A head (no CPUs) and two one-CPU worker nodes are started as separate processes with ``ray start``, each with
its own resources and temp dir; the controller joins with ``--ray-address``. Zoo builds, feature extraction and
training run as Ray tasks; the engine logs the node id of every task, and the test checks them against the
workers' node ids (read from each raylet's log). Results come back through Ray's object store: the zoo's files
are written by the driver, features and trained predictors reach the controller's own stores. Then a worker
node is killed while a training run is on: the run completes (its tasks retried on the other worker) or fails
with an error that says so, and the controller keeps answering. On a cluster of its own, both workers are killed
during a training run: with no node left that has CPUs the run fails, once ``--no-worker-timeout-s`` has passed,
with an error that says so (instead of its tasks waiting forever), and the controller keeps answering.

Two workarounds of Ray's, both only for a cluster confined to loopback on one machine: ``ray start --head``
takes a loopback node ip only while ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (else it advertises the host's
address), and a worker joining ``127.0.0.1`` would rewrite that to the host's address, so the workers start
through a two-line wrapper that keeps it. Ray's token authentication is on (a random token in the environment
of every process, the controller's included).
"""
from __future__ import annotations

import csv
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("lightgbm")
if shutil.which("ray") is None:
    pytest.skip("the `ray` command is not installed", allow_module_level=True)

from fleetmeter.errors import FailedPrecondition, FleetmeterError  # noqa: E402
from fleetmeter.local_fleet import LocalFleet  # noqa: E402
from fleetmeter.modeler.zoo.fam_nasbench201 import arch_from_index, build_nasbench201  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402

WORKERS = ("worker_a", "worker_b")
PLATFORMS = ("mn-a", "mn-b")
NO_WORKER_TIMEOUT_S = 5
TASK_LINE = re.compile(r"(\d+) Ray task\(s\) of (\w+) ran on node\(s\) (.*)")
_KEEP_LOOPBACK = ("import sys; from ray._private import services; services.resolve_ip_for_localhost = lambda h: h; "
                  "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Cluster:
    """``ray start`` processes: a head and the workers, each with a short temp dir of its own."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fm-mn-", dir="/tmp"))  # short: Ray's socket paths
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"

    def _start(self, name: str, argv: list[str], env: dict) -> None:
        out = subprocess.run(argv + ["--node-ip-address", "127.0.0.1", "--temp-dir", str(self.root / name),
                                     "--disable-usage-stats"], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, f"ray start ({name}) failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"

    def start(self) -> None:
        env = dict(os.environ)
        self._start("head", ["ray", "start", "--head", "--port", str(self.port), "--num-cpus", "0",
                             "--resources", '{"head": 1}', "--include-dashboard=false"],
                    {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        for name in WORKERS:
            self._start(name, [sys.executable, "-c", _KEEP_LOOPBACK, "start", "--address", self.address,
                               "--num-cpus", "1", "--resources", json.dumps({name: 1})], env)

    def node_id(self, name: str) -> str:
        log = (self.root / name / "session_latest" / "logs" / "raylet.out").read_text(errors="replace")
        return re.search(r"Setting node ID node_id=([0-9a-f]+)", log).group(1)

    def pids(self, name: str) -> list[int]:
        """The processes of node ``name``: every process whose command line names its temp dir."""
        marker = str(self.root / name) + "/"
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if marker in cmdline:
                    pids.append(int(entry.name))
        return pids

    def kill(self, name: str) -> int:
        """SIGKILL every process of node ``name``; how many there were."""
        pids = self.pids(name)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def stop(self) -> None:
        for name in (*WORKERS, "head"):
            self.kill(name)
        shutil.rmtree(self.root, ignore_errors=True)


def _task_nodes(text: str) -> dict[str, set[str]]:
    """Function name -> the node ids its Ray tasks ran on, from the engine's log lines."""
    ran: dict[str, set[str]] = {}
    for _, fn, nodes in TASK_LINE.findall(text):
        ran.setdefault(fn, set()).update(re.findall(r"([0-9a-f]{20,})\(\d+\)", nodes))
    return ran


def _measurements(folder: Path) -> Path:
    """Small NAS-Bench-201 cells as ONNX files and a CSV of made-up latencies on two platforms."""
    rows = []
    for n, index in enumerate(range(100, 100 + 24 * 37, 37)):
        arch = build_nasbench201(f"nb{index}", {"arch": arch_from_index(index), "channels": 8,
                                                "cells_per_stage": 1})
        path = folder / f"nb{index:05d}.onnx"
        path.write_bytes(onnx_bytes(build_onnx(arch)))
        for k, platform in enumerate(PLATFORMS):
            rows.append((path.name, platform, f"{1.0 + 0.1 * (n % 7) + 0.05 * k + 0.01 * n:.4f}", "nasbench201"))
    table = folder / "readings.csv"
    with table.open("w", newline="") as fh:
        csv.writer(fh).writerows([("model", "platform", "latency_ms", "family"), *rows])
    return table


@pytest.fixture()
def cluster(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    c = _Cluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _fm(fleet: LocalFleet, *args: str) -> subprocess.CompletedProcess:
    env = dict(fleet.env(), FLEETMETER_CONTROLLER=fleet.address)
    return subprocess.run([sys.executable, "-m", "fleetmeter.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_controller_zoo_and_training_run_on_worker_nodes(cluster, tmp_path):
    workers = {cluster.node_id(name) for name in WORKERS}
    head = cluster.node_id("head")
    fleet = LocalFleet(tmp_path / "fleet", api_token=secrets.token_hex(8), agent_token=secrets.token_hex(8))
    try:
        fleet.start_controller(None, 180.0, "--ray-address", cluster.address, "--ray-node-ip", "127.0.0.1")

        # Zoo build on the cluster: the tasks ran on the workers, the files were written here by the driver.
        out = tmp_path / "zoo"
        built = _fm(fleet, "-v", "zoo", "build", "--family", "nasbench201", "--count", "3", "--formats", "onnx",
                    "--out", str(out), "--ray-address", cluster.address, "--json")
        assert built.returncode == 0, built.stderr[-3000:]
        entries = json.loads(built.stdout)
        assert len(entries) == 3 and all((out / e["file"]).stat().st_size == e["size_bytes"] for e in entries)
        zoo_nodes = _task_nodes(built.stderr)["_build_on_worker"]
        assert zoo_nodes and zoo_nodes <= workers, (zoo_nodes, workers)

        # Feature extraction and training: Ray tasks on the workers, results in the controller's registry.
        imported = _fm(fleet, "import", str(_measurements(tmp_path)), "--json")
        assert imported.returncode == 0, imported.stderr[-3000:]
        trained = _fm(fleet, "train", "--target", "latency_ms", "--no-family-split", "--json")
        assert trained.returncode == 0, trained.stderr[-3000:] + fleet.controller.log_tail()
        results = json.loads(trained.stdout)
        assert {r["platform"] for r in results if r["version"]} == set(PLATFORMS)
        ran = _task_nodes(fleet.controller.log_path.read_text(errors="replace"))
        assert "_extract_task" in ran and len(ran) >= 2, ran  # extraction and at least one training function
        for fn, nodes in ran.items():
            assert nodes <= workers and head not in nodes, (fn, nodes, workers)

        _train_through_a_node_failure(fleet, cluster)
    finally:
        fleet.close()


def _train_killing(fleet: LocalFleet, cluster: _Cluster, names: tuple, deadline_s: float = 300.0
                   ) -> tuple[dict, float]:
    """A training run on a thread; once it reports ``training``, SIGKILL the nodes ``names``. Its outcome
    (``{"last": last message}`` or ``{"error": exception}``) and the seconds from the kill to its end."""
    outcome: dict = {}
    training = threading.Event()

    def train() -> None:
        try:
            with fleet.client() as c:
                for message in c.train(targets=["latency_ms"], skip_family_split=True, timeout_s=deadline_s):
                    if message.stage == "training":
                        training.set()
                    outcome["last"] = message
        except FleetmeterError as exc:
            outcome["error"] = exc
        finally:
            training.set()

    runner = threading.Thread(target=train, daemon=True)
    runner.start()
    assert training.wait(deadline_s)
    assert "error" not in outcome, outcome["error"]  # it reached training with the workers up
    for name in names:
        assert cluster.kill(name) >= 1  # its raylet at least
    killed_s = time.monotonic()
    runner.join(deadline_s)
    assert not runner.is_alive(), f"the training run still waits {deadline_s:.0f} s after {names} were killed"
    return outcome, time.monotonic() - killed_s


def _train_through_a_node_failure(fleet: LocalFleet, cluster: _Cluster) -> None:
    """Kill worker_b once a second training run is training: the run completes or fails saying why, and the
    controller stays up."""
    outcome, _ = _train_killing(fleet, cluster, ("worker_b",))
    if "error" in outcome:  # failed: the error names what happened
        assert re.search(r"node|worker|died|crash|unavailable", str(outcome["error"]), re.I), outcome["error"]
    else:
        assert outcome["last"].stage == "done" and outcome["last"].results, outcome
    assert fleet.controller.alive(), fleet.controller.log_tail()
    with fleet.client() as c:
        assert c.list_devices() == []  # still answering: no agents joined this fleet


def _assert_no_worker_error(outcome: dict, fleet: LocalFleet) -> None:
    error = outcome.get("error")
    assert isinstance(error, FailedPrecondition), (outcome, fleet.controller.log_tail())
    assert f"no Ray node with CPUs has been alive for {NO_WORKER_TIMEOUT_S} s" in str(error), error
    assert "start Ray worker nodes" in str(error) and "could not run" in str(error), error


def test_training_fails_clearly_when_every_worker_node_dies(cluster, tmp_path):
    """Both workers killed during a training run leave no node with CPUs (the head has none): the run fails
    with FailedPrecondition naming that, within the Ray's time to notice the deaths plus --no-worker-timeout-s
    (without it the retried tasks wait forever); the controller keeps answering, and a second run, on the
    cluster already without workers, fails the same way after about the timeout."""
    fleet = LocalFleet(tmp_path / "fleet", api_token=secrets.token_hex(8), agent_token=secrets.token_hex(8))
    try:
        fleet.start_controller(None, 180.0, "--ray-address", cluster.address, "--ray-node-ip", "127.0.0.1",
                               "--no-worker-timeout-s", str(NO_WORKER_TIMEOUT_S))
        imported = _fm(fleet, "import", str(_measurements(tmp_path)), "--json")
        assert imported.returncode == 0, imported.stderr[-3000:]

        outcome, after_kill_s = _train_killing(fleet, cluster, WORKERS, deadline_s=180.0)
        _assert_no_worker_error(outcome, fleet)
        # Ray marks a killed node dead after its health checks fail (about 15 s by default), then the timeout.
        assert after_kill_s < 120, after_kill_s
        assert fleet.controller.alive(), fleet.controller.log_tail()
        with fleet.client() as c:
            assert c.list_devices() == []  # still answering

        started_s = time.monotonic()
        with fleet.client() as c, pytest.raises(FailedPrecondition) as again:
            for _ in c.train(targets=["latency_ms"], skip_family_split=True, timeout_s=120):
                pass
        _assert_no_worker_error({"error": again.value}, fleet)
        assert time.monotonic() - started_s < NO_WORKER_TIMEOUT_S + 60
        assert fleet.controller.alive(), fleet.controller.log_tail()
        with fleet.client() as c:
            assert c.list_devices() == []
    finally:
        fleet.close()
