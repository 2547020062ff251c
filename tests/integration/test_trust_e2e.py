"""Trust boundaries over real gRPC: a hand-written client holding a *valid* agent token tries every forgery,
hijack and squat the issue reproduced against a real controller (local Ray, SQLite) with a real agent.
Every attempt must be refused, nothing of it stored, and the real agent's work must go on.

The rules themselves are unit-tested in tests/unit/test_trust.py; this module proves they hold on the path
agents actually take (interceptor → gateway → fleet actor → store).
"""
from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys

import grpc
import pytest

from fleetmeter.local_fleet import LocalFleet, wait_until
from fleetmeter.modeler.builtin import get_builtin_model
from fleetmeter.v1 import agent_pb2, agent_pb2_grpc, common_pb2, fleet_pb2

from _fake_agent import FakeAgent, measurement  # tests/integration is on sys.path

pytestmark = pytest.mark.integration

MAX_JOB_S = 8.0
# Jobs long enough that one is seen running while the attacker acts.
SETTINGS = common_pb2.BenchSettings(warmup_runs=1, min_runs=5, min_duration_ms=1500, max_duration_ms=3000)
ONE_SESSION = common_pb2.ReadingSettings(sessions=1, max_sessions=1)


@pytest.fixture(scope="module")
def trust_fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    fleet = LocalFleet(root, agent_token=secrets.token_hex(8), api_token=secrets.token_hex(8),
                       lease_timeout_s=6.0, heartbeat_s=1.0)
    try:
        fleet.start_controller(None, 180.0, "--max-job-s", str(MAX_JOB_S), "--reference-interval-s", "0")
        fleet.start_agent("real", "--runtime", "onnxruntime", "--threads", "1")
        fleet.wait_agents_connected(["real"])
        with fleet.client() as c:
            sha = c.upload_model(get_builtin_model("tiny_mlp", "onnx").path).model.sha256
        yield fleet, sha
    finally:
        fleet.close()


