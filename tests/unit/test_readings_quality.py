"""Readings you can trust, on the controller: repeat samples, job kinds, the live noise ceiling and the drift
canary (controller/quality.py, controller/reference.py, driven through Fleet with a real Store and a fake clock,
the way the gateway drives it: ``assign`` / ``record_results``).
"""
from __future__ import annotations

import itertools
import math
import sqlite3

import pytest

from fleetmeter.controller import quality
from fleetmeter.controller.fleet import Fleet, FleetConfig
from fleetmeter.controller.reference import REFERENCE_PRIORITY, reference_sweep_id
from fleetmeter.errors import InvalidArgument

INTERVAL_S = 600.0
CONFIG = FleetConfig(lease_timeout_s=30.0, heartbeat_interval_s=2.0, reference_interval_s=INTERVAL_S)
REF_ONNX = {"sha256": "ee" * 32, "name": "reference-onnx", "format": "onnx", "size_bytes": 50}
REF_TFLITE = {"sha256": "ff" * 32, "name": "reference-tflite", "format": "tflite", "size_bytes": 60}
HARDWARE = {"cpu_model": "Test CPU", "cores": 4, "arch": "x86_64", "memory_gib": 8}
VERSION = {"onnxruntime": "1.17.0", "litert": "1.2.0"}
ONNX = {"sha256": "0a" * 32, "name": "net-onnx", "format": "onnx", "size_bytes": 100}
TFLITE = {"sha256": "1b" * 32, "name": "net-tflite", "format": "tflite", "size_bytes": 200}
MODELS = [{"sha256": f"{i:02x}" * 32, "name": f"m{i}", "format": "onnx", "size_bytes": 10} for i in range(0x20, 0x2a)]


def hello(agent_id: str, host_id: str, *, offers=(("onnxruntime", 1),), hardware=None) -> dict:
    """A hello as ``convert.hello_to_dict`` makes it (see test_fleet.py)."""
    return {"agent_id": agent_id, "name": agent_id,
            "device": {"host_id": host_id, "hardware": dict(hardware or HARDWARE)}, "labels": {}, "offers": [{"runtime": rt, "runtime_version": VERSION[rt], "provider": "default",
                                      "threads": t} for rt, t in offers],
            "current_job_id": "", "spooled_job_ids": [], "agent_secret": f"secret-{agent_id}"}


@pytest.fixture
def fleet(store, clock):
    f = Fleet(store, CONFIG, clock=clock)
    for m in (ONNX, TFLITE, *MODELS):
        f.add_model(dict(m))
    return f


_ids = itertools.count()


def summary(median_ms: float) -> dict:
    """A latency summary as agents send it (every field set)."""
    return {"median": median_ms, "mean": median_ms, "p90": median_ms, "p99": median_ms, "min": median_ms,
            "max": median_ms, "std": 0.0, "cv": 0.0, "n": 1}


def reading(job: dict, agent_id: str, median_ms: float = 2.0, failure_kind: str = "", **extra) -> dict:
    """The measurement dict an agent's result turns into (a new measurement id each time, as agents make)."""
    return {"measurement_id": f"m-{job['job_id']}-{next(_ids)}", "job_id": job["job_id"], "sweep_id": job["sweep_id"],
            "agent_id": agent_id, "platform_id": job["platform_id"], "model_sha256": job["model_sha256"],
            "latency_ms": None if failure_kind else summary(median_ms),
            "samples_ms": [] if failure_kind else [median_ms], "failure_kind": failure_kind,
            "failure_message": "boom" if failure_kind else "", "finished_at_unix": extra.pop("at", 0.0), **extra}


def run_all(fleet: Fleet, agent_id: str, median_of=lambda job: 2.0) -> list[dict]:
    """Let the agent take and finish jobs until none is left; returns the assignments in order."""
    done = []
    while True:
        jobs = fleet.assign([agent_id])
        if not jobs:
            return done
        (job,) = jobs
        assert fleet.record_results([reading(job, agent_id, median_of(job))]) == ["stored"]
        done.append(job)


