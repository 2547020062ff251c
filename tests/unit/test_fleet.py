"""The fleet registry and scheduler (controller/fleet.py), driven directly with a fake clock.

Agents say hello with the dict shape of ``controller/convert.py: hello_to_dict``.
Each test says what would be wrong in the scheduler if it failed.
"""
from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Optional

import pytest

from fleetmeter.controller.convert import assignment_to_proto
from fleetmeter.controller.fleet import Fleet, FleetConfig
from fleetmeter.controller.store import Store
from fleetmeter.errors import InvalidArgument, NotFound

LEASE_S = 30.0
CONFIG = FleetConfig(lease_timeout_s=LEASE_S, max_attempts=3, heartbeat_interval_s=2.0)
HARDWARE = {"cpu_model": "Test CPU", "cores": 4, "arch": "x86_64", "memory_gib": 8}
VERSION = {"onnxruntime": "1.17.0", "litert": "1.2.0"}

# The scheduling tests count jobs exactly: their sweeps leave out the repeat-sample round (its own tests are in
# test_readings_quality.py).
NO_SAMPLE = {"repeat_sample": -1}

ONNX = {"sha256": "0a" * 32, "name": "net-onnx", "format": "onnx", "size_bytes": 100}
TFLITE = {"sha256": "1b" * 32, "name": "net-tflite", "format": "tflite", "size_bytes": 200}


def hello(agent_id: str, host_id: str = "host-1", *, offers=(("onnxruntime", 1),), labels=None,
          current: str = "", spooled=(), hardware=None) -> dict:
    return {
        "agent_id": agent_id, "name": agent_id,
        "device": {"host_id": host_id, "hardware": dict(hardware or HARDWARE)},
        "labels": dict(labels or {}),
        "offers": [{"runtime": rt, "runtime_version": VERSION[rt], "provider": "default", "threads": t}
                   for rt, t in offers],
        "current_job_id": current, "spooled_job_ids": list(spooled), "agent_secret": f"secret-{agent_id}",
    }


def summary(median_ms: float) -> dict:
    """A latency summary as agents send it (every field set)."""
    return {"median": median_ms, "mean": median_ms, "p90": median_ms, "p99": median_ms, "min": median_ms,
            "max": median_ms, "std": 0.0, "cv": 0.0, "n": 1}


def result(job: dict, agent_id: str, mid: str = "", failure_kind: str = "") -> dict:
    """The measurement dict an agent's result turns into (convert.measurement_to_dict)."""
    return {"measurement_id": mid or f"m-{job['job_id']}", "job_id": job["job_id"], "sweep_id": job["sweep_id"],
            "agent_id": agent_id, "platform_id": job["platform_id"], "model_sha256": job["model_sha256"],
            "latency_ms": None if failure_kind else summary(2.0), "samples_ms": [] if failure_kind else [2.0],
            "failure_kind": failure_kind, "failure_message": "boom" if failure_kind else ""}


def platform_of(fleet: Fleet, agent_id: str) -> str:
    [pid] = fleet.agents[agent_id].platform_ids
    return pid


def jobs_in_db(db_path, sweep_id: str) -> list[tuple]:
    con = sqlite3.connect(str(db_path))
    try:
        return con.execute("SELECT seq, model_sha256, platform_id, repeat_index FROM jobs WHERE sweep_id=?"
                           " ORDER BY seq", (sweep_id,)).fetchall()
    finally:
        con.close()


def count_rows(db_path, table: str) -> int:
    con = sqlite3.connect(str(db_path))
    try:
        return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def fleet_with_models(store, clock, config: FleetConfig = CONFIG) -> Fleet:
    f = Fleet(store, config, clock=clock)
    f.add_model(dict(ONNX))
    f.add_model(dict(TFLITE))
    return f


@pytest.fixture
def fleet(store, clock):
    return fleet_with_models(store, clock)


def take(fleet: Fleet, agent_id: str) -> Optional[dict]:
    """One agent asks for work the way the gateway's dispatcher does (``assign``): its job, or ``None``. Each job
    must also become the message the gateway sends (every test here checks that on the way)."""
    jobs = fleet.assign([agent_id])
    for job in jobs:
        assert assignment_to_proto(job).job_id == job["job_id"]
    return jobs[0] if jobs else None


def leased_count(fleet: Fleet) -> int:
    return len(fleet.store.leased_jobs())


# ------------------------------------------------------------------ sweeps

