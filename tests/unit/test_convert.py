"""controller/convert.py: proto messages ↔ the dicts the fleet and the store keep.

A round trip that loses or changes a field means a reading is stored (or served back) differently from what
the agent measured, or a sweep's knobs never reach the agent.
"""
from __future__ import annotations

import json

import pytest

from fleetmeter.controller import convert
from fleetmeter.errors import InvalidArgument
from fleetmeter.v1 import agent_pb2, common_pb2, fleet_pb2


def _interference(**kw) -> common_pb2.Interference:
    return common_pb2.Interference(window_s=1.5, other_cpu_cores=0.1, steal_share=0.0, load_avg_1m=0.7,
                                   cpu_freq_mhz_min=2000.0, cpu_freq_mhz_max=3100.0, **kw)


def _measurement() -> common_pb2.Measurement:
    m = common_pb2.Measurement(
        measurement_id="m-1", job_id="sw-1-000001", agent_id="a", platform_id="p/onnxruntime-1.17/default/t1",
        model_sha256="ab" * 32, runtime="onnxruntime", runtime_version="1.17.0", provider="default", threads=1,
        latency_ms=common_pb2.LatencySummary(median=2.0, mean=2.1, p90=2.4, p99=2.9, std=0.1, min=1.9, max=3.0,
                                             n=4, cv=0.05),
        samples_ms=[1.9, 2.0, 2.0, 3.0], load_ms=12.5, first_run_ms=4.0, peak_rss_bytes=123_456_789_012,
        power_sensor="", failure_kind="", started_at_unix=100.0, finished_at_unix=105.0, sweep_id="sw-1",
        warmup_runs=5, cooldown_wait_s=0.5, thermal_wait_s=0.0, session_spread=0.031,
        interference=_interference(disturbed=True, reasons=["other_cpu_cores 0.93 > 0.25"]),
        flags=["unstable", "disturbed"], job_kind="repeat_sample")
    m.temps_c_before["cpu"] = 41.0
    m.temps_c_after["cpu"] = 44.5
    m.sessions.add(index=0, median_ms=2.0, n=2, load_ms=12.0, started_at_unix=100.0, finished_at_unix=101.0,
                   interference=_interference(), accepted=True, stop_reason="stable")
    m.sessions.add(index=1, median_ms=2.06, n=2, load_ms=13.0, started_at_unix=102.0, finished_at_unix=103.0,
                   accepted=False, stop_reason="", failure_kind="runtime_error")  # no guard figures this time
    m.operators.add(node_name="conv1", op_type="Conv", provider="CPU", input_shapes=["1x3x8x8"],
                    output_shapes=["1x4x8x8"], median_us=10.0, mean_us=11.0, runs=3)
    return m


def test_measurement_round_trip_keeps_every_field_also_through_the_stores_json():
    """Fails if a field of a reading (sessions, spread, guard figures, flags, job kind ...) is dropped or changed
    on its way into the store and back out to a caller."""
    m = _measurement()
    d = convert.measurement_to_dict(m)
    assert convert.measurement_from_dict(d) == m
    assert convert.measurement_from_dict(json.loads(json.dumps(d))) == m


def test_measurement_dict_shapes_of_the_new_fields():
    """Fails if the dicts the fleet and the CLI rely on change shape: absent guard figures must be None (not 0,
    which would read as "measured: no interference"), absent interference None, flags a list."""
    d = convert.measurement_to_dict(_measurement())
    assert d["session_spread"] == 0.031 and d["job_kind"] == "repeat_sample"
    assert d["flags"] == ["unstable", "disturbed"]
    assert d["interference"]["iowait_share"] is None and d["interference"]["other_cpu_cores"] == 0.1
    assert d["interference"]["disturbed"] is True and d["interference"]["reasons"] == ["other_cpu_cores 0.93 > 0.25"]
    first, second = d["sessions"]
    assert (first["index"], first["median_ms"], first["accepted"], first["stop_reason"]) == (0, 2.0, True, "stable")
    assert first["interference"]["window_s"] == 1.5
    assert second["interference"] is None and second["failure_kind"] == "runtime_error"

    bare = convert.measurement_to_dict(common_pb2.Measurement(measurement_id="m-2"))
    assert (bare["sessions"], bare["interference"], bare["flags"], bare["job_kind"]) == ([], None, [], "")
    assert bare["energy_mj_per_inference"] is None


