"""Trust rules of the fleet (controller/fleet.py, identity.py), driven directly with a fake clock.

Who an agent is, which results it may send, and what a squatter can hold. Each test says what an
attacker holding a valid agent token could do if it failed. The same attacks over real gRPC are in
tests/integration/test_trust_e2e.py.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from fleetmeter.controller.fleet import Fleet, FleetConfig
from fleetmeter.controller.identity import AgentDoor, RefusalLog, new_agent_token, sha256_text
from fleetmeter.controller.store import SCHEMA_VERSION, Store
from fleetmeter.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unauthenticated

from test_fleet import (  # noqa: E402 - tests/unit is on sys.path
    NO_SAMPLE, TFLITE, fleet_with_models, hello, result, take)

CONFIG = FleetConfig(lease_timeout_s=30.0, max_attempts=3, heartbeat_interval_s=2.0, max_job_s=120.0)


@pytest.fixture
def fleet(store, clock):
    return fleet_with_models(store, clock, CONFIG)


def _job(fleet: Fleet, job_id: str) -> dict:
    return fleet.store.get_job(job_id)


def _stored(fleet: Fleet, measurement_id: str) -> bool:
    return any(m["measurement_id"] == measurement_id for m in fleet.store.list_measurements())


# ------------------------------------------------------------------ forged results

def test_result_for_a_job_leased_to_another_agent_is_refused_and_stores_nothing(fleet):
    """Fails if agent b can finish agent a's job (the issue: done under the attacker's id, 0.001 ms)."""
    fleet.register_agent(hello("a", "h1"))
    fleet.register_agent(hello("b", "h2"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2})
    job = take(fleet, "a")
    forged = result(job, "b", mid="forged")
    forged["latency_ms"]["median"] = 0.001
    assert fleet.record_results([forged]) == [f"rejected: job {job['job_id']} was never leased to agent b"]
    assert not _stored(fleet, "forged")
    row = _job(fleet, job["job_id"])
    assert (row["state"], row["agent_id"]) == ("leased", "a")
    assert fleet.record_results([result(job, "a")]) == ["stored"]
    assert _job(fleet, job["job_id"])["measurement_id"] == f"m-{job['job_id']}"


def test_result_for_a_pending_job_never_assigned_is_refused(fleet):
    """Fails if a result settles a job nobody was given (the issue: done with 0 attempts)."""
    fleet.register_agent(hello("a", "h1"))
    sweep = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})
    job = fleet.store.next_pending_job(sweep["platform_ids"])
    with pytest.raises(PermissionDenied, match="never leased"):
        fleet.record_result(result(job, "a"))
    row = _job(fleet, job["job_id"])
    assert (row["state"], row["attempts"]) == ("pending", 0)
    assert fleet.store.count_measurements() == 0


@pytest.mark.parametrize("job_id", ["", "../../x", "sw-000000000000-000000"])
def test_result_for_no_or_an_unknown_job_is_refused(fleet, job_id):
    """Fails if a result without a (real) job is stored: it would feed training with made-up rows."""
    fleet.register_agent(hello("a", "h1"))
    record = result({"job_id": job_id, "sweep_id": "", "platform_id": "../../x", "model_sha256": "f" * 64}, "a")
    with pytest.raises(InvalidArgument):
        fleet.record_result(record)
    assert fleet.store.count_measurements() == 0


def test_sweep_platform_model_and_kind_come_from_the_lease_not_the_message(fleet):
    """Fails if the message can file a reading under another sweep, platform or model."""
    fleet.register_agent(hello("a", "h1"))
    sweeps = [fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "name": n})["sweep_id"] for n in "xy"]
    job = take(fleet, "a")
    [other] = [s for s in sweeps if s != job["sweep_id"]]
    record = {**result(job, "a"), "sweep_id": other, "platform_id": "../../x",
              "model_sha256": TFLITE["sha256"], "runtime": "forged", "threads": 64, "job_kind": "reference"}
    assert fleet.record_result(record) is True
    [stored] = fleet.store.list_measurements()
    assert (stored["sweep_id"], stored["platform_id"], stored["model_sha256"]) == \
        (job["sweep_id"], job["platform_id"], job["model_sha256"])
    assert (stored["runtime"], stored["threads"], stored["job_kind"]) == ("onnxruntime", 1, "")
    assert fleet.list_measurements(sweep_id=other) == []


def test_late_result_of_a_former_holder_is_kept_unlinked_and_settles_nothing(fleet, clock):
    """Fails if an agent whose lease expired can settle the job now leased to another agent."""
    fleet.register_agent(hello("a", "h1"))
    fleet.register_agent(hello("b", "h2"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})
    job = take(fleet, "a")
    clock.advance(31)
    fleet.expire_leases()
    assert take(fleet, "b")["job_id"] == job["job_id"]
    assert fleet.record_result(result(job, "a", mid="late")) is True  # raw data is kept ...
    row = _job(fleet, job["job_id"])
    assert (row["state"], row["agent_id"], row["measurement_id"]) == ("leased", "b", None)  # ... unlinked
    assert fleet.record_result(result(job, "b", mid="holder")) is True
    assert _job(fleet, job["job_id"])["measurement_id"] == "holder"


def test_invalid_reading_is_refused_by_the_fleet(fleet):
    """Fails if a NaN or negative latency is stored (results --format json would print NaN)."""
    fleet.register_agent(hello("a", "h1"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})
    job = take(fleet, "a")
    bad = result(job, "a")
    bad["latency_ms"]["median"] = float("nan")
    [outcome] = fleet.record_results([bad])
    assert outcome.startswith("rejected: ") and "latency_ms.median" in outcome
    assert fleet.store.count_measurements() == 0 and _job(fleet, job["job_id"])["state"] == "leased"


def test_record_results_never_acknowledges_what_was_not_stored(fleet, monkeypatch):
    """Fails if a record that failed to store is reported stored or a duplicate (the agent would delete it)."""
    fleet.register_agent(hello("a", "h1"))
    fleet.register_agent(hello("b", "h2"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2})
    ja, jb = take(fleet, "a"), take(fleet, "b")
    real = fleet.store.record_measurement

    def flaky(record, **kw):
        if record["agent_id"] == "b":
            raise sqlite3.OperationalError("disk I/O error")
        return real(record, **kw)

    monkeypatch.setattr(fleet.store, "record_measurement", flaky)
    assert fleet.record_results([result(ja, "a"), result(jb, "b")]) == ["stored", "error"]


# ------------------------------------------------------------------ identity

def test_hello_for_an_enrolled_id_with_another_secret_is_refused_and_changes_nothing(fleet):
    """Fails if a token holder can take over another agent's id (kick it off, overwrite its device)."""
    fleet.register_agent(hello("a", "h1"))
    before = fleet.list_devices()
    with pytest.raises(PermissionDenied, match="enrolled with another credential"):
        fleet.register_agent({**hello("a", "evil-host"), "agent_secret": "guess", "name": "evil"})
    assert fleet.list_devices() == before
    assert fleet.agents["a"].host_id == "h1"
    fleet.register_agent(hello("a", "h1"))  # the real one reconnects as before