def test_submit_sweep_expands_models_x_platforms_x_repeats_skipping_format_mismatches(fleet, db_path):
    """Fails if a job is missing or duplicated, or an onnx model is sent to LiteRT (or tflite to onnxruntime)."""
    fleet.register_agent(hello("a", "h1", offers=(("onnxruntime", 1), ("litert", 1))))
    fleet.register_agent(hello("b", "h2", hardware=dict(HARDWARE, memory_gib=16)))
    a_ort, a_lite = fleet.agents["a"].platform_ids
    b_ort = platform_of(fleet, "b")
    assert len({a_ort, a_lite, b_ort}) == 3

    sweep = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx", "net-tflite"], "repeats": 3})

    rows = jobs_in_db(db_path, sweep["sweep_id"])
    assert [r[0] for r in rows] == list(range(9))
    pairs = Counter((sha, pid) for _, sha, pid, _ in rows)
    assert pairs == {(ONNX["sha256"], a_ort): 3, (ONNX["sha256"], b_ort): 3, (TFLITE["sha256"], a_lite): 3}
    for pair in pairs:
        assert sorted(r for _, sha, pid, r in rows if (sha, pid) == pair) == [0, 1, 2]
    assert sweep["platform_ids"] == sorted([a_ort, a_lite, b_ort])
    assert sweep["spec"]["models"] == [ONNX["sha256"], TFLITE["sha256"]]  # refs stored resolved
    assert (sweep["progress"]["total"], sweep["progress"]["pending"], sweep["progress"]["state"]) == (9, 9, "running")


def test_submit_sweep_selects_by_platform_id_labels_runtime_and_threads(fleet, db_path):
    """Fails if a selector field is ignored (jobs land on platforms the user did not ask for)."""
    fleet.register_agent(hello("a", "h1", offers=(("onnxruntime", 1), ("onnxruntime", 4)), labels={"rack": "r1"}))
    fleet.register_agent(hello("b", "h2", labels={"rack": "r2"}))
    a_t1, a_t4 = fleet.agents["a"].platform_ids
    b_t1 = platform_of(fleet, "b")

    def chosen(spec):
        sweep = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], **spec})
        return {pid for _, _, pid, _ in jobs_in_db(db_path, sweep["sweep_id"])}

    assert chosen({"platforms": {"platform_ids": [b_t1]}}) == {b_t1}
    assert chosen({"platforms": {"labels": {"rack": "r1"}}}) == {a_t1, a_t4}
    assert chosen({"threads": [4]}) == {a_t4}
    assert chosen({"platforms": {"runtimes": ["onnxruntime"]}, "threads": [1]}) == {a_t1, b_t1}


@pytest.mark.parametrize("spec, error", [
    ({"models": ["no-such-model"]}, NotFound),
    ({"models": ["net-onnx"], "platforms": {"platform_ids": ["nope/onnxruntime-1/default/t1"]}}, NotFound),
    ({"models": ["net-onnx"], "platforms": {"labels": {"rack": "nowhere"}}}, InvalidArgument),
    ({"models": ["net-onnx"], "platforms": {"runtimes": ["tensorrt"]}}, InvalidArgument),
    ({"models": ["net-onnx"], "threads": [0]}, InvalidArgument),
    ({"models": ["net-tflite"], "platforms": {"runtimes": ["onnxruntime"]}}, InvalidArgument),  # no pair
    ({"models": ["net-onnx"], "repeats": -1}, InvalidArgument),
    ({"models": []}, InvalidArgument),
])
def test_submit_sweep_rejects_bad_specs_and_stores_nothing(fleet, db_path, spec, error):
    """Fails if a bad spec is accepted (or raises the wrong kind, i.e. the wrong gRPC status), or if a
    rejected spec leaves a sweep behind."""
    fleet.register_agent(hello("a", "h1", offers=(("onnxruntime", 1), ("litert", 1))))
    with pytest.raises(error):
        fleet.submit_sweep(spec)
    assert count_rows(db_path, "sweeps") == 0 and count_rows(db_path, "jobs") == 0


def test_submit_sweep_resolves_a_unique_prefix_and_rejects_an_ambiguous_one(fleet):
    """Fails if a unique sha256 prefix does not resolve, or an ambiguous one silently picks a model."""
    fleet.register_agent(hello("a"))
    assert fleet.submit_sweep({**NO_SAMPLE, "models": ["0a0a0a"]})["spec"]["models"] == [ONNX["sha256"]]
    fleet.add_model(dict(ONNX, sha256="0a0a0a" + "f" * 58, name="other"))
    with pytest.raises(InvalidArgument, match="ambiguous"):
        fleet.submit_sweep({**NO_SAMPLE, "models": ["0a0a0a"]})


