"""The durable store's contract (controller/store.py), on a real SQLite file under tmp_path.

Each test says what would be wrong in the store if it failed.
"""
from __future__ import annotations

import sqlite3

import pytest

from fleetmeter.controller.store import SCHEMA_VERSION, Store

SHA_A = "a1" * 32
PID = "test-4c-abcdef/onnxruntime-1.17/default/t1"


def _platform(pid: str = PID) -> dict:
    return {"platform_id": pid, "hardware": "Test · 4 cores", "hardware_json": {"cpu_model": "Test", "cores": 4},
            "runtime": "onnxruntime", "runtime_version": "1.17", "provider": "default", "threads": 1,
            "labels": {}}


def _model(sha: str = SHA_A, name: str = "mobilenet", fmt: str = "onnx") -> dict:
    return {"sha256": sha, "name": name, "format": fmt, "size_bytes": 1234, "info": {"ops": 3}}


def _jobs(sweep_id: str, n: int, sha: str = SHA_A, pid: str = PID) -> list[dict]:
    return [{"job_id": f"{sweep_id}-{i}", "seq": i, "model_sha256": sha, "platform_id": pid, "repeat_index": 0}
            for i in range(n)]


def _sweep(sweep_id: str = "sw-1", priority: int = 0) -> dict:
    return {"sweep_id": sweep_id, "name": sweep_id, "spec": {"models": [SHA_A]}, "platform_ids": [PID],
            "priority": priority}


def _record(mid: str, job_id: str, *, failure_kind: str = "", median_ms: float = 1.5) -> dict:
    return {"measurement_id": mid, "job_id": job_id, "agent_id": "agent-1", "platform_id": PID,
            "model_sha256": SHA_A, "latency_ms": None if failure_kind else {"median": median_ms},
            "samples_ms": [] if failure_kind else [median_ms, median_ms + 0.1], "failure_kind": failure_kind,
            "failure_message": "out of memory" if failure_kind else ""}


@pytest.fixture
def seeded(store):
    """A store with one platform, one model and one sweep of two pending jobs (sw-1-0, sw-1-1)."""
    store.upsert_platform(_platform(), now=1.0)
    store.add_model(_model(), now=1.0)
    store.create_sweep(_sweep(), _jobs("sw-1", 2), now=2.0)
    return store


def _raw(db_path, sql: str, args=()) -> list[tuple]:
    """Read the file with an independent connection: what is on disk, not what the Store object believes."""
    con = sqlite3.connect(str(db_path))
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


# ---------------------------------------------------------------- measurements

def test_measurement_recorded_twice_is_stored_once(seeded, db_path):
    """Fails if a re-sent result (agent reconnect) is stored again or settles its job twice."""
    assert seeded.lease_job("sw-1-0", "agent-1", expires_unix=100.0)
    rec = _record("m-1", "sw-1-0")
    assert seeded.record_measurement(rec, now=10.0) is True
    job_after_first = seeded.get_job("sw-1-0")
    assert seeded.record_measurement(dict(rec, latency_ms={"median": 99.0}), now=20.0) is False
    assert seeded.count_measurements() == 1
    assert seeded.get_job("sw-1-0") == job_after_first  # nothing changed, not even updated_unix
    assert job_after_first["state"] == "done" and job_after_first["measurement_id"] == "m-1"
    assert seeded.sweep_counts("sw-1") == {"pending": 1, "leased": 0, "done": 1, "failed": 0, "cancelled": 0}
    assert [r["latency_ms"]["median"] for r in seeded.list_measurements(sweep_id="sw-1")] == [1.5]
    assert _raw(db_path, "SELECT COUNT(*) FROM measurements") == [(1,)]


def test_late_second_measurement_keeps_first_result_and_is_kept_unlinked(seeded, db_path):
    """Fails if a second agent's result for an already-done job overwrites the first result,
    or if the late raw data is thrown away, or if it stays linked to the job."""
    assert seeded.record_measurement(_record("m-first", "sw-1-0", median_ms=1.0), now=10.0)
    assert seeded.record_measurement(_record("m-late", "sw-1-0", median_ms=7.0), now=11.0) is True
    job = seeded.get_job("sw-1-0")
    assert job["state"] == "done" and job["measurement_id"] == "m-first"
    assert seeded.count_measurements() == 2
    links = dict(_raw(db_path, "SELECT measurement_id, job_id FROM measurements"))
    assert links == {"m-first": "sw-1-0", "m-late": None}
    # still findable by sweep (the raw data is kept and attributable)
    assert {r["measurement_id"] for r in seeded.list_measurements(sweep_id="sw-1")} == {"m-first", "m-late"}