def test_old_records_without_the_new_fields_still_convert():
    """Fails if readings stored before sessions existed (or imported ones, with extra keys) cannot be served."""
    old = {"measurement_id": "imp-1", "job_id": "", "sweep_id": "", "agent_id": "import:x", "platform_id": "lab",
           "model_sha256": "ab" * 32, "runtime": "imported", "threads": 0, "latency_ms": {"median": 3.0},
           "samples_ms": [], "energy_mj_per_inference": None, "failure_kind": "", "source": "import:x",
           "source_line": 2, "family": "cnn"}
    m = convert.measurement_from_dict(old)
    assert m.latency_ms.median == 3.0 and not m.sessions and not m.HasField("interference") and not m.flags


def test_spec_round_trip_with_reading_and_repeat_sample():
    """Fails if the reading settings or the repeat-sample share of a sweep are lost between the caller and the
    store, or if unset reading fields turn into explicit zeros (the agent would take 0 sessions)."""
    spec = fleet_pb2.SweepSpec(
        name="s", models=["ab" * 32], platforms=fleet_pb2.PlatformSelector(platform_ids=["p"], labels={"k": "v"},
                                                                          runtimes=["onnxruntime"]),
        threads=[1, 2], repeats=2, settings=common_pb2.BenchSettings(min_runs=0, min_duration_ms=50.0),
        priority=3, inputs=[common_pb2.InputOverride(name="x", shape=[1, 3], fill=0.5)],
        reading=common_pb2.ReadingSettings(sessions=1, isolate=False, max_session_spread=0.1),
        repeat_sample=-1.0, cooldown_s=1.0, profile_operators=True)
    d = convert.spec_to_dict(spec)
    assert d["reading"] == {"sessions": 1, "isolate": False, "max_session_spread": 0.1}
    assert d["repeat_sample"] == -1.0 and d["settings"] == {"min_runs": 0, "min_duration_ms": 50.0}
    assert convert.spec_from_dict(json.loads(json.dumps(d))) == spec

    plain = convert.spec_to_dict(fleet_pb2.SweepSpec(models=["x"]))
    assert plain["reading"] == {} and "repeat_sample" not in plain
    assert convert.spec_from_dict({"models": ["x"]}).reading == common_pb2.ReadingSettings()


def test_assignment_carries_reading_and_job_kind():
    """Fails if an agent is not told how many sessions to make, or which kind of job it runs."""
    a = {"job_id": "j", "sweep_id": "s", "platform_id": "p", "model_sha256": "ab" * 32, "model_size_bytes": 10,
         "model_format": "onnx", "runtime": "onnxruntime", "provider": "default", "threads": 1,
         "settings": {"min_runs": 5}, "inputs": [], "reading": {"sessions": 2, "max_steal_share": 0.1},
         "job_kind": "reference", "agent_id": "ag-1"}  # as Fleet.assign returns it: with the recipient
    proto = convert.assignment_to_proto(a)
    assert isinstance(proto, agent_pb2.JobAssignment)
    assert proto.job_kind == "reference"
    assert convert.reading_to_dict(proto.reading) == {"sessions": 2, "max_steal_share": 0.1}
    assert not proto.reading.HasField("isolate"), "unset reading fields stay unset (the agent's default)"
    legacy = convert.assignment_to_proto({k: v for k, v in a.items() if k not in ("reading", "job_kind")})
    assert legacy.job_kind == "" and convert.reading_to_dict(legacy.reading) == {}