from test_fleet import jobs_in_db as jobs_of  # noqa: E402 - one helper for both files (tests/unit is on sys.path)


# ------------------------------------------------------------------ repeat samples

@pytest.mark.parametrize("value, share", [(None, 0.1), (0, 0.1), (0.0, 0.1), (-1, 0.0), (-0.5, 0.0), (0.25, 0.25),
                                          (1, 1.0)])
def test_repeat_share_defaults_and_none(value, share):
    """Fails if an unset share does not mean 0.1, or a negative one does not mean "no repeat samples"."""
    assert quality.repeat_share(value) == share


@pytest.mark.parametrize("value", [1.01, 2, math.inf, math.nan])
def test_repeat_share_rejects_out_of_range_naming_the_field(value):
    """Fails if a share above 1 (or not finite) is accepted, or the error does not say which field is wrong."""
    with pytest.raises(InvalidArgument, match="repeat_sample"):
        quality.repeat_share(value)


@pytest.mark.parametrize("n, share, k", [(30, 0.1, 3), (10, 0.1, 1), (1, 0.1, 1), (7, 0.5, 4), (5, 1.0, 5),
                                         (3, 0.0, 0), (0, 0.5, 0)])
def test_select_repeat_pairs_count(n, share, k):
    """Fails if the sample is not ceil(share × pairs) (at least 1 when share > 0; 0.1 × 30 must be 3, not 4)."""
    picked = quality.select_repeat_pairs(n, share, "sw-x")
    assert len(picked) == k and picked == sorted(set(picked)) and all(0 <= i < n for i in picked)


def test_select_repeat_pairs_is_deterministic_per_seed():
    """Fails if the sample changes between calls with the same sweep id (a resumed controller would disagree
    with itself) or ignores the seed (every sweep would re-measure the same pairs)."""
    a = quality.select_repeat_pairs(100, 0.1, "sw-aaaa")
    assert a == quality.select_repeat_pairs(100, 0.1, "sw-aaaa")
    assert a != quality.select_repeat_pairs(100, 0.1, "sw-bbbb")


def test_sweep_gets_one_round_of_repeat_samples_after_every_normal_job(fleet, db_path):
    """Fails if repeat samples are missing or too many, are not marked by repeat_index == repeats, are
    interleaved with the normal jobs (they must run late), or re-measure pairs the sweep does not have."""
    fleet.register_agent(hello("a", "h1"))
    fleet.register_agent(hello("b", "h2", hardware=dict(HARDWARE, memory_gib=16)))
    names = [m["name"] for m in MODELS]  # 10 models × 2 platforms = 20 pairs
    sweep = fleet.submit_sweep({"models": names, "repeats": 2, "repeat_sample": 0.15})
    rows = jobs_of(db_path, sweep["sweep_id"])
    normal = [r for r in rows if r[3] < 2]
    extra = [r for r in rows if r[3] >= 2]
    assert len(normal) == 40 and len(extra) == 3  # ceil(0.15 × 20)
    assert {r[3] for r in extra} == {2}
    assert min(r[0] for r in extra) > max(r[0] for r in normal)
    assert [r[0] for r in rows] == list(range(43))
    pairs = [(r[1], r[2]) for r in normal if r[3] == 0]
    expected = [pairs[i] for i in quality.select_repeat_pairs(20, 0.15, sweep["sweep_id"])]
    assert [(r[1], r[2]) for r in extra] == expected, "the sample is the one seeded by the sweep id"
    assert len(set(expected)) == 3
    assert sweep["progress"]["total"] == 43 and sweep["progress"]["pending"] == 43