def test_submit_sweep_with_no_platforms_at_all_is_invalid(fleet):
    """Fails if a sweep with nothing to run on is accepted (it would never finish)."""
    with pytest.raises(InvalidArgument):
        fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})


# ------------------------------------------------------------------ scheduling

def test_one_job_per_agent_at_a_time(fleet):
    """Fails if an agent that already holds a lease is handed a second job."""
    fleet.register_agent(hello("a"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 3})
    first = take(fleet, "a")
    assert first is not None and first["model_format"] == "onnx" and first["runtime"] == "onnxruntime"
    assert take(fleet, "a") is None
    assert leased_count(fleet) == 1


def test_host_mates_never_hold_jobs_at_the_same_time(fleet):
    """Fails if two agents on one physical host (same host_id) measure at once (they would disturb each
    other's timings), or if agents on *different* hosts are serialised needlessly."""
    fleet.register_agent(hello("a", "shared-host", offers=(("onnxruntime", 1),)))
    fleet.register_agent(hello("b", "shared-host", offers=(("onnxruntime", 2),)))
    fleet.register_agent(hello("c", "other-host", offers=(("onnxruntime", 1),)))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 3})
    job_a = take(fleet, "a")
    assert job_a is not None
    assert take(fleet, "b") is None  # host-mate busy
    assert take(fleet, "c") is not None  # another host runs in parallel
    fleet.record_result(result(job_a, "a"))
    assert take(fleet, "b") is not None  # host free again


def test_host_mates_take_turns_in_job_order(fleet):
    """Fails if the agent that always asks first starves its host-mate: with jobs for both platforms
    interleaved, assignments must follow job order (alternating agents), not (a, a, b, b)."""
    fleet.register_agent(hello("a", "shared-host", offers=(("onnxruntime", 1),)))
    fleet.register_agent(hello("b", "shared-host", offers=(("onnxruntime", 2),)))
    sweep = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2})  # seq: a, b, a, b platforms
    order = []
    for _ in range(6):  # each round: both ask ("a" always first), then the job that ran finishes
        running = []
        for agent in ("a", "b"):
            job = take(fleet, agent)
            if job is not None:
                order.append((agent, job["job_id"]))
                running.append((agent, job))
        assert len(running) <= 1  # one host: never two at once
        for agent, job in running:
            fleet.record_result(result(job, agent))
    agents = [agent for agent, _ in order]
    assert Counter(agents) == {"a": 2, "b": 2}
    assert all(x != y for x, y in zip(agents, agents[1:])), agents  # turns alternate with the job order
    assert [job_id for _, job_id in order] == sorted(job_id for _, job_id in order)
    assert fleet.sweep_progress(sweep["sweep_id"])["state"] == "done"


def test_same_pool_host_mates_the_one_idle_longest_goes_first(fleet, clock):
    """Fails if, among idle agents of one pool on one host, the same agent always wins."""
    fleet.register_agent(hello("a", "shared-host"))
    clock.advance(1)
    fleet.register_agent(hello("b", "shared-host"))
    assert platform_of(fleet, "a") == platform_of(fleet, "b")
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2})
    assert take(fleet, "b") is None  # "a" has been idle longer
    job = take(fleet, "a")
    clock.advance(5)
    fleet.record_result(result(job, "a"))
    assert take(fleet, "a") is None  # now "b" has been idle longer
    assert take(fleet, "b") is not None


def test_disconnected_agent_gets_no_job(fleet):
    """Fails if work is handed to an agent whose stream has ended (the job would sit until its lease expires)."""
    fleet.register_agent(hello("a"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})
    fleet.agent_disconnected("a")
    assert take(fleet, "a") is None
    assert leased_count(fleet) == 0


def test_disconnected_host_mate_with_open_lease_still_blocks_the_host(fleet):
    """Would fail (the bug this pins) if after ``a`` loses its stream mid-job (its lease stays: it may come back with the
    result), host-mate ``b`` is handed a job, so two agents of one host hold jobs at once."""
    fleet.register_agent(hello("a", "shared-host", offers=(("onnxruntime", 1),)))
    fleet.register_agent(hello("b", "shared-host", offers=(("onnxruntime", 2),)))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2})
    assert take(fleet, "a") is not None
    fleet.agent_disconnected("a")
    assert take(fleet, "b") is None
    assert leased_count(fleet) == 1


# ------------------------------------------------------------------ leases