def test_hello_without_secret_is_unauthenticated(fleet):
    with pytest.raises(Unauthenticated, match="agent_secret"):
        fleet.register_agent({**hello("a", "h1"), "agent_secret": ""})


def test_forget_device_lets_the_id_enrol_again_and_releases_its_leases(fleet):
    """Fails if a dead device cannot be removed, or its open job stays leased to it."""
    fleet.register_agent(hello("a", "h1"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})
    job = take(fleet, "a")
    with pytest.raises(FailedPrecondition, match="connected"):
        fleet.forget_device("a")
    fleet.agent_disconnected("a")
    assert fleet.forget_device("a") == {"agent_id": "a", "released_jobs": 1}
    assert _job(fleet, job["job_id"])["state"] == "pending"
    assert [d["agent_id"] for d in fleet.list_devices()] == []
    fleet.register_agent({**hello("a", "h1"), "agent_secret": "reinstalled"})  # enrols anew ...
    with pytest.raises(PermissionDenied, match="never leased"):  # ... as a new agent: not the old job's holder
        fleet.record_result(result(job, "a"))
    with pytest.raises(NotFound):
        fleet.forget_device("nobody")


def test_per_agent_token_binds_to_its_first_agent_and_revocation_refuses_it(fleet):
    """Fails if one agent's token opens another id, or a revoked token still connects."""
    created = fleet.create_agent_token("lab-1")
    auth = {"token_sha256": sha256_text(created["secret"])}
    assert created["secret"].startswith("fma_") and "token_sha256" not in created["token"]
    assert fleet.register_agent(hello("a", "h1"), auth)["token_id"] == created["token"]["token_id"]
    [listed] = fleet.list_agent_tokens()
    assert listed["agent_id"] == "a" and listed["last_used_unix"] > 0 and "token_sha256" not in listed
    with pytest.raises(PermissionDenied, match="belongs to agent a"):
        fleet.register_agent(hello("b", "h2"), auth)
    # a's id now needs a's token: the shared token (no auth) cannot claim it, even with a's secret
    with pytest.raises(PermissionDenied, match="own agent token"):
        fleet.register_agent(hello("a", "h1"))
    fleet.revoke_agent_token(created["token"]["token_id"])
    with pytest.raises(Unauthenticated, match="revoked"):
        fleet.register_agent(hello("a", "h1"), auth)
    with pytest.raises(Unauthenticated):
        fleet.check_agent_token(auth["token_sha256"])
    with pytest.raises(NotFound):
        fleet.revoke_agent_token("at-nope")