def _db(fleet) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{fleet.data_dir / 'fleetmeter.sqlite'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db


def _rows(fleet, sql: str, *args) -> list[dict]:
    db = _db(fleet)
    try:
        return [dict(r) for r in db.execute(sql, args).fetchall()]
    finally:
        db.close()


def _device(fleet, name: str):
    with fleet.client() as c:
        return next(d for d in c.list_devices() if d.name == name)


def _sweep(fleet, sha: str, platform_id: str, repeats: int = 3) -> str:
    with fleet.client() as c:
        return c.submit_sweep(fleet_pb2.SweepSpec(
            models=[sha], repeats=repeats, settings=SETTINGS, reading=ONE_SESSION, repeat_sample=-1,
            platforms=fleet_pb2.PlatformSelector(platform_ids=[platform_id]))).sweep_id


def _wait_done(fleet, sweep_id: str, timeout_s: float = 120.0) -> None:
    def done() -> bool:
        with fleet.client() as c:
            s = c.get_sweep(sweep_id)
        return s.progress.state == "done" and s.progress.leased == 0

    wait_until(done, timeout_s, f"sweep {sweep_id} to finish", poll_s=0.5)


def _assert_connect_denied(fleet, token: str, name: str) -> None:
    """A FakeAgent ``name`` holding ``token`` cannot open the agent stream: PERMISSION_DENIED."""
    agent = FakeAgent(fleet.address, token, name)
    try:
        with pytest.raises(grpc.RpcError) as err:
            agent.connect(timeout_s=15)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        agent.close()


def _every_job_once(fleet, sweep_id: str, agent_id: str) -> None:
    jobs = _rows(fleet, "SELECT j.job_id, j.state, j.agent_id, COUNT(m.measurement_id) AS linked FROM jobs j"
                        " LEFT JOIN measurements m ON m.job_id = j.job_id WHERE j.sweep_id=? GROUP BY j.job_id",
                 sweep_id)
    assert jobs and all((j["state"], j["linked"], j["agent_id"]) == ("done", 1, agent_id) for j in jobs), jobs


def test_forged_results_are_refused_and_stored_nowhere(trust_fleet):
    """Fails if a valid agent token lets its holder finish another agent's job, settle a job nobody was given,
    or file readings under made-up jobs (the issue's forged rows then fed training)."""
    fleet, sha = trust_fleet
    real = _device(fleet, "real")
    sweep_id = _sweep(fleet, sha, real.platform_ids[0])
    wait_until(lambda: _device(fleet, "real").current_job_id != "", 60, "the real agent to start a job")
    running = _device(fleet, "real").current_job_id
    evil = FakeAgent(fleet.address, fleet.agent_token, "evil-forger", runtime="litert", labels={"evil": "1"})
    try:
        evil.connect()
        pending = _rows(fleet, "SELECT job_id FROM jobs WHERE sweep_id=? AND state='pending' LIMIT 1", sweep_id)
        targets = [running, pending[0]["job_id"], "../../x", ""]
        forged = [measurement(j, real.agent_id, platform_id=real.platform_ids[0], sweep_id=sweep_id,
                              model_sha256=sha) for j in targets]
        acks = [evil.send_result(m) for m in forged]
        assert all(a.rejected for a in acks), acks
        assert "never leased to agent evil-forger" in acks[0].rejected and "never leased" in acks[1].rejected
        ids = [m.measurement_id for m in forged]
        stored = _rows(fleet, f"SELECT measurement_id FROM measurements WHERE measurement_id IN "
                              f"({','.join('?' * len(ids))})", *ids)
        assert stored == []
        assert _rows(fleet, "SELECT state, attempts FROM jobs WHERE job_id=?", pending[0]["job_id"])[0] in (
            {"state": "pending", "attempts": 0}, {"state": "leased", "attempts": 1},
            {"state": "done", "attempts": 1})  # untouched by the forgery (the real agent may have reached it)
        _wait_done(fleet, sweep_id)
        _every_job_once(fleet, sweep_id, real.agent_id)
    finally:
        evil.close()


def test_hijack_of_a_connected_agent_id_is_refused_and_the_real_agent_stays(trust_fleet):
    """Fails if a hello with another agent's id (and a valid token) kicks the real agent off or overwrites
    its device record."""
    fleet, _ = trust_fleet
    real = _device(fleet, "real")
    for secret in ("a-guess", ""):
        thief = FakeAgent(fleet.address, fleet.agent_token, real.agent_id, secret=secret or "x",
                          host_id="thief-host", name="thief")
        if not secret:
            thief.secret = ""
        try:
            with pytest.raises(grpc.RpcError) as err:
                thief.connect(timeout_s=15)
            assert err.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
        finally:
            thief.close()
    # The refusal comes before anything is written (the hello is answered only after the fleet checked it), so
    # a taken-over id would already show here: another name and host on the real agent's record.
    after = _device(fleet, "real")
    assert after.connected and after.name == "real" and after.info.host_id == real.info.host_id


def test_wrong_kind_tokens_are_permission_denied(trust_fleet):
    """Fails if the API token opens the agent service (errors.py: a token of the wrong kind is
    PERMISSION_DENIED) or a made-up token fetches models."""
    fleet, sha = trust_fleet
    _assert_connect_denied(fleet, fleet.api_token, "api-as-agent")
    with grpc.insecure_channel(fleet.address) as ch:
        stub = agent_pb2_grpc.AgentServiceStub(ch)
        for token, code in (("fma_made_up", grpc.StatusCode.UNAUTHENTICATED),
                            (fleet.api_token, grpc.StatusCode.PERMISSION_DENIED)):
            with pytest.raises(grpc.RpcError) as err:
                list(stub.FetchModel(agent_pb2.FetchModelRequest(sha256=sha),
                                     metadata=(("authorization", f"Bearer {token}"),), timeout=15))
            assert err.value.code() == code
    log = (fleet.root / "logs" / "controller.log").read_text()
    assert "refused" in log and fleet.api_token not in log and "fma_made_up" not in log


def test_a_squatter_on_the_real_host_cannot_starve_it(trust_fleet):
    """Fails if an agent claiming a real host_id keeps that host's lease by heartbeating forever."""
    fleet, sha = trust_fleet
    real = _device(fleet, "real")
    squatter = FakeAgent(fleet.address, fleet.agent_token, "squatter", host_id=real.info.host_id,
                         labels={"squat": "1"})
    try:
        squatter.connect()
        squat_platform = _device(fleet, "squatter").platform_ids[0]
        _sweep(fleet, sha, squat_platform, repeats=1)
        job = squatter.wait_for(lambda m: m.WhichOneof("kind") == "job", 60).job
        squatter.job_id = job.job_id  # and it heartbeats this job forever, never sending a result
        sweep_id = _sweep(fleet, sha, real.platform_ids[0], repeats=2)
        _wait_done(fleet, sweep_id, timeout_s=MAX_JOB_S + 90)  # the host is not starved: bounded by max_job_s
        [row] = _rows(fleet, "SELECT state, error FROM jobs WHERE job_id=?", job.job_id)
        assert "max_job_s" in (row["error"] or ""), row
        squat = _device(fleet, "squatter")
        assert squat.state == "suspended" and "max_job_s" in squat.suspended_reason
        _every_job_once(fleet, sweep_id, real.agent_id)
    finally:
        squatter.close()


def test_per_agent_token_create_bind_list_revoke(trust_fleet):
    """Fails if an operator cannot issue a token that only its agent may use, or a revoked token's agent
    stays connected."""
    fleet, _ = trust_fleet
    env = {**os.environ, "FLEETMETER_CONTROLLER": fleet.address, "FLEETMETER_API_TOKEN": fleet.api_token}

    def cli(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "fleetmeter.cli", *args, "--json"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    created = cli("agents", "token", "create", "--name", "bench-7")
    assert created["token"].startswith("fma_") and created["state"] == "active"
    fleet.start_agent("tok", "--runtime", "onnxruntime", "--agent-token", created["token"])
    fleet.wait_agents_connected(["tok"])
    tok_id = _device(fleet, "tok").agent_id
    [listed] = [t for t in cli("agents", "token", "list") if t["token_id"] == created["token_id"]]
    assert listed["agent_id"] == tok_id and "token" not in listed
    # The token opens only its own agent's id.
    _assert_connect_denied(fleet, created["token"], "not-tok")
    revoked = cli("agents", "token", "revoke", created["token_id"])
    assert revoked["state"] == "revoked"
    wait_until(lambda: not _device(fleet, "tok").connected, 15, "the revoked agent to be disconnected")
    log = fleet.root / "logs" / "tok.log"
    # It tries again with the revoked token (reconnecting at once, as after any lost stream) and is refused:
    wait_until(lambda: "controller refused this agent" in log.read_text(), 30, "the agent's next attempt refused")
    assert not _device(fleet, "tok").connected
    fleet.stop_agent("tok")
    forgotten = cli("devices", "forget", tok_id)
    assert forgotten["agent_id"] == tok_id
    assert all(d.agent_id != tok_id for d in fleet.client().list_devices())


def test_a_second_agent_on_the_same_data_dir_is_refused_clearly(trust_fleet):
    """Fails if two agents sharing a data dir (one identity) both run and knock each other off forever."""
    fleet, _ = trust_fleet
    out = subprocess.run([sys.executable, "-m", "fleetmeter.agent.cli", "run", "--controller", fleet.address,
                          "--data-dir", str(fleet.root / "agents" / "real"), "--runtime", "onnxruntime"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "FLEETMETER_AGENT_TOKEN": fleet.agent_token})
    assert out.returncode == 2 and "in use by another agent" in out.stderr, out.stderr[-2000:]
    assert _device(fleet, "real").connected