def test_lease_expires_without_heartbeat_and_job_returns_to_pending(fleet, clock):
    """Fails if a silent agent keeps its job forever, if it expires early, or if the agent stays 'busy'."""
    fleet.register_agent(hello("a"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})
    job = take(fleet, "a")
    clock.advance(LEASE_S - 0.5)
    assert fleet.expire_leases() == []
    assert fleet.store.get_job(job["job_id"])["state"] == "leased"
    clock.advance(1.0)
    assert fleet.expire_leases() == [job["job_id"]]
    row = fleet.store.get_job(job["job_id"])
    assert (row["state"], row["agent_id"], row["attempts"]) == ("pending", None, 1)
    assert fleet.current_job("a") is None
    again = take(fleet, "a")  # back in the queue and the agent may take work again
    assert again["job_id"] == job["job_id"]
    assert fleet.store.get_job(job["job_id"])["attempts"] == 2


def test_heartbeats_keep_the_lease_alive(fleet, clock):
    """Fails if a heartbeat does not extend the lease (a long benchmark would be taken away mid-run)."""
    fleet.register_agent(hello("a"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})
    job = take(fleet, "a")
    for beat in range(5):  # 5 × 20 s = 100 s, far past one lease, with a beat every 20 s
        clock.advance(20)
        fleet.heartbeats({"a": job["job_id"] if beat % 2 else ""})  # with or without the job id in the beat
        assert fleet.expire_leases() == []
    assert fleet.store.get_job(job["job_id"])["state"] == "leased"
    clock.advance(LEASE_S + 1)
    assert fleet.expire_leases() == [job["job_id"]]


def test_job_fails_after_max_attempts(store, clock):
    """Fails if a job whose agents keep vanishing is retried forever (or fails too early)."""
    fleet = Fleet(store, FleetConfig(lease_timeout_s=LEASE_S, max_attempts=2, heartbeat_interval_s=2.0), clock=clock)
    fleet.add_model(dict(ONNX))
    fleet.register_agent(hello("a"))
    sweep = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})
    for expected in ("pending", "failed"):
        job = take(fleet, "a")
        assert job is not None
        clock.advance(LEASE_S + 1)
        assert fleet.expire_leases() == [job["job_id"]]
        assert fleet.store.get_job(job["job_id"])["state"] == expected
    assert "after 2 attempts" in fleet.store.get_job(job["job_id"])["error"]
    assert take(fleet, "a") is None
    progress = fleet.sweep_progress(sweep["sweep_id"])
    assert (progress["failed"], progress["state"]) == (1, "done")


# ------------------------------------------------------------------ reconnects and restarts

def test_reregister_without_current_job_releases_it_immediately(fleet):
    """Fails if an agent that restarted (and so lost its job) keeps the lease until it times out."""
    fleet.register_agent(hello("a"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})
    job = take(fleet, "a")
    fleet.register_agent(hello("a"))  # a restarted agent: no current job, nothing spooled
    row = fleet.store.get_job(job["job_id"])
    assert (row["state"], row["agent_id"]) == ("pending", None)
    assert take(fleet, "a")["job_id"] == job["job_id"]


def test_reregister_with_current_job_keeps_and_extends_the_lease(fleet, clock):
    """Fails if a reconnecting agent that is still running its job loses it, or is handed a second one."""
    fleet.register_agent(hello("a"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2})
    job = take(fleet, "a")
    clock.advance(25)
    fleet.register_agent(hello("a", current=job["job_id"]))
    row = fleet.store.get_job(job["job_id"])
    assert (row["state"], row["agent_id"]) == ("leased", "a")
    assert row["lease_expires_unix"] == clock() + LEASE_S
    assert take(fleet, "a") is None  # still busy
    clock.advance(LEASE_S - 1)  # past the original expiry, within the extended one
    assert fleet.expire_leases() == []
    assert [d["state"] for d in fleet.list_devices()] == ["busy"]


def test_reregister_with_someone_elses_job_does_not_take_it(fleet):
    """Fails if an agent can claim a job leased to another agent by naming it in its hello."""
    fleet.register_agent(hello("a", "h1"))
    fleet.register_agent(hello("b", "h2"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})
    job = take(fleet, "a")
    fleet.register_agent(hello("b", "h2", current=job["job_id"]))
    assert fleet.current_job("b") is None
    assert fleet.store.get_job(job["job_id"])["agent_id"] == "a"