def test_default_share_gives_at_least_one_repeat_and_negative_gives_none(fleet, db_path):
    """Fails if a sweep without repeat_sample gets no repeat pair (the noise ceiling would never fill), or if
    a negative share still adds one."""
    fleet.register_agent(hello("a", "h1"))
    default = fleet.submit_sweep({"models": ["net-onnx"]})
    assert [r[3] for r in jobs_of(db_path, default["sweep_id"])] == [0, 1]
    none = fleet.submit_sweep({"models": ["net-onnx"], "repeat_sample": -1})
    assert [r[3] for r in jobs_of(db_path, none["sweep_id"])] == [0]


@pytest.mark.parametrize("spec, field", [
    ({"repeat_sample": 1.5}, "repeat_sample"),
    ({"repeat_sample": float("nan")}, "repeat_sample"),
    ({"reading": {"sessions": 0}}, "reading.sessions"),
    ({"reading": {"max_steal_share": 1.5}}, "reading.max_steal_share"),
    ({"reading": {"max_session_spread": -0.1}}, "reading.max_session_spread"),
    ({"reading": {"sessions": 4, "max_sessions": 2}}, "reading.max_sessions"),
    ({"reading": {"isolate": "yes"}}, "reading.isolate"),
    ({"reading": {"session_count": 3}}, "reading.session_count"),
])
def test_bad_repeat_sample_or_reading_is_invalid_and_stores_nothing(fleet, db_path, spec, field):
    """Fails if a bad share or reading setting reaches the agents, or the error does not name the field."""
    fleet.register_agent(hello("a", "h1"))
    with pytest.raises(InvalidArgument, match=field.replace(".", r"\.")):
        fleet.submit_sweep({"models": ["net-onnx"], **spec})
    con = sqlite3.connect(str(db_path))
    try:
        assert con.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    finally:
        con.close()


# ------------------------------------------------------------------ job kinds

def test_job_kind_is_derived_from_the_job_never_from_the_agent(fleet):
    """Fails if the stored job_kind is what the agent claimed (it could mark any reading a reference and poison
    the drift record), or the assignment does not tell the agent the kind and the reading settings."""
    fleet.register_agent(hello("a", "h1"))
    sweep = fleet.submit_sweep({"models": ["net-onnx"], "repeat_sample": 1.0, "reading": {"sessions": 2}})
    (first,) = fleet.assign(["a"])
    assert (first["job_kind"], first["reading"]) == ("", {"sessions": 2})
    fleet.record_results([reading(first, "a", job_kind="reference")])
    (second,) = fleet.assign(["a"])
    assert second["job_kind"] == "repeat_sample"
    fleet.record_results([reading(second, "a", job_kind="")])
    kinds = {m["job_id"]: m["job_kind"] for m in fleet.list_measurements(sweep_id=sweep["sweep_id"])}
    assert kinds == {first["job_id"]: "", second["job_id"]: "repeat_sample"}


@pytest.mark.parametrize("job, sweep, kind", [
    ({"repeat_index": 0}, {"spec": {"repeats": 1}}, ""),
    ({"repeat_index": 1}, {"spec": {"repeats": 1}}, "repeat_sample"),
    ({"repeat_index": 2}, {"spec": {"repeats": 3}}, ""),
    ({"repeat_index": 3}, {"spec": {"repeats": 3}}, "repeat_sample"),
    ({"repeat_index": 1}, {"spec": {}}, "repeat_sample"),  # repeats unset means 1
    ({"repeat_index": 7}, {"spec": {"kind": "reference", "repeats": 1}}, "reference"),
    ({"repeat_index": 5}, None, ""),
])
def test_job_kind_rule(job, sweep, kind):
    """Fails if a job beyond the spec's repeats is not a repeat sample, or a canary job is not a reference."""
    assert quality.job_kind(job, sweep) == kind


# ------------------------------------------------------------------ noise ceiling

def _platform(fleet: Fleet, pid: str) -> dict:
    return next(p for p in fleet.list_platforms() if p["platform_id"] == pid)


