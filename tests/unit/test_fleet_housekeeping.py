"""Fleet housekeeping on a real SQLite store with a fake clock: listing sweeps by state (``Fleet.list_sweeps``)
and removing a model (``Fleet.delete_model`` / ``Store.delete_model``). Over real gRPC and the CLI:
tests/integration/test_housekeeping.py."""
from __future__ import annotations

import sqlite3

import pytest

from fleetmeter.controller.fleet import Fleet, FleetConfig
from fleetmeter.errors import FailedPrecondition, InvalidArgument, NotFound

CONFIG = FleetConfig(lease_timeout_s=30.0, heartbeat_interval_s=2.0)
NET = {"sha256": "0a" * 32, "name": "net.onnx", "format": "onnx", "size_bytes": 100}
OTHER = {"sha256": "0b" * 32, "name": "other.onnx", "format": "onnx", "size_bytes": 100}
LATENCY_MS = {**dict.fromkeys(("median", "mean", "p90", "p99", "min", "max"), 2.0), "std": 0.0, "cv": 0.0, "n": 1}


def _hello(agent_id: str) -> dict:
    return {"agent_id": agent_id, "name": agent_id,
            "device": {"host_id": f"host-{agent_id}", "hardware": {"cpu_model": "Test CPU", "cores": 4}},
            "labels": {}, "offers": [{"runtime": "onnxruntime", "runtime_version": "1.17.0", "provider": "default",
                                      "threads": 1}],
            "current_job_id": "", "spooled_job_ids": [], "agent_secret": f"secret-{agent_id}"}


def _measure(fleet: Fleet, agent_id: str) -> dict:
    """The agent takes its next job and reports a reading of it; returns the job."""
    [job] = fleet.assign([agent_id])
    fleet.record_result({"measurement_id": f"m-{job['job_id']}", "job_id": job["job_id"],
                         "sweep_id": job["sweep_id"], "agent_id": agent_id, "platform_id": job["platform_id"],
                         "model_sha256": job["model_sha256"], "latency_ms": LATENCY_MS,
                         "samples_ms": [2.0], "failure_kind": "", "failure_message": ""})
    return job


@pytest.fixture
def fleet(store, clock) -> Fleet:
    f = Fleet(store, CONFIG, clock=clock)
    f.add_model(dict(NET))
    f.add_model(dict(OTHER))
    f.register_agent(_hello("a"))
    return f


def _sweep(fleet: Fleet, clock, *models: str) -> str:
    clock.advance(1.0)  # sweeps are listed by creation time
    return fleet.submit_sweep({"models": list(models), "repeat_sample": -1})["sweep_id"]


def _foreign_key_problems(db_path) -> list:
    con = sqlite3.connect(str(db_path))
    try:
        return con.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        con.close()


# ------------------------------------------------------------------ list_sweeps
def test_list_sweeps_newest_first_and_filtered_by_state(fleet, clock):
    """Fails if sweeps come in another order, a state filter lets another state through or drops a match,
    or no filter leaves one out."""
    done = _sweep(fleet, clock, "net.onnx")
    _measure(fleet, "a")
    cancelled = _sweep(fleet, clock, "net.onnx")
    fleet.cancel_sweep(cancelled)
    paused = _sweep(fleet, clock, "other.onnx")
    fleet.pause_sweep(paused)
    running = _sweep(fleet, clock, "other.onnx")

    assert [s["sweep_id"] for s in fleet.list_sweeps()] == [running, paused, cancelled, done]
    for state, expected in (("running", [running]), ("paused", [paused]), ("cancelled", [cancelled]),
                            ("done", [done])):
        listed = fleet.list_sweeps([state])
        assert [s["sweep_id"] for s in listed] == expected, state
        assert all(s["progress"]["state"] == state for s in listed)
    assert [s["sweep_id"] for s in fleet.list_sweeps(["done", "paused"])] == [paused, done]


def test_list_sweeps_names_the_states_when_given_an_unknown_one(fleet):
    with pytest.raises(InvalidArgument, match=r"unknown sweep state\(s\) \['finished'\].*'running'"):
        fleet.list_sweeps(["finished"])