def test_platform_to_proto_with_and_without_quality():
    """Fails if the noise ceiling or the canary's reading do not reach ListPlatforms, or a platform without them
    shows a fabricated reference."""
    base = {"platform_id": "p", "hardware": "cpu", "runtime": "onnxruntime", "runtime_version": "1", "provider": "d",
            "threads": 1, "labels": {}, "hardware_json": {"cpu_model": "x"}}
    empty = convert.platform_to_proto({**base, "noise_ceiling": {"within_5": None, "within_10": None, "pairs": 0},
                                       "reference": None})
    assert empty.noise_ceiling.pairs == 0 and not empty.HasField("reference")
    ref = {"model_sha256": "cd" * 32, "model_name": "reference-onnx", "median_ms": 1.5, "session_spread": None,
           "flags": ["unstable"], "finished_at_unix": 10.0, "readings": 3, "drift": 0.02}
    full = convert.platform_to_proto({**base, "noise_ceiling": {"within_5": 0.5, "within_10": 1.0, "pairs": 4},
                                      "reference": ref})
    assert (full.noise_ceiling.within_5, full.noise_ceiling.within_10, full.noise_ceiling.pairs) == (0.5, 1.0, 4)
    assert (full.reference.model_name, full.reference.median_ms, full.reference.readings) == ("reference-onnx", 1.5, 3)
    assert list(full.reference.flags) == ["unstable"] and abs(full.reference.drift - 0.02) < 1e-12


def test_settings_and_inputs_round_trip():
    """Fails if an explicit 0 setting or a fill of an input override is lost (0 is not "the default")."""
    s = common_pb2.BenchSettings(warmup_runs=0, max_duration_ms=100.0)
    assert convert.settings_from_dict(convert.settings_to_dict(s)) == s
    inputs = [common_pb2.InputOverride(name="a", shape=[1, 2]), common_pb2.InputOverride(name="b", fill=0.0)]
    assert convert.inputs_from_list(convert.inputs_to_list(inputs)) == inputs


# ------------------------------------------------------------------ hello, devices, tokens

def _hello(**device) -> agent_pb2.Hello:
    info = common_pb2.DeviceInfo(
        hostname="board-1", host_id="h-1", os="Linux 6.1", arch="aarch64", cpu_model="Cortex-A76", cpu_cores=4,
        cpu_max_freq_mhz=2400, memory_total_bytes=8 * 2**30, device_model="Pi 5", gpus=["VideoCore"],
        runtimes=[common_pb2.RuntimeInfo(name="onnxruntime", version="1.17.0", providers=["CPUExecutionProvider"])],
        power_sensors=["ina219"], thermal_zones=["cpu"], **device)
    h = agent_pb2.Hello(agent_id="pi-1", name="Pi one", device=info, agent_version="0.9", current_job_id="j-1",
                        spooled_job_ids=["j-0"], agent_secret="s3cret",
                        offers=[agent_pb2.PlatformOffer(runtime="onnxruntime", runtime_version="1.17.0",
                                                        provider="default", threads=4)])
    h.labels["rack"] = "r2"
    return h


def test_hello_to_dict_keeps_identity_jobs_and_parses_the_device_json():
    """Fails if the agent's secret (its identity proof), the jobs it reconnects with, its offers or its device
    JSON do not reach the fleet as the fleet reads them (hardware and probe as objects)."""
    d = convert.hello_to_dict(_hello(hardware_json='{"cpu_model": "Cortex-A76", "cores": 4, "soc": "bcm2712"}',
                                     probe_json='{"kernel": "6.1"}'))
    assert (d["agent_id"], d["name"], d["agent_secret"], d["agent_version"]) == ("pi-1", "Pi one", "s3cret", "0.9")
    assert (d["current_job_id"], d["spooled_job_ids"], d["labels"]) == ("j-1", ["j-0"], {"rack": "r2"})
    assert d["offers"] == [{"runtime": "onnxruntime", "runtime_version": "1.17.0", "provider": "default",
                            "threads": 4}]
    device = d["device"]
    assert device["hardware"] == {"cpu_model": "Cortex-A76", "cores": 4, "soc": "bcm2712"}
    assert device["probe"] == {"kernel": "6.1"}
    assert (device["host_id"], device["memory_total_bytes"], device["gpus"]) == ("h-1", 8 * 2**30, ["VideoCore"])
    assert device["runtimes"] == [{"name": "onnxruntime", "version": "1.17.0", "providers": ["CPUExecutionProvider"]}]
    json.dumps(d)  # the fleet stores it as JSON