def test_failure_measurement_fails_the_job_with_its_error(seeded):
    """Fails if a measurement with a failure kind is counted as done or loses its message."""
    assert seeded.lease_job("sw-1-1", "agent-1", expires_unix=100.0)
    assert seeded.record_measurement(_record("m-f", "sw-1-1", failure_kind="oom"), now=10.0)
    job = seeded.get_job("sw-1-1")
    assert job["state"] == "failed"
    assert job["error"] == "oom: out of memory"
    assert job["lease_expires_unix"] is None
    assert seeded.sweep_counts("sw-1")["failed"] == 1


def test_result_for_a_requeued_job_still_settles_it(seeded):
    """Fails if a result that arrives after its lease expired (job back to pending) is not used:
    the job would be measured again for nothing."""
    assert seeded.lease_job("sw-1-0", "agent-1", expires_unix=100.0)
    assert seeded.release_job("sw-1-0", "lease expired", max_attempts=3) == "pending"
    assert seeded.record_measurement(_record("m-1", "sw-1-0"), now=10.0)
    assert seeded.get_job("sw-1-0")["state"] == "done"


# ---------------------------------------------------------------- sweeps

def test_create_sweep_is_atomic_when_a_job_insert_fails(seeded):
    """Fails if a sweep whose 2nd job violates a foreign key (unknown model) leaves the sweep row or
    its first job behind, or leaves the connection inside a dead transaction."""
    jobs = _jobs("sw-bad", 1) + [{"job_id": "sw-bad-1", "seq": 1, "model_sha256": "f" * 64, "platform_id": PID,
                                  "repeat_index": 0}]
    with pytest.raises(sqlite3.IntegrityError):
        seeded.create_sweep(_sweep("sw-bad"), jobs)
    assert seeded.get_sweep("sw-bad") is None
    assert seeded.get_job("sw-bad-0") is None
    assert seeded.sweep_counts("sw-bad") == {"pending": 0, "leased": 0, "done": 0, "failed": 0, "cancelled": 0}
    # the store is still usable: the failed transaction was rolled back, not left open
    seeded.create_sweep(_sweep("sw-good"), _jobs("sw-good", 1))
    assert seeded.get_sweep("sw-good") is not None


def test_create_sweep_with_unknown_platform_leaves_nothing(seeded):
    """Fails if the platform foreign key is not enforced (PRAGMA foreign_keys off)."""
    with pytest.raises(sqlite3.IntegrityError):
        seeded.create_sweep(_sweep("sw-x"), _jobs("sw-x", 1, pid="no/such/platform/t1"))
    assert seeded.get_sweep("sw-x") is None


def test_next_pending_job_orders_by_priority_then_age_then_seq(seeded):
    """Fails if a high-priority sweep does not jump the queue, or jobs of one sweep run out of order."""
    assert seeded.next_pending_job([PID])["job_id"] == "sw-1-0"
    seeded.create_sweep(_sweep("sw-urgent", priority=5), _jobs("sw-urgent", 2), now=3.0)
    assert seeded.next_pending_job([PID])["job_id"] == "sw-urgent-0"
    assert seeded.next_pending_job([]) is None
    assert seeded.next_pending_job(["other/platform"]) is None


# ---------------------------------------------------------------- durability

def test_reopened_store_keeps_everything(seeded, db_path):
    """Fails if a committed write is lost when the controller restarts (new Store on the same file)."""
    seeded.upsert_device("agent-1", name="board", host_id="h1", info={"arch": "x86_64"}, labels={"rack": "3"},
                         platform_ids=[PID], now=5.0)
    assert seeded.lease_job("sw-1-0", "agent-1", expires_unix=500.0)
    assert seeded.record_measurement(_record("m-1", "sw-1-1"), now=6.0)
    seeded.close()

    again = Store(db_path)
    try:
        assert again.get_model(SHA_A)["info"] == {"ops": 3}
        assert again.get_platform(PID)["runtime"] == "onnxruntime"
        assert again.get_sweep("sw-1")["spec"] == {"models": [SHA_A]}
        leased = again.get_job("sw-1-0")
        assert (leased["state"], leased["agent_id"], leased["lease_expires_unix"]) == ("leased", "agent-1", 500.0)
        assert again.get_job("sw-1-1")["state"] == "done"
        [dev] = again.list_devices()
        assert (dev["agent_id"], dev["host_id"], dev["labels"]) == ("agent-1", "h1", {"rack": "3"})
        [rec] = again.list_measurements()
        assert rec["samples_ms"] == [1.5, 1.6]  # raw samples kept, not only the summary
        assert again.record_measurement(_record("m-1", "sw-1-1")) is False  # idempotency survives restarts
    finally:
        again.close()


