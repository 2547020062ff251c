"""The one record rule (fleetmeter/records.py) and the agent's use of it for a reading."""
from __future__ import annotations

import json

import pytest

from fleetmeter.agent.connection import result_to_measurement
from fleetmeter.records import RecordError, from_record, to_record
from fleetmeter.v1 import agent_pb2, common_pb2, fleet_pb2


def _full_measurement() -> common_pb2.Measurement:
    m = common_pb2.Measurement(measurement_id="m", job_id="j", threads=2, peak_rss_bytes=2 ** 40,
                               samples_ms=[1.0, 2.5], energy_mj_per_inference=0.0, flags=["unstable"])
    m.latency_ms.median = 1.5
    m.temps_c_before["cpu"] = 41.0
    m.operators.add(node_name="conv", input_shapes=["1x3x8x8"], runs=3)
    s = m.sessions.add(index=1, median_ms=2.0, accepted=True)
    s.interference.window_s = 1.0
    s.interference.steal_share = 0.25
    return m


def test_records_follow_the_rule_and_come_back_the_same():
    """Fails if an int64 turns into a string or float, an absent optional into 0 (a measured zero must stay a
    zero), an unset message into an empty one, or if the record does not survive JSON back to the same message."""
    m = _full_measurement()
    r = json.loads(json.dumps(to_record(m)))
    assert r["peak_rss_bytes"] == 2 ** 40 and isinstance(r["peak_rss_bytes"], int)
    assert r["energy_mj_per_inference"] == 0.0 and r["avg_power_w"] is None
    assert r["interference"] is None and r["sessions"][0]["interference"]["other_cpu_cores"] is None
    assert r["temps_c_before"] == {"cpu": 41.0} and r["operators"][0]["input_shapes"] == ["1x3x8x8"]
    assert from_record(common_pb2.Measurement, r) == m


def test_omit_absent_keeps_only_what_was_set():
    """Settings: an absent field means "the agent's default" and must not come back as an explicit 0."""
    spec = fleet_pb2.SweepSpec(settings=common_pb2.BenchSettings(min_runs=0))
    r = to_record(spec, omit_absent=True)
    assert r["settings"] == {"min_runs": 0} and r["reading"] == {}
    back = from_record(fleet_pb2.SweepSpec, r)
    assert back.settings.HasField("min_runs") and not back.settings.HasField("warmup_runs")


def test_a_misspelt_or_mistyped_field_is_an_error_naming_it():
    with pytest.raises(RecordError, match="Measurement has no field latency_msec"):
        from_record(common_pb2.Measurement, {"latency_msec": {}})
    with pytest.raises(RecordError, match=r"Measurement\.sessions: SessionSummary\.index"):
        from_record(common_pb2.Measurement, {"sessions": [{"index": "first"}]})
    kept = from_record(common_pb2.Measurement, {"measurement_id": "x", "source_line": 3}, ignore_unknown=True)
    assert kept.measurement_id == "x"


def test_map_of_messages_round_trips():
    hello = agent_pb2.Hello(agent_id="a", labels={"room": "lab"})
    hello.device.runtimes.add(name="onnxruntime", providers=["CPUExecutionProvider"])
    assert from_record(agent_pb2.Hello, to_record(hello)) == hello


def test_the_agents_result_becomes_the_wire_reading_with_the_jobs_ids():
    """Fails if the agent's own keys leak onto the wire (or break it), if an empty value in the result overrides
    an id of the job, or if the reading's figures are lost on the way."""
    result = {"model_sha256": "", "runtime": "onnxruntime", "runtime_version": "1.20", "threads": 0,
              "latency_ms": {"median": 2.0, "mean": 2.1, "p90": 2.5, "p99": 2.9, "std": 0.1, "min": 1.9,
                             "max": 3.0, "n": 3, "cv": 0.05},
              "samples_ms": [1.9, 2.0, 3.0], "load_ms": 12.0, "first_run_ms": 4.0, "peak_rss_bytes": None,
              "energy_mj_per_inference": None, "avg_power_w": None, "power_sensor": None, "temps_c_before": {},
              "temps_c_after": {"cpu": 50.0}, "failure_kind": None, "failure_message": None,
              "model_path": "/tmp/x.onnx", "runtime_config": {"intra_op_num_threads": 2}, "seed": 7,
              "settings": {"min_runs": 3}, "warmup_runs": 5, "started_at_unix": 100.0, "finished_at_unix": 101.0,
              "sessions": [{"index": 0, "median_ms": 2.0, "n": 3, "accepted": True, "interference": None}],
              "session_spread": 0.01, "interference": {"window_s": 0.5, "steal_share": 0.0, "disturbed": False,
                                                       "reasons": []}, "flags": []}
    m = result_to_measurement(result, measurement_id="mid", job_id="job", agent_id="ag", platform_id="p",
                              model_sha256="ab" * 32, threads=2)
    assert (m.model_sha256, m.threads, m.job_id) == ("ab" * 32, 2, "job")
    assert m.latency_ms.median == 2.0 and list(m.samples_ms) == [1.9, 2.0, 3.0] and m.warmup_runs == 5
    assert not m.HasField("energy_mj_per_inference") and m.peak_rss_bytes == 0
    assert m.interference.HasField("steal_share") and not m.interference.HasField("other_cpu_cores")
    assert m.sessions[0].accepted and m.temps_c_after["cpu"] == 50.0 and m.finished_at_unix == 101.0