def test_hello_without_hardware_json_falls_back_to_the_scalars_and_bad_json_is_invalid_argument():
    """Fails if an agent that sends no hardware JSON gets no platform identity, or if malformed device JSON
    surfaces as a JSONDecodeError (an INTERNAL error) instead of INVALID_ARGUMENT naming the field."""
    d = convert.hello_to_dict(_hello())
    assert d["device"]["hardware"] == {"arch": "aarch64", "cpu_model": "Cortex-A76", "cores": 4}
    assert d["device"]["probe"] == {} and d["agent_secret"] == "s3cret"
    assert convert.hello_to_dict(agent_pb2.Hello(agent_id="x"))["agent_secret"] == ""  # an old agent: none
    for field, text in (("hardware_json", "{"), ("probe_json", "[1]")):
        with pytest.raises(InvalidArgument, match=f"device.{field}"):
            convert.hello_to_dict(_hello(**{field: text}))


def test_measurement_optional_energy_and_power_stay_absent_through_the_stores_json():
    """Fails if an absent energy or power reading comes back as 0.0 (it would read as "measured: free"), or a
    present one is lost; samples and sessions must survive the same trip."""
    m = _measurement()
    d = json.loads(json.dumps(convert.measurement_to_dict(m)))
    assert d["energy_mj_per_inference"] is None and d["avg_power_w"] is None
    back = convert.measurement_from_dict(d)
    assert not back.HasField("energy_mj_per_inference") and not back.HasField("avg_power_w")
    assert list(back.samples_ms) == [1.9, 2.0, 2.0, 3.0] and len(back.sessions) == 2
    m.energy_mj_per_inference, m.avg_power_w = 0.0, 3.5  # a measured zero is a reading, not an absence
    d = json.loads(json.dumps(convert.measurement_to_dict(m)))
    assert (d["energy_mj_per_inference"], d["avg_power_w"]) == (0.0, 3.5)
    back = convert.measurement_from_dict(d)
    assert back.HasField("energy_mj_per_inference") and back == m


def test_device_to_proto_from_the_fleets_listing():
    """Fails if ListDevices drops what an agent said about itself, or why a device gets no work (suspended)."""
    info = convert.hello_to_dict(_hello(hardware_json='{"cores": 4}'))["device"]
    row = {"agent_id": "pi-1", "name": "Pi one", "info": info, "labels": {"rack": "r2"}, "connected": True,
           "state": "suspended", "current_job_id": "", "last_seen_unix": 12.5, "platform_ids": ["p1", "p2"],
           "suspended_reason": "job j-1 held 3700 s without a result; no work for 3600 s"}
    d = convert.device_to_proto(row)
    assert (d.agent_id, d.state, d.connected, d.last_seen_unix) == ("pi-1", "suspended", True, 12.5)
    assert d.suspended_reason.startswith("job j-1 held") and list(d.platform_ids) == ["p1", "p2"]
    expected = _hello(hardware_json='{"cores": 4}').device
    assert (d.info.host_id, d.info.cpu_cores, d.info.memory_total_bytes, list(d.info.gpus)) == (
        expected.host_id, expected.cpu_cores, expected.memory_total_bytes, list(expected.gpus))
    assert d.info.runtimes == expected.runtimes and json.loads(d.info.hardware_json) == {"cores": 4}
    assert dict(d.labels) == {"rack": "r2"}
    idle = convert.device_to_proto({**row, "state": "idle", "suspended_reason": None, "info": {}})
    assert idle.suspended_reason == "" and idle.info.hardware_json == "{}"


def test_agent_token_to_proto_carries_the_row_but_never_the_hash():
    """Fails if a token's binding, use or revocation is not shown, or its hash could leave the controller."""
    row = {"token_id": "at-1", "name": "lab", "agent_id": "pi-1", "created_unix": 1.0, "last_used_unix": 2.0,
           "revoked_unix": 0.0, "token_sha256": "ab" * 32}
    t = convert.agent_token_to_proto(row)
    assert (t.token_id, t.name, t.agent_id, t.created_unix, t.last_used_unix, t.revoked_unix) == (
        "at-1", "lab", "pi-1", 1.0, 2.0, 0.0)
    assert "token_sha256" not in {f.name for f in fleet_pb2.AgentToken.DESCRIPTOR.fields}