def test_noise_ceiling_pairs_repeats_of_the_same_model_and_leaves_out_failures_and_references(fleet):
    """Fails if the ceiling pairs readings of different models, counts failed readings or the canary's
    reference readings (a model measured 48 times a day would swamp it), or is not the modeler's definition."""
    fleet.register_agent(hello("a", "h1"))
    [pid] = fleet.agents["a"].platform_ids
    assert _platform(fleet, pid)["noise_ceiling"] == {"within_5": None, "within_10": None, "pairs": 0}
    medians = {MODELS[0]["sha256"]: iter([2.0, 2.05, 2.02]), MODELS[1]["sha256"]: iter([2.0, 2.3, 1.0, 1.0, 1.0])}
    fleet.submit_sweep({"models": [MODELS[0]["name"], MODELS[1]["name"]], "repeats": 2, "repeat_sample": 1.0})
    jobs = []
    while True:
        got = fleet.assign(["a"])
        if not got:
            break
        (job,) = got
        jobs.append(job)
        fails = job["model_sha256"] == MODELS[1]["sha256"] and job["job_kind"] == "repeat_sample"
        fleet.record_results([reading(job, "a", next(medians[job["model_sha256"]]),
                                      failure_kind="runtime_error" if fails else "")])
    # model 0: 2.0, 2.05, 2.02 → 3 pairs, all within 5 %; model 1: 2.0, 2.3 (its repeat sample failed, and was
    # retried, and failed...) → 1 pair, 14 % apart.
    ceiling = _platform(fleet, pid)["noise_ceiling"]
    assert ceiling["pairs"] == 4
    assert ceiling == quality.ceiling_of({"0": [2.0, 2.05, 2.02], "1": [2.0, 2.3]})
    assert (ceiling["within_5"], ceiling["within_10"]) == (0.5, 0.5), "mean over models of each model's share"

    # A reference reading of the same platform changes nothing in the ceiling.
    fleet.set_reference_models([dict(REF_ONNX)])
    ref_jobs = fleet.assign(["a"])
    assert [j["job_kind"] for j in ref_jobs] == ["reference"]
    fleet.record_results([reading(ref_jobs[0], "a", 9.0)])
    assert _platform(fleet, pid)["noise_ceiling"] == ceiling
    assert _platform(fleet, pid)["reference"]["median_ms"] == 9.0


def test_noise_ceiling_cache_is_refreshed_by_a_new_reading_of_that_platform_only(fleet, store):
    """Fails if listing platforms keeps serving a stale ceiling after a reading arrived (or recomputes every
    platform on every listing: the other platform's figure must come from the cache)."""
    fleet.register_agent(hello("a", "h1"))
    fleet.register_agent(hello("b", "h2", hardware=dict(HARDWARE, memory_gib=16)))
    [pa], [pb] = fleet.agents["a"].platform_ids, fleet.agents["b"].platform_ids
    fleet.submit_sweep({"models": [MODELS[0]["name"]], "platforms": {"platform_ids": [pa]}, "repeats": 2,
                        "repeat_sample": -1})
    (j1,) = fleet.assign(["a"])
    fleet.record_results([reading(j1, "a", 2.0)])
    assert _platform(fleet, pa)["noise_ceiling"]["pairs"] == 0
    calls = []
    real = store.platform_readings
    store.platform_readings = lambda pid: calls.append(pid) or real(pid)
    (j2,) = fleet.assign(["a"])
    fleet.record_results([reading(j2, "a", 2.5)])
    assert _platform(fleet, pa)["noise_ceiling"]["pairs"] == 1
    assert calls == [pa], "only the platform that got a reading is recomputed"
    fleet.list_platforms()
    assert calls == [pa], "a second listing is served from the cache"
    assert pb in {p["platform_id"] for p in fleet.list_platforms()}