def test_schema_version_mismatch_raises(db_path):
    """Fails if a store written by another schema version is silently opened (and then misread)."""
    Store(db_path).close()
    con = sqlite3.connect(str(db_path))
    con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(RuntimeError, match="schema version"):
        Store(db_path)


# ---------------------------------------------------------------- models

@pytest.fixture
def models(store):
    store.add_model(_model("abcdef" + "1" * 58, "resnet"), now=1.0)
    store.add_model(_model("abcdef" + "2" * 58, "resnet-v2"), now=2.0)
    store.add_model(_model("123456" + "0" * 58, "tiny"), now=3.0)
    return store


def test_add_model_twice_reports_existing(store):
    """Fails if re-uploading the same bytes is not recognised (or changes the stored row)."""
    assert store.add_model(_model(name="first"), now=1.0) is True
    assert store.add_model(_model(name="second"), now=2.0) is False
    assert store.get_model(SHA_A)["name"] == "first"


def test_find_models_by_name(models):
    """Fails if an exact name does not find its model."""
    assert [m["name"] for m in models.find_models("tiny")] == ["tiny"]


def test_find_models_by_sha_prefix(models):
    """Fails if a unique prefix of >= 6 hex digits (any case) does not resolve, or a shorter one does."""
    assert [m["name"] for m in models.find_models("123456")] == ["tiny"]
    assert [m["name"] for m in models.find_models("ABCDEF2")] == ["resnet-v2"]
    assert [m["name"] for m in models.find_models("abcdef" + "1" * 58)] == ["resnet"]
    assert models.find_models("12345") == []  # too short for a prefix, and no model is named so
    assert models.find_models("nothing-like-this") == []


def test_find_models_ambiguous_prefix_returns_all_candidates(models):
    """Fails if an ambiguous prefix silently picks one model (the caller must be able to refuse it)."""
    assert sorted(m["name"] for m in models.find_models("abcdef")) == ["resnet", "resnet-v2"]


def test_find_models_name_is_not_a_like_pattern(models):
    """Would fail (the bug this pins) if ``sha256 LIKE 'abcde_%'`` matches both 'abcdef...' models: a model *named*
    'abcde_' becomes ambiguous, and '%%%%%%' matches every model."""
    models.add_model(_model("9" * 64, "abcde_"), now=4.0)
    assert [m["name"] for m in models.find_models("abcde_")] == ["abcde_"]
    assert models.find_models("%%%%%%") == []


# ---------------------------------------------------------------- leases

def test_lease_only_a_pending_job(seeded):
    """Fails if a job can be leased twice (two agents measuring the same job)."""
    assert seeded.lease_job("sw-1-0", "agent-1", expires_unix=100.0) is True
    assert seeded.lease_job("sw-1-0", "agent-2", expires_unix=100.0) is False
    assert seeded.get_job("sw-1-0")["agent_id"] == "agent-1"
    assert seeded.extend_lease("sw-1-0", "agent-2", 500.0) is False  # not agent-2's lease
    assert seeded.extend_lease("sw-1-0", "agent-1", 500.0) is True
    assert seeded.get_job("sw-1-0")["lease_expires_unix"] == 500.0


def test_release_job_returns_to_pending_then_fails_after_max_attempts(seeded):
    """Fails if a released job is not re-queued (attempt budget left) or is retried forever."""
    assert seeded.lease_job("sw-1-0", "agent-1", expires_unix=100.0)
    assert seeded.release_job("sw-1-0", "lease expired", max_attempts=2) == "pending"
    job = seeded.get_job("sw-1-0")
    assert (job["state"], job["agent_id"], job["lease_expires_unix"], job["attempts"]) == ("pending", None, None, 1)
    assert seeded.lease_job("sw-1-0", "agent-2", expires_unix=200.0)
    assert seeded.release_job("sw-1-0", "lease expired", max_attempts=2) == "failed"
    job = seeded.get_job("sw-1-0")
    assert job["state"] == "failed" and job["attempts"] == 2
    assert job["error"] == "lease expired (after 2 attempts)"
    # releasing something not leased changes nothing
    assert seeded.release_job("sw-1-0", "again", max_attempts=2) == "failed"
    assert seeded.release_job("sw-1-1", "not leased", max_attempts=2) == "pending"
    assert seeded.get_job("sw-1-1")["attempts"] == 0
    assert seeded.release_job("no-such-job", "x", max_attempts=2) == "missing"