# ------------------------------------------------------------------ delete_model
def test_model_with_pending_jobs_is_refused_until_forced(fleet, clock, db_path):
    """Fails if a model that pending jobs need is removed without --force, if the refusal does not name the
    sweep and the way out, or if --force leaves the pending jobs behind (or a dangling foreign key)."""
    sweep_id = _sweep(fleet, clock, "net.onnx")
    with pytest.raises(FailedPrecondition, match=rf"net.onnx \(0a0a0a0a0a0a\) is still needed by 1 pending "
                                                 rf"job\(s\) of sweep\(s\) {sweep_id}.*--force"):
        fleet.delete_model("net.onnx")
    assert fleet.get_model(NET["sha256"])["name"] == "net.onnx"

    removed = fleet.delete_model("net.onnx", force=True)
    assert (removed["model"]["sha256"], removed["jobs_removed"], removed["measurements_kept"]) == (NET["sha256"], 1, 0)
    with pytest.raises(NotFound):
        fleet.get_model(NET["sha256"])
    assert fleet.get_sweep(sweep_id)["progress"]["total"] == 0
    assert _foreign_key_problems(db_path) == []


def test_model_being_measured_is_refused_even_with_force(fleet, clock):
    """Fails if a model is removed while an agent runs a job of it (its result would have no job)."""
    sweep_id = _sweep(fleet, clock, "net.onnx")
    fleet.assign(["a"])
    with pytest.raises(FailedPrecondition, match=rf"being measured now by 1 running job\(s\) of sweep\(s\) "
                                                 rf"{sweep_id}"):
        fleet.delete_model(NET["sha256"], force=True)
    assert fleet.get_model(NET["sha256"])["name"] == "net.onnx"


def test_removal_keeps_measurements_and_other_models_jobs(fleet, clock, db_path):
    """Fails if removing a model deletes its measurements, touches another model's jobs, or the model cannot
    be added again afterwards."""
    sweep_id = _sweep(fleet, clock, "net.onnx", "other.onnx")
    first = _measure(fleet, "a")
    second = _measure(fleet, "a")
    assert {first["model_sha256"], second["model_sha256"]} == {NET["sha256"], OTHER["sha256"]}

    removed = fleet.delete_model(NET["sha256"][:8])
    assert (removed["jobs_removed"], removed["measurements_kept"]) == (1, 1)
    net_job = first if first["model_sha256"] == NET["sha256"] else second
    kept = fleet.list_measurements(model_sha256=NET["sha256"])
    assert [m["measurement_id"] for m in kept] == [f"m-{net_job['job_id']}"]
    progress = fleet.get_sweep(sweep_id)["progress"]
    assert (progress["total"], progress["done"], progress["state"]) == (1, 1, "done")
    assert [m["sha256"] for m in fleet.list_models()] == [OTHER["sha256"]]
    assert _foreign_key_problems(db_path) == []

    again, already = fleet.add_model(dict(NET))
    assert again["name"] == "net.onnx" and not already


def test_unknown_ambiguous_and_reference_models_are_refused(fleet):
    """Fails if an unknown reference is not NOT_FOUND naming it, if one name of two models removes either,
    or if the drift canary's reference model can be removed."""
    with pytest.raises(NotFound, match=r"unknown model 'nope\.onnx'"):
        fleet.delete_model("nope.onnx")
    fleet.add_model({**NET, "sha256": "0c" * 32})  # a second model named net.onnx
    with pytest.raises(InvalidArgument, match=r"'net\.onnx' is ambiguous: net\.onnx \(0a0a.*net\.onnx \(0c0c"):
        fleet.delete_model("net.onnx")
    [reference] = fleet.set_reference_models([{"sha256": "0d" * 32, "name": "reference-onnx", "format": "onnx",
                                               "size_bytes": 10}])
    with pytest.raises(FailedPrecondition, match="drift canary's reference model"):
        fleet.delete_model("reference-onnx")
    assert len(fleet.list_models()) == 4