def test_noise_ceiling_does_not_pair_the_same_model_under_different_inputs(fleet):
    """Fails if readings of one model with different input overrides (another shape: another cost) are paired."""
    fleet.register_agent(hello("a", "h1"))
    [pid] = fleet.agents["a"].platform_ids
    for shape in ([1, 3, 32, 32], [1, 3, 64, 64]):
        fleet.submit_sweep({"models": [MODELS[0]["name"]], "repeat_sample": -1,
                            "inputs": [{"name": "input", "shape": shape}]})
    run_all(fleet, "a", lambda job: 1.0 if job["inputs"][0]["shape"][2] == 32 else 4.0)
    assert _platform(fleet, pid)["noise_ceiling"]["pairs"] == 0
    fleet.submit_sweep({"models": [MODELS[0]["name"]], "repeat_sample": -1,
                        "inputs": [{"name": "input", "shape": [1, 3, 32, 32]}]})
    run_all(fleet, "a", lambda job: 1.02)
    assert _platform(fleet, pid)["noise_ceiling"] == {"within_5": 1.0, "within_10": 1.0, "pairs": 1}


# ------------------------------------------------------------------ drift canary

def test_reference_job_on_connect_goes_first_and_not_again_within_the_interval(fleet, clock, db_path):
    """Fails if a connecting agent's platform is not measured with the reference model before the sweep's
    jobs, if reconnecting measures it again within the interval, or if it is not measured again after it."""
    fleet.set_reference_models([dict(REF_ONNX), dict(REF_TFLITE)])
    fleet.register_agent(hello("a", "h1"))
    [pid] = fleet.agents["a"].platform_ids
    fleet.submit_sweep({"models": ["net-onnx"], "repeat_sample": -1, "priority": 100})
    (first,) = fleet.assign(["a"])
    assert (first["job_kind"], first["model_sha256"], first["sweep_id"]) == ("reference", REF_ONNX["sha256"],
                                                                             reference_sweep_id(pid))
    assert first["settings"] and first["reading"] == {}
    fleet.record_results([reading(first, "a", 3.0, at=clock())])
    (second,) = fleet.assign(["a"])
    assert second["job_kind"] == "" and second["model_sha256"] == ONNX["sha256"]
    fleet.record_results([reading(second, "a")])

    clock.advance(10)
    fleet.agent_disconnected("a")
    fleet.register_agent(hello("a", "h1"))
    assert fleet.assign(["a"]) == [], "a reconnect within the interval measures no reference again"
    clock.advance(INTERVAL_S)
    (third,) = fleet.assign(["a"])
    assert third["job_kind"] == "reference"
    fleet.record_results([reading(third, "a", 3.3, at=clock())])

    ref = fleet.get_sweep(reference_sweep_id(pid))
    assert ref["name"] == f"reference:{pid}" and ref["priority"] == REFERENCE_PRIORITY
    assert (ref["progress"]["done"], ref["progress"]["state"]) == (2, "done")
    reference = _platform(fleet, pid)["reference"]
    assert (reference["model_name"], reference["median_ms"], reference["readings"]) == ("reference-onnx", 3.3, 2)
    assert reference["drift"] == pytest.approx(3.3 / 3.15 - 1)


def test_reference_jobs_only_for_served_platforms_and_never_pile_up(fleet, clock):
    """Fails if a platform without a connected agent collects reference jobs, or a busy platform gets a second
    reference job queued behind the first one."""
    fleet.set_reference_models([dict(REF_ONNX)])
    fleet.register_agent(hello("a", "h1"))
    fleet.register_agent(hello("b", "h2", hardware=dict(HARDWARE, memory_gib=16)))
    [pa], [pb] = fleet.agents["a"].platform_ids, fleet.agents["b"].platform_ids
    fleet.agent_disconnected("b")
    (job,) = fleet.assign(["a"])
    assert job["platform_id"] == pa
    assert fleet.store.get_sweep(reference_sweep_id(pb)) is None, "b's platform has no agent: no canary"
    clock.advance(3 * INTERVAL_S)  # a still runs its job
    fleet.schedule_references()
    counts = fleet.store.sweep_counts(reference_sweep_id(pa))
    assert (counts["leased"], counts["pending"]) == (1, 0)