def test_spooled_job_ids_keep_their_leases(fleet):
    """Fails if a job whose result sits in the agent's spool is re-queued on reconnect (measured twice)."""
    fleet.register_agent(hello("a"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2})
    job = take(fleet, "a")
    fleet.register_agent(hello("a", spooled=[job["job_id"]]))
    row = fleet.store.get_job(job["job_id"])
    assert (row["state"], row["agent_id"]) == ("leased", "a")
    assert fleet.record_result(result(job, "a")) is True  # the spooled result arrives
    assert fleet.store.get_job(job["job_id"])["state"] == "done"
    second = take(fleet, "a")  # and the agent goes on with new work
    assert second is not None and second["job_id"] != job["job_id"]


def test_controller_restart_gives_open_leases_grace(store, db_path, clock):
    """Fails if a controller restart (new Store + Fleet over the same file, with time passed) expires
    leases at once, or if the agent that comes back with its job loses it; an agent that does not come
    back loses its job after the grace period."""
    fleet = Fleet(store, CONFIG, clock=clock)
    fleet.add_model(dict(ONNX))
    fleet.register_agent(hello("a", "h1"))
    fleet.register_agent(hello("c", "h2"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2})
    job_a, job_c = take(fleet, "a"), take(fleet, "c")
    store.close()

    clock.advance(100)  # the controller was down for longer than a lease
    store2 = Store(db_path)
    try:
        fleet2 = Fleet(store2, CONFIG, clock=clock)
        assert fleet2.expire_leases() == []
        clock.advance(10)
        fleet2.register_agent(hello("a", "h1", current=job_a["job_id"]))
        assert take(fleet2, "a") is None  # still busy with its job
        assert fleet2.store.get_job(job_a["job_id"])["agent_id"] == "a"
        assert CONFIG.restart_grace_s > LEASE_S
        for _ in range(6):  # "a" heartbeats its job; "c" never comes back and outlives the restart grace
            clock.advance(10)
            fleet2.heartbeats({"a": job_a["job_id"]})
        assert fleet2.expire_leases() == [job_c["job_id"]]
        assert fleet2.record_result(result(job_a, "a")) is True
        assert fleet2.store.get_job(job_a["job_id"])["state"] == "done"
    finally:
        store2.close()


def test_after_restart_a_host_mate_waits_for_the_lease_holder(store, db_path, clock):
    """Would fail (the bug this pins) if after a restart, ``b`` (same host as ``a``) reconnects first and is handed a job
    while ``a``'s lease is still open in the store, so two agents of one host hold jobs at once."""
    fleet = Fleet(store, CONFIG, clock=clock)
    fleet.add_model(dict(ONNX))
    fleet.register_agent(hello("a", "shared-host", offers=(("onnxruntime", 1),)))
    fleet.register_agent(hello("b", "shared-host", offers=(("onnxruntime", 2),)))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2})
    assert take(fleet, "a") is not None
    store.close()
    store2 = Store(db_path)
    try:
        fleet2 = Fleet(store2, CONFIG, clock=clock)
        fleet2.register_agent(hello("b", "shared-host", offers=(("onnxruntime", 2),)))
        assert take(fleet2, "b") is None
    finally:
        store2.close()


# ------------------------------------------------------------------ results, progress, listings

def test_record_result_frees_the_agent_and_a_resend_returns_false(fleet):
    """Fails if a stored result leaves the agent 'busy', or a re-sent result is stored again or frees the
    agent from the job it is running now."""
    fleet.register_agent(hello("a"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2})
    first = take(fleet, "a")
    record = result(first, "a")
    assert fleet.record_result(record) is True
    second = take(fleet, "a")
    assert second is not None and second["job_id"] != first["job_id"]
    assert fleet.record_result(dict(record)) is False
    assert fleet.store.count_measurements() == 1
    assert fleet.current_job("a") == second["job_id"]


def test_sweep_progress_counts_and_ends_done(fleet):
    """Fails if progress miscounts states or reports 'done' while jobs are open (or never reports it)."""
    fleet.register_agent(hello("a"))
    sweep_id = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 3})["sweep_id"]
    job = take(fleet, "a")
    p = fleet.sweep_progress(sweep_id)
    assert (p["total"], p["pending"], p["leased"], p["done"], p["failed"], p["state"]) == (3, 2, 1, 0, 0, "running")
    fleet.record_result(result(job, "a"))
    job = take(fleet, "a")
    fleet.record_result(result(job, "a", failure_kind="out_of_memory"))  # passing kind: retried
    p = fleet.sweep_progress(sweep_id)
    assert (p["pending"], p["leased"], p["done"], p["failed"], p["state"]) == (2, 0, 1, 0, "running")
    runs = 0
    while (job := take(fleet, "a")) is not None:
        runs += 1
        fleet.record_result(result(job, "a", mid=f"retry-{runs}"))  # every run has its own measurement id
    p = fleet.get_sweep(sweep_id)["progress"]
    assert (p["total"], p["done"], p["failed"], p["state"]) == (3, 3, 0, "done")
    assert len(fleet.list_measurements(sweep_id=sweep_id)) == 4, "the failed run is kept as data too"
    with pytest.raises(NotFound):
        fleet.get_sweep("sw-nope")