def test_token_created_for_an_agent_id_refuses_that_id_without_it(fleet):
    """Fails if the shared token can enrol an id the operator reserved for a per-agent token."""
    created = fleet.create_agent_token("pixel", agent_id="pixel-7")
    assert created["token"]["agent_id"] == "pixel-7"
    with pytest.raises(PermissionDenied, match="own agent token"):
        fleet.register_agent(hello("pixel-7", "h9"))
    fleet.register_agent(hello("pixel-7", "h9"), {"token_sha256": sha256_text(created["secret"])})


def test_agent_door_kinds_and_open_state():
    door = AgentDoor("shared-secret")
    assert [door.kind(t) for t in ("shared-secret", "fma_x_y", None, "other")] == \
        ["shared", "agent", "missing", "unknown"]
    open_door = AgentDoor(None)
    assert open_door.open and open_door.kind(None) == "none"
    open_door.has_tokens = True  # a per-agent token exists: the door is no longer open
    assert not open_door.open and open_door.kind(None) == "missing" and open_door.kind("x") == "unknown"
    token_id, token = new_agent_token()
    assert token.startswith("fma_" + token_id[3:]) and len(token) > 40


def test_refusal_log_is_rate_limited_per_peer_and_never_logs_the_token(caplog):
    t = [0.0]
    refusals = RefusalLog(period_s=10.0, clock=lambda: t[0])
    logged = [refusals.note("ipv4:10.0.0.1:5555", "Connect", "wrong agent token") for _ in range(50)]
    assert logged == [True] + [False] * 49
    assert refusals.note("ipv4:10.0.0.2:1", "Connect", "wrong agent token") is True  # another peer
    t[0] = 11.0
    assert refusals.note("ipv4:10.0.0.1:6666", "Connect", "wrong agent token") is True
    assert "and 49 more" in caplog.text


# ------------------------------------------------------------------ squatting and recovery