def test_transaction_groups_writes_and_rolls_back_as_one(store):
    """Fails if a batch (the fleet's assign / record_results) can commit half of its writes."""
    model = {"sha256": "ab" * 32, "name": "m", "format": "onnx", "size_bytes": 1}
    other = {"sha256": "cd" * 32, "name": "n", "format": "onnx", "size_bytes": 1}
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_model(model)
            store.add_model(other)
            raise RuntimeError("crash in the middle of a batch")
    assert store.list_models() == []
    with store.transaction():
        store.add_model(model)
        store.add_model(other)
    assert len(store.list_models()) == 2


def test_a_job_that_failed_on_an_agent_is_skipped_for_that_agent_only(seeded):
    """Fails if a job goes back to the agent it failed on, or if agents whose ids merely look alike are kept
    from it too (a LIKE over the JSON list took ``_`` and ``%`` in an id as wildcards)."""
    assert seeded.lease_job("sw-1-0", "a", expires_unix=100.0, now=3.0)
    assert seeded.record_measurement(_record("m-f", "sw-1-0", failure_kind="unsupported_op"), now=4.0, retry=True,
                                     avoid_agent=True)
    assert seeded.get_job("sw-1-0")["state"] == "pending"
    assert seeded.next_pending_job([PID], "agent-1")["job_id"] == "sw-1-1", "the record's agent failed on sw-1-0"
    for lookalike in ("_______", "%", "agent-%", 'agent-1"'):
        assert seeded.next_pending_job([PID], lookalike)["job_id"] == "sw-1-0", lookalike
    assert seeded.next_pending_job([PID])["job_id"] == "sw-1-0"  # no agent: no exclusion


def test_holders_are_every_agent_that_ever_leased_the_job(seeded):
    """Fails if an agent whose lease expired is forgotten as a holder (its late result would be refused as
    forged), or if an agent that was refused the lease counts as one."""
    assert not seeded.held_by("sw-1-0", "agent-1")
    assert seeded.lease_job("sw-1-0", "agent-1", expires_unix=100.0, now=3.0)
    assert not seeded.lease_job("sw-1-0", "agent-2", expires_unix=100.0, now=3.0)
    assert not seeded.held_by("sw-1-0", "agent-2")
    seeded.release_job("sw-1-0", "lease expired", max_attempts=3, now=4.0)
    assert seeded.lease_job("sw-1-0", "agent-2", expires_unix=200.0, now=5.0)
    seeded.release_job("sw-1-0", "lease expired", max_attempts=3, now=6.0)
    assert seeded.lease_job("sw-1-0", "agent-2", expires_unix=300.0, now=7.0, new_attempt=False)  # re-held
    assert seeded.held_by("sw-1-0", "agent-1") and seeded.held_by("sw-1-0", "agent-2")
    assert not seeded.held_by("sw-1-1", "agent-1")
    assert _raw(seeded.path, "SELECT agent_id FROM job_holders ORDER BY agent_id") == [("agent-1",), ("agent-2",)]


def test_writes_are_stamped_with_the_callers_now(seeded):
    """Fails if a write that takes ``now`` stamps the wall clock instead (the fleet's injected clock and the
    store's times would disagree: ETAs and ages computed from both would be off by the difference)."""
    assert seeded.lease_job("sw-1-0", "agent-1", expires_unix=100.0, now=10.0)
    seeded.release_job("sw-1-0", "lease expired", max_attempts=1, now=11.0)
    assert seeded.get_job("sw-1-0")["updated_unix"] == 11.0
    assert seeded.fail_pending("sw-1", SHA_A, PID, "cannot run", now=12.0) == 1
    assert seeded.get_job("sw-1-1")["updated_unix"] == 12.0
    seeded.create_sweep(_sweep("sw-2"), _jobs("sw-2", 1), now=13.0)
    seeded.set_sweep_state("sw-2", "cancelled", now=14.0)
    assert seeded.get_job("sw-2-0")["updated_unix"] == 14.0
    seeded.upsert_device("agent-1", name="d", host_id="h", info={}, labels={}, platform_ids=[PID], now=15.0)
    seeded.touch_device("agent-1", now=16.0)
    assert seeded.list_devices()[0]["last_seen_unix"] == 16.0