def test_list_devices_shows_busy_idle_offline(fleet):
    """Fails if a device's state does not reflect its connection and lease."""
    fleet.register_agent(hello("busy", "h1"))
    fleet.register_agent(hello("idle", "h2"))
    fleet.register_agent(hello("gone", "h3"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})
    job = take(fleet, "busy")
    fleet.agent_disconnected("gone")
    devices = {d["agent_id"]: d for d in fleet.list_devices()}
    assert {k: d["state"] for k, d in devices.items()} == {"busy": "busy", "idle": "idle", "gone": "offline"}
    assert devices["busy"]["current_job_id"] == job["job_id"]
    assert devices["gone"]["connected"] is False


# ------------------------------------------------------------------ input checks

def test_unknown_agent_and_empty_hello_are_rejected(fleet, clock):
    """Fails if an agent that never said hello can heartbeat/ask for work, or a hello without offers registers."""
    fleet.register_agent(hello("a"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2})
    assert fleet.assign(["stranger"]) == [] and leased_count(fleet) == 0
    job = take(fleet, "a")
    clock.advance(LEASE_S - 1)
    assert fleet.heartbeats({"stranger": job["job_id"]}) == ["stranger"]  # named for a hello, extends nothing
    clock.advance(2)
    assert fleet.expire_leases() == [job["job_id"]]
    with pytest.raises(InvalidArgument):
        fleet.register_agent(dict(hello("x"), offers=[]))
    with pytest.raises(InvalidArgument):
        fleet.register_agent(dict(hello("x"), agent_id=""))


@pytest.mark.parametrize("kwargs", [
    {"lease_timeout_s": 0},
    {"heartbeat_interval_s": 0},
    {"lease_timeout_s": 3.0, "heartbeat_interval_s": 2.0},  # a lease shorter than two beats
    {"max_attempts": 0},
])
def test_fleet_config_rejects_unsafe_values(kwargs):
    """Fails if a config that would expire healthy leases (or never retry) is accepted."""
    with pytest.raises(ValueError):
        FleetConfig(**kwargs)


# ------------------------------------------------------------------ failure policy, control, fairness, ETA

def test_deterministic_failure_marks_the_model_failed_on_that_platform(fleet):
    """Fails if a model that cannot run here (unsupported op) is retried, or its other repeats still run."""
    fleet.register_agent(hello("a"))
    sweep_id = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 4})["sweep_id"]
    job = take(fleet, "a")
    fleet.record_result(result(job, "a", failure_kind="unsupported_op"))
    p = fleet.sweep_progress(sweep_id)
    assert (p["pending"], p["failed"], p["state"]) == (0, 4, "done")
    rows = [fleet.store.get_job(f"{sweep_id}-{i:06d}") for i in range(4)]
    assert all("unsupported_op" in r["error"] for r in rows)
    assert sum(r["error"].startswith("skipped") for r in rows) == 3
    assert take(fleet, "a") is None


def test_deterministic_failure_is_retried_on_another_device_of_the_pool(fleet):
    """With max_device_failures=2, a failure on one device moves the job to another device of the pool,
    never back to the device it failed on; failing there too marks it failed."""
    fleet.register_agent(hello("a", "h1"))
    fleet.register_agent(hello("b", "h2"))
    sweep_id = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "max_device_failures": 2})["sweep_id"]
    job = take(fleet, "a")
    fleet.record_result(result(job, "a", failure_kind="load_error"))
    assert fleet.store.get_job(job["job_id"])["state"] == "pending"
    assert take(fleet, "a") is None, "the job must not go back to the device it failed on"
    again = take(fleet, "b")
    assert again["job_id"] == job["job_id"]
    fleet.record_result(result(again, "b", mid="m-2", failure_kind="load_error"))
    assert fleet.sweep_progress(sweep_id)["failed"] == 1


def test_deterministic_failure_with_no_other_device_fails_instead_of_waiting_forever(fleet):
    fleet.register_agent(hello("a"))
    sweep_id = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "max_device_failures": 3})["sweep_id"]
    fleet.record_result(result(take(fleet, "a"), "a", failure_kind="unsupported_op"))
    assert fleet.sweep_progress(sweep_id)["state"] == "done"