def test_reference_schedule_survives_a_controller_restart(store, clock):
    """Fails if a restarted controller re-measures every platform at once although their references are fresh."""
    fleet = Fleet(store, CONFIG, clock=clock)
    fleet.add_model(dict(ONNX))
    fleet.set_reference_models([dict(REF_ONNX)])
    fleet.register_agent(hello("a", "h1"))
    (job,) = fleet.assign(["a"])
    fleet.record_results([reading(job, "a", 3.0)])
    clock.advance(60)
    again = Fleet(store, CONFIG, clock=clock)
    again.set_reference_models([dict(REF_ONNX)])
    again.register_agent(hello("a", "h1"))
    assert again.assign(["a"]) == []
    clock.advance(INTERVAL_S)
    assert [j["job_kind"] for j in again.assign(["a"])] == ["reference"]


def test_canary_off_without_interval_or_without_a_model_for_the_runtime(store, clock):
    """Fails if reference_interval_s 0 still schedules, or a LiteRT platform gets the ONNX reference model."""
    off = Fleet(store, FleetConfig(reference_interval_s=0), clock=clock)
    off.set_reference_models([dict(REF_ONNX)])
    off.register_agent(hello("a", "h1"))
    assert off.assign(["a"]) == []
    on = Fleet(store, CONFIG, clock=clock)
    on.set_reference_models([dict(REF_ONNX)])
    on.register_agent(hello("l", "h3", offers=(("litert", 1),)))
    assert on.assign(["l"]) == []


def test_reference_reading_summary_and_drift():
    """Fails if drift is not latest / median(record) - 1, or the record mixes in another reference model."""
    readings = [
        {"model_sha256": "old", "median_ms": 10.0, "job_kind": "reference", "finished_at_unix": 1.0},
        {"model_sha256": "new", "median_ms": 2.0, "job_kind": "reference", "finished_at_unix": 2.0},
        {"model_sha256": "new", "median_ms": 2.2, "job_kind": "reference", "finished_at_unix": 3.0},
        {"model_sha256": "new", "median_ms": 2.4, "job_kind": "reference", "finished_at_unix": 4.0,
         "session_spread": 0.01, "flags": ["disturbed"]},
        {"model_sha256": "m", "median_ms": 5.0, "job_kind": "", "finished_at_unix": 5.0},
    ]
    q = quality.platform_quality(readings, lambda r: r["model_sha256"], lambda sha: f"name-{sha}")
    ref = q["reference"]
    assert (ref["model_sha256"], ref["model_name"], ref["readings"]) == ("new", "name-new", 3)
    assert ref["drift"] == pytest.approx(2.4 / 2.2 - 1)
    assert (ref["session_spread"], ref["flags"], ref["finished_at_unix"]) == (0.01, ["disturbed"], 4.0)
    assert q["noise_ceiling"]["pairs"] == 0
    assert quality.platform_quality([], str, str) == {
        "noise_ceiling": {"within_5": None, "within_10": None, "pairs": 0}, "reference": None}



def test_reference_models_are_built_deterministically_for_both_runtimes():
    """Fails if the reference model's bytes change from one build to the next (every controller start would
    begin a new stability record), or a format cannot be built and inspected like an upload."""
    from fleetmeter.controller.reference import FORMAT_FOR_RUNTIME, build_and_inspect

    assert FORMAT_FOR_RUNTIME == {"onnxruntime": "onnx", "litert": "tflite"}
    for fmt in ("onnx", "tflite"):
        first, second = build_and_inspect(fmt), build_and_inspect(fmt)
        assert "error" not in first, first.get("error")
        assert first["model"]["sha256"] == second["model"]["sha256"] and first["data"] == second["data"]
        assert (first["model"]["format"], first["model"]["name"]) == (fmt, f"reference-{fmt}")