def test_a_squatter_holding_a_job_past_max_job_s_loses_it_and_is_suspended(fleet, clock):
    """Fails if an agent claiming a real host_id can keep the host busy forever by heartbeating."""
    fleet.register_agent(hello("real", "host-x"))
    fleet.register_agent(hello("squat", "host-x", labels={"squat": "1"}))  # a platform of its own
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 3})
    clock.advance(1)
    fleet.register_agent(hello("real", "host-x"))  # the squatter is now the one idle longest
    job = take(fleet, "squat")
    assert job is not None and take(fleet, "real") is None  # the host is busy
    for _ in range(200):  # heartbeats every 2 s: the lease is never extended past max_job_s
        clock.advance(2)
        fleet.heartbeats({"squat": job["job_id"]})
        if fleet.expire_leases():
            break
    assert clock() - 1_000_001 <= CONFIG.max_job_s + CONFIG.lease_timeout_s
    row = _job(fleet, job["job_id"])
    assert row["state"] == "pending" and "max_job_s" in row["error"]
    squat = {d["agent_id"]: d for d in fleet.list_devices()}["squat"]
    assert squat["state"] == "suspended" and "max_job_s" in squat["suspended_reason"]
    assert take(fleet, "squat") is None
    assert take(fleet, "real") is not None  # the host works again


def test_heartbeats_name_agents_the_fleet_does_not_know(fleet):
    """Fails if a restarted fleet actor cannot tell the gateway whom to register again."""
    fleet.register_agent(hello("a", "h1"))
    assert fleet.heartbeats({"a": "", "ghost": ""}) == ["ghost"]


def test_busy_state_is_the_stores_lease(fleet):
    """Fails if who-holds-what is kept apart from the store's leases (three copies drifted before)."""
    fleet.register_agent(hello("a", "h1"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2})
    job = take(fleet, "a")
    assert fleet.current_job("a") == job["job_id"] and fleet.assign(["a"]) == []
    fleet.store.release_job(job["job_id"], "test", 3)  # the store says it is free: so is the agent
    assert fleet.current_job("a") is None
    assert [j["agent_id"] for j in fleet.assign(["a"])] == ["a"]


# ------------------------------------------------------------------ store upgrade

def _old_store(path, version: int) -> sqlite3.Connection:
    """A store file as version ``version`` left it: made by today's Store, then taken back (v5's device_platforms
    table and reading columns dropped; v4's job_holders and job_failures tables dropped, the JSON columns they
    replaced put back; for v2 also the identity and token tables and ``holders_json`` gone). Returns an open connection to fill in jobs; commit and close it."""
    Store(path).close()
    db = sqlite3.connect(str(path))
    db.executescript("DROP TABLE device_platforms;" + "".join(
        f" ALTER TABLE measurements DROP COLUMN {c};" for c in ("job_kind", "session_spread", "flags_json",
                                                                "finished_at_unix")))
    db.executescript("DROP TABLE job_holders; DROP TABLE job_failures;"
                     " ALTER TABLE jobs ADD COLUMN failed_agents_json TEXT NOT NULL DEFAULT '[]';")
    if version == 2:
        db.executescript("DROP TABLE agent_identities; DROP TABLE agent_tokens;")
    else:
        db.execute("ALTER TABLE jobs ADD COLUMN holders_json TEXT NOT NULL DEFAULT '[]'")
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
    db.execute("INSERT INTO sweeps(sweep_id, name, spec_json, platform_ids_json, priority, created_unix)"
               " VALUES ('s', 's', '{}', '[]', 0, 0)")
    return db


def _add_job(db: sqlite3.Connection, job_id: str, seq: int, state: str, agent_id, **json_columns) -> None:
    columns = ", ".join(json_columns)
    db.execute(f"INSERT INTO jobs(job_id, sweep_id, seq, model_sha256, platform_id, repeat_index, state, agent_id,"
               f" updated_unix{', ' + columns if columns else ''}) VALUES (?, 's', ?, 'm', 'p', 0, ?, ?, 0"
               f"{', ?' * len(json_columns)})", (job_id, seq, state, agent_id, *map(json.dumps, json_columns.values())))


def _version(s: Store) -> str:
    return s._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]