def test_passing_failures_are_retried_up_to_max_attempts(fleet):
    fleet.register_agent(hello("a"))
    sweep_id = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})["sweep_id"]
    for attempt in range(CONFIG.max_attempts):
        job = take(fleet, "a")
        assert job is not None, f"attempt {attempt + 1} must be offered"
        fleet.record_result(result(job, "a", mid=f"m-{attempt}", failure_kind="model_unavailable"))
    p = fleet.sweep_progress(sweep_id)
    assert (p["failed"], p["state"]) == (1, "done")


def test_cancel_pause_resume(fleet):
    """Fails if a paused sweep still hands out jobs, resume does not restart it, or cancel leaves work queued."""
    fleet.register_agent(hello("a"))
    sweep_id = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 3})["sweep_id"]
    running = take(fleet, "a")
    assert fleet.pause_sweep(sweep_id)["progress"]["state"] == "paused"
    fleet.record_result(result(running, "a"))
    assert take(fleet, "a") is None
    assert fleet.resume_sweep(sweep_id)["progress"]["state"] == "running"
    running = take(fleet, "a")
    assert running is not None
    p = fleet.cancel_sweep(sweep_id)["progress"]
    assert (p["state"], p["cancelled"], p["leased"]) == ("cancelled", 1, 1)
    assert take(fleet, "a") is None
    fleet.record_result(result(running, "a"))  # the running job finishes and is kept
    p = fleet.sweep_progress(sweep_id)
    assert (p["done"], p["cancelled"], p["pending"]) == (2, 1, 0)
    with pytest.raises(InvalidArgument):
        fleet.resume_sweep(sweep_id)
    with pytest.raises(NotFound):
        fleet.pause_sweep("sw-nope")


def test_concurrent_sweeps_share_fairly_and_priority_wins(fleet):
    """Fails if one sweep of equal priority starves another, or a higher-priority sweep waits behind them."""
    fleet.register_agent(hello("a"))
    first = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 4})["sweep_id"]
    second = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 4})["sweep_id"]
    order = []
    for _ in range(4):
        job = take(fleet, "a")
        order.append(job["sweep_id"])
        fleet.record_result(result(job, "a"))
    assert order.count(first) == 2 and order.count(second) == 2, order
    urgent = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2, "priority": 5})["sweep_id"]
    assert take(fleet, "a")["sweep_id"] == urgent


def test_progress_per_platform_and_eta(fleet, clock):
    """Fails if per-platform counts are wrong or the ETA ignores measured job times."""
    fleet.register_agent(hello("a", offers=(("onnxruntime", 1), ("onnxruntime", 2))))
    sweep_id = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2})["sweep_id"]
    p = fleet.sweep_progress(sweep_id)
    assert len(p["platforms"]) == 2 and p["eta_s"] == -1.0, "no job finished yet: unknown"
    job = take(fleet, "a")
    fleet.store._db.execute("UPDATE jobs SET started_unix=started_unix-10 WHERE job_id=?", (job["job_id"],))
    fleet.record_result(result(job, "a"))
    p = fleet.sweep_progress(sweep_id)
    done_platform = next(x for x in p["platforms"] if x["platform_id"] == job["platform_id"])
    assert done_platform["done"] == 1 and done_platform["pending"] == 1
    assert done_platform["mean_job_s"] == pytest.approx(10.0, abs=0.5)
    assert done_platform["eta_s"] == pytest.approx(10.0, abs=0.5)
    assert p["eta_s"] == -1.0, "the other platform has no finished job yet"


def test_assignment_carries_cooldown_thermal_gate_and_profiling(fleet):
    fleet.register_agent(hello("a"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "cooldown_s": 2.5, "max_start_temp_c": 60,
                        "max_thermal_wait_s": 30, "profile_operators": True})
    job = take(fleet, "a")
    assert (job["cooldown_s"], job["max_start_temp_c"], job["max_thermal_wait_s"], job["profile_operators"]) == (
        2.5, 60.0, 30.0, True)
    with pytest.raises(InvalidArgument, match="max_thermal_wait_s"):
        fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "max_start_temp_c": 60})


def test_heartbeat_extends_only_the_job_the_agent_reports(fleet, clock):
    """Fails if heartbeats of an idle agent keep alive a job the controller believes it handed out (an
    assignment the agent never took), which would block that job and the agent forever."""
    fleet.register_agent(hello("a"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})
    job = take(fleet, "a")
    for _ in range(4):
        clock.advance(LEASE_S / 3)
        fleet.heartbeats({"a": ""})  # the agent says it is idle
    assert fleet.expire_leases() == [job["job_id"]]
    assert take(fleet, "a")["job_id"] == job["job_id"], "the job runs again and the agent is free for it"


def test_spooled_result_of_an_expired_lease_is_awaited_not_rerun(fleet, clock):
    """Fails if a job whose lease expired while its agent was cut off (its result sits in the agent's spool)
    is handed out again when the agent reconnects, instead of waiting for that result."""
    fleet.register_agent(hello("a"))
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2})
    job = take(fleet, "a")
    fleet.agent_disconnected("a")
    clock.advance(LEASE_S + 1)
    assert fleet.expire_leases() == [job["job_id"]]
    fleet.register_agent(hello("a", spooled=(job["job_id"],)))
    assert fleet.store.get_job(job["job_id"])["state"] == "leased"
    assert take(fleet, "a") is None, "the host waits for the spooled result"
    assert fleet.record_result(result(job, "a")) is True
    row = fleet.store.get_job(job["job_id"])
    assert (row["state"], row["attempts"]) == ("done", 1)
    assert take(fleet, "a")["job_id"] != job["job_id"]


def test_import_measurements_all_or_nothing(fleet):
    """Fails if an import with an unknown model stores part of its rows, or a re-import stores rows twice."""
    good = {"line": 2, "model_sha256": ONNX["sha256"], "platform": "lab-phone", "latency_ms": 3.0, "energy_mj": 1.5}
    unknown = {"line": 3, "model_sha256": "ff" * 32, "platform": "lab-phone", "latency_ms": 1.0}
    with pytest.raises(NotFound, match="line 3"):
        fleet.import_measurements("import:x", [good, unknown])
    assert fleet.store.count_measurements() == 0 and fleet.store.get_platform("lab-phone") is None
    assert fleet.import_measurements("import:x", [good]) == {
        "imported": 1, "already_present": 0, "created_platforms": ["lab-phone"]}
    assert fleet.import_measurements("import:x", [good])["already_present"] == 1
    (m,) = fleet.list_measurements(platform_id="lab-phone")
    assert (m["latency_ms"]["median"], m["energy_mj_per_inference"], m["job_id"]) == (3.0, 1.5, "")
    with pytest.raises(InvalidArgument, match="line 2"):
        fleet.import_measurements("import:y", [{**good, "latency_ms": 0.0}])


def test_every_time_the_store_keeps_comes_from_the_fleets_clock(fleet, clock, db_path):
    """Fails if a write on the fleet's paths (hello, enrolment, tokens, sweeps, leases, results, retries,
    skips, expiry, cancel, disconnect) stamps the wall clock instead of the injected one: durations and ages
    computed from the store would mix two clocks (the fake one here is ~55 years behind the wall clock)."""
    fleet.create_agent_token("t")
    fleet.register_agent(hello("a", "h1"))
    fleet.register_agent(hello("b", "h2"))
    sweep_id = fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 2,
                                   "max_device_failures": 2})["sweep_id"]
    clock.advance(1)
    job = take(fleet, "a")
    clock.advance(1)
    fleet.record_result(result(job, "a", failure_kind="load_error"))  # retried elsewhere, avoiding "a"
    clock.advance(1)
    fleet.record_result(result(take(fleet, "b"), "b", mid="m-b", failure_kind="load_error"))  # skips the rest
    fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"], "repeats": 3})
    clock.advance(1)
    assert take(fleet, "a") is not None
    clock.advance(LEASE_S + 1)
    assert len(fleet.expire_leases()) == 1
    clock.advance(1)
    fleet.cancel_sweep(fleet.submit_sweep({**NO_SAMPLE, "models": ["net-onnx"]})["sweep_id"])
    fleet.agent_disconnected("b")
    fleet.import_measurements("import:x", [{"line": 2, "model_sha256": ONNX["sha256"], "platform": "lab",
                                            "latency_ms": 3.0}])
    assert fleet.sweep_progress(sweep_id)["state"] == "done"
    con = sqlite3.connect(str(db_path))
    try:
        stamps = []
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            for column in [c[1] for c in con.execute(f"PRAGMA table_info({table})") if c[1].endswith("_unix")]:
                stamps += [(table, column, v) for (v,) in con.execute(f"SELECT {column} FROM {table}")
                           if v and column != "lease_expires_unix"]
    finally:
        con.close()
    assert {t for t, _, _ in stamps} >= {"devices", "platforms", "models", "sweeps", "jobs", "measurements",
                                         "agent_identities", "agent_tokens"}
    wrong = [s for s in stamps if not 1_000_000 <= s[2] <= clock()]
    assert wrong == []