def test_a_version_2_store_is_upgraded_in_place(tmp_path):
    """Fails if an existing deployment's store cannot be opened by this version (or loses its holders or the
    agents its jobs failed on)."""
    path = tmp_path / "old.sqlite"
    db = _old_store(path, 2)
    _add_job(db, "j", 0, "leased", "a")
    _add_job(db, "k", 1, "pending", None, failed_agents_json=["x"])
    db.commit()
    db.close()
    s = Store(path)
    try:
        assert s.held_by("j", "a") and not s.held_by("j", "b")
        assert s.next_pending_job(["p"], "x") is None and s.next_pending_job(["p"], "y")["job_id"] == "k"
        assert s.identity_secret("a") is None
        assert _version(s) == str(SCHEMA_VERSION)
    finally:
        s.close()


def test_a_version_3_store_moves_holders_and_failures_into_tables(tmp_path):
    """Fails if upgrading a v3 store loses who held a job (their results would be refused as forged) or the
    agents a job failed on (it would go back to them), or if the upgraded store is read from the old JSON."""
    path = tmp_path / "v3.sqlite"
    db = _old_store(path, 3)
    _add_job(db, "j", 0, "leased", "b", holders_json=["a", "b"])
    _add_job(db, "k", 1, "pending", None, holders_json=["c"], failed_agents_json=["x", "y"])
    db.commit()
    db.close()
    s = Store(path)
    try:
        assert _version(s) == str(SCHEMA_VERSION) == "5"
        # the retired JSON columns stay in the file but are never read again: empty them, nothing changes
        s._db.execute("UPDATE jobs SET holders_json='[\"x\"]', failed_agents_json='[]'")
        assert "holders_json" not in s.get_job("j") and "failed_agents_json" not in s.get_job("k")
        assert [s.held_by("j", a) for a in "abcx"] == [True, True, False, False] and s.held_by("k", "c")
        assert s.next_pending_job(["p"], "x") is None and s.next_pending_job(["p"], "y") is None
        assert s.next_pending_job(["p"], "z")["job_id"] == "k"
        assert s.lease_job("k", "z", expires_unix=10.0, now=1.0) and s.held_by("k", "z")
    finally:
        s.close()
    again = Store(path)  # opening an upgraded store again changes nothing
    try:
        assert _version(again) == "5" and again.held_by("k", "z")
    finally:
        again.close()


def test_a_store_file_written_by_version_4_opens_upgraded(tmp_path):
    """Fails if a real store file of the previous release (tests/unit/data/store_v4.sqlite, written by the v4
    Store itself: two devices, two platforms, a sweep of three jobs, two readings, one a repeat sample flagged
    unstable) cannot be opened, or loses a device's platforms or a reading's quality figures on the way to v5."""
    path = tmp_path / "v4.sqlite"
    shutil.copyfile(Path(__file__).parent / "data" / "store_v4.sqlite", path)
    s = Store(path)
    try:
        assert _version(s) == str(SCHEMA_VERSION) == "5"
        assert s.devices_on_platform("cpu-ort-1t") == {"agent-a", "agent-b"}
        assert s.devices_on_platform("cpu-litert-1t") == {"agent-a"}
        assert s.devices_per_platform() == {"cpu-ort-1t": 2, "cpu-litert-1t": 1}
        readings = s.platform_readings("cpu-ort-1t")
        assert [(r["job_kind"], r["session_spread"], r["flags"], r["finished_at_unix"]) for r in readings] == [
            ("", 0.01, [], 10.0), ("repeat_sample", 0.02, ["unstable"], 11.0)]
        assert [m["measurement_id"] for m in s.list_measurements(sweep_id="sw-1")] == ["m-0", "m-1"]
        assert s.sweep_counts("sw-1")["done"] == 2 and s.get_job("sw-1-000002")["state"] == "pending"
        assert s.forget_device("agent-b") and s.devices_on_platform("cpu-ort-1t") == {"agent-a"}
    finally:
        s.close()
