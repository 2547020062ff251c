"""The controller's input bounds (controller/limits.py), the shared platform-name rule (fleetmeter/_names.py),
and the CSV reader's refusals that mirror them (modeler/dataset.py: read_csv).

Each refusal must name the field, so that whoever sent it can fix it; each acceptance case is the shape
real senders produce, so that a bound too tight would fail here before it refuses a real agent.
"""
from __future__ import annotations

import copy
import json
import math
import shutil

import pytest

from fleetmeter._names import MAX_PLATFORM_ID_CHARS, platform_name_problem
from fleetmeter.controller import convert, limits
from fleetmeter.errors import InvalidArgument
from fleetmeter.v1 import agent_pb2, common_pb2, fleet_pb2

NAN, INF = float("nan"), float("inf")


def refused(fn, *args, match: str, **kwargs) -> str:
    """The InvalidArgument message of ``fn(*args)``; fails unless it mentions ``match``."""
    with pytest.raises(InvalidArgument) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert match in message, message
    return message


# ------------------------------------------------------------------------------------------------ measurements
def measurement(**overrides) -> dict:
    """A successful reading as an agent sends it, through the same conversion the gateway uses."""
    m = common_pb2.Measurement(
        measurement_id="5f1c0e", job_id="sw-1-000001", agent_id="ag-1", platform_id="cpu-4c-ab12cd/onnxruntime-1.20/"
        "cpu/t1", model_sha256="ab" * 32, runtime="onnxruntime", runtime_version="1.20.1", provider="cpu",
        threads=1, latency_ms=common_pb2.LatencySummary(median=2.0, mean=2.1, p90=2.5, p99=3.0, std=0.2, min=1.9,
                                                        max=3.1, n=3, cv=0.1),
        samples_ms=[1.9, 2.0, 3.1], load_ms=12.0, first_run_ms=4.0, peak_rss_bytes=50_000_000,
        energy_mj_per_inference=0.8, avg_power_w=4.5, power_sensor="rapl", temps_c_before={"cpu": 41.0},
        temps_c_after={"cpu": 44.5}, started_at_unix=1.7e9, finished_at_unix=1.7e9 + 5, warmup_runs=5,
        cooldown_wait_s=0.5, session_spread=0.01, flags=["unstable"],
        operators=[common_pb2.OperatorProfile(node_name="/model/conv1/Conv", op_type="Conv", provider="CPU",
                                              input_shapes=["1x3x224x224"], output_shapes=["1x64x112x112"],
                                              median_us=120.0, mean_us=121.0, runs=10)],
        sessions=[common_pb2.SessionSummary(index=0, median_ms=2.0, n=3, load_ms=12.0, accepted=True,
                                            stop_reason="stable",
                                            interference=common_pb2.Interference(window_s=0.1, other_cpu_cores=0.0,
                                                                                 probe_slowdown=-0.02))],
        interference=common_pb2.Interference(window_s=0.1, other_cpu_cores=0.05, steal_share=0.0))
    record = convert.measurement_to_dict(m)
    for key, value in overrides.items():
        target = record
        *path, last = key.split(".")
        for part in path:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return record


def failed_measurement(kind: str = "unsupported_op", **overrides) -> dict:
    m = common_pb2.Measurement(measurement_id="f00d", job_id="sw-1-000002", agent_id="ag-1", failure_kind=kind,
                               failure_message="no kernel for op 'Foo'", started_at_unix=1.7e9,
                               finished_at_unix=1.7e9 + 1)
    return {**convert.measurement_to_dict(m), **overrides}


def test_real_readings_pass():
    """Fails if a bound refuses the shape agents actually send (success, each failure kind, no sensors)."""
    limits.validate_measurement(measurement())
    limits.validate_measurement(measurement(energy_mj_per_inference=None, avg_power_w=None, temps_c_before={},
                                            samples_ms=[2.0] * limits.MAX_SAMPLES_PER_READING))
    for kind in limits.FAILURE_KINDS:
        limits.validate_measurement(failed_measurement(kind))


@pytest.mark.parametrize("overrides, field", [
    ({"latency_ms.median": NAN}, "latency_ms.median must be a finite number > 0, got nan"),
    ({"latency_ms.median": 0.0}, "latency_ms.median"),
    ({"latency_ms.p99": INF}, "latency_ms.p99"),
    ({"latency_ms.min": -1.0}, "latency_ms.min"),
    ({"latency_ms.max": -INF}, "latency_ms.max"),
    ({"latency_ms.std": -0.1}, "latency_ms.std must be a finite number >= 0"),
    ({"latency_ms.cv": NAN}, "latency_ms.cv"),
    ({"latency_ms.n": 0}, "latency_ms.n must be an integer >= 1"),
    ({"latency_ms": None}, "latency_ms is missing"),
    ({"samples_ms": [1.0, NAN, 2.0]}, "samples_ms[1] must be a finite number > 0, got nan"),
    ({"samples_ms": [1.0, 0.0]}, "samples_ms[1]"),
    ({"samples_ms": [-2.0]}, "samples_ms[0]"),
    ({"samples_ms": [INF]}, "samples_ms[0]"),
    ({"samples_ms": [1.0] * (limits.MAX_SAMPLES_PER_READING + 1)}, "samples_ms has 100001 entries, at most 100000"),
    ({"energy_mj_per_inference": 0.0}, "energy_mj_per_inference must be a finite number > 0"),
    ({"energy_mj_per_inference": NAN}, "energy_mj_per_inference"),
    ({"avg_power_w": -1.0}, "avg_power_w"),
    ({"peak_rss_bytes": -1}, "peak_rss_bytes must be an integer >= 0"),
    ({"load_ms": NAN}, "load_ms"),
    ({"first_run_ms": -0.5}, "first_run_ms"),
    ({"cooldown_wait_s": INF}, "cooldown_wait_s"),
    ({"thermal_wait_s": -1.0}, "thermal_wait_s"),
    ({"temps_c_after": {"cpu": NAN}}, "temps_c_after['cpu']"),
    ({"temps_c_before": {f"zone{i}": 40.0 for i in range(257)}}, "temps_c_before has 257 entries"),
    ({"session_spread": NAN}, "session_spread"),
    ({"session_spread": -0.1}, "session_spread"),
    ({"operators": [measurement()["operators"][0]] * (limits.MAX_OPERATORS + 1)}, "operators has 20001 entries"),
    ({"operators.0.median_us": NAN}, "operators[0].median_us"),
    ({"operators.0.node_name": "n" * 5000}, "operators[0].node_name is 5000 characters"),
    ({"sessions": [measurement()["sessions"][0]] * (limits.MAX_SESSIONS + 1)}, "sessions has 65 entries"),
    ({"sessions.0.median_ms": NAN}, "sessions[0].median_ms"),
    ({"sessions.0.failure_kind": "meltdown"}, "sessions[0].failure_kind"),
    ({"sessions.0.interference.window_s": -1.0}, "sessions[0].interference.window_s"),
    ({"interference.steal_share": NAN}, "interference.steal_share"),
    ({"flags": ["x"] * 65}, "flags has 65 entries"),
    ({"flags": ["x" * 300]}, "flags[0] is 300 characters"),
    ({"failure_message": "x" * (limits.MAX_MESSAGE_CHARS + 1)}, "failure_message is 4097 characters"),
    ({"measurement_id": "m" * 257}, "measurement_id is 257 characters"),
    ({"platform_id": "p" * 257}, "platform_id"),
    ({"threads": -1}, "threads"),
    ({"failure_kind": "meltdown"}, "failure_kind must be empty (success) or one of"),
])
def test_bad_readings_are_refused_naming_the_field(overrides, field):
    """Fails if a NaN/negative/oversized field of a reading would be stored, or the error does not say which."""
    refused(limits.validate_measurement, measurement(**overrides), match=field)


@pytest.mark.parametrize("overrides, field", [
    ({"latency_ms": {"median": NAN}}, "latency_ms.median"),
    ({"samples_ms": [NAN]}, "samples_ms[0] must be a finite number >= 0"),
    ({"load_ms": -1.0}, "load_ms"),
    ({"failure_message": "x" * 10_000}, "failure_message"),
])
def test_a_failed_reading_needs_no_latency_but_what_it_carries_is_bounded(overrides, field):
    """Fails if a failed run may smuggle NaN or huge text into the store because it has no latency."""
    refused(limits.validate_measurement, failed_measurement(**overrides), match=field)


def test_errors_list_twenty_problems_then_a_count():
    """Fails if a record with thousands of bad values makes a message of thousands of lines (or hides the count)."""
    message = refused(limits.validate_measurement, measurement(samples_ms=[NAN] * 50), match="samples_ms[19]")
    assert "samples_ms[20]" not in message and message.endswith("and 30 more")
    assert message.startswith("measurement '5f1c0e': ")


def test_failure_kinds_cover_every_kind_the_agent_emits():
    """Fails if the agent gains a failure kind the controller would refuse (its results could never be stored)."""
    from fleetmeter.agent.runtimes import FAILURE_KINDS as RUNTIME_KINDS
    from fleetmeter.controller.fleet import DETERMINISTIC_FAILURES

    assert set(RUNTIME_KINDS) | {"model_unavailable", "agent_error"} == set(limits.FAILURE_KINDS)
    assert set(DETERMINISTIC_FAILURES) <= set(limits.FAILURE_KINDS)


# ------------------------------------------------------------------------------------------------ hellos
def hello_proto(**device_overrides) -> agent_pb2.Hello:
    from fleetmeter.agent.probe import hardware_identity, probe_device

    probe = probe_device()
    device = dict(hostname="lab-7", host_id="0123456789abcdef", os="Ubuntu 24.04", arch="x86_64",
                  cpu_model="Test CPU", cpu_cores=8, cpu_max_freq_mhz=3600.0, memory_total_bytes=16 << 30,
                  gpus=["NVIDIA T4"], power_sensors=["rapl"], thermal_zones=["x86_pkg_temp"],
                  runtimes=[common_pb2.RuntimeInfo(name="onnxruntime", version="1.20.1",
                                                   providers=["CPUExecutionProvider"])],
                  probe_json=json.dumps(probe.to_json_dict(), sort_keys=True, default=str),
                  hardware_json=json.dumps(hardware_identity(probe), sort_keys=True, default=str))
    device.update(device_overrides)
    return agent_pb2.Hello(agent_id="ag-0123456789abcdef", name="lab-7", device=common_pb2.DeviceInfo(**device),
                           offers=[agent_pb2.PlatformOffer(runtime="onnxruntime", runtime_version="1.20.1",
                                                           provider="cpu", threads=t) for t in (1, 4)],
                           labels={"site": "lab", "rack": "r1"}, agent_version="0.1.0",
                           spooled_job_ids=["sw-1-000001"], agent_secret="s" * 64)


def test_a_real_hello_passes():
    """Fails if a bound refuses what this machine's own agent would send."""
    limits.validate_hello(convert.hello_to_dict(hello_proto()))
    limits.validate_hello({"agent_id": "ag-1"})  # the minimum the fleet checks alone


def _set_paths(d: dict, overrides: dict) -> dict:
    """``d`` with each dotted path (``device.gpus.0``) set to its value."""
    for key, value in overrides.items():
        target = d
        *path, last = key.split(".")
        for part in path:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = value
    return d


def _hello(**overrides) -> dict:
    return _set_paths(convert.hello_to_dict(hello_proto()), overrides)


@pytest.mark.parametrize("overrides, field", [
    ({"agent_id": ""}, "agent_id must be 1-128 characters"),
    ({"agent_id": "../etc"}, "agent_id"),
    ({"agent_id": "-x"}, "agent_id"),
    ({"agent_id": "a" * 129}, "agent_id"),
    ({"agent_id": "a b"}, "agent_id"),
    ({"name": "n" * 257}, "name is 257 characters"),
    ({"device.hostname": "h" * 300}, "device.hostname"),
    ({"device.cpu_model": "c" * 300}, "device.cpu_model"),
    ({"device.cpu_max_freq_mhz": NAN}, "device.cpu_max_freq_mhz"),
    ({"device.gpus": ["g"] * 65}, "device.gpus has 65 entries"),
    ({"device.gpus": ["g" * 257]}, "device.gpus[0]"),
    ({"device.runtimes": [{"name": "x", "version": "1"}] * 33}, "device.runtimes has 33 entries"),
    ({"device.power_sensors": ["p"] * 257}, "device.power_sensors has 257"),
    ({"device.thermal_zones": ["t"] * 257}, "device.thermal_zones has 257"),
    ({"device.hardware": {"cores": NAN}}, "device.hardware.cores must be a finite number"),
    ({"device.probe": {"cpu": [1.0, INF]}}, "device.probe.cpu[1]"),
    ({"labels": {f"k{i}": "v" for i in range(65)}}, "labels has 65 entries"),
    ({"labels": {"k": "v" * 257}}, "labels['k']"),
    ({"labels": {"k" * 257: "v"}}, "labels key"),
    ({"offers": [{"runtime": "onnxruntime", "runtime_version": "1", "provider": "", "threads": 1}] * 33},
     "offers has 33 entries"),
    ({"offers.0.threads": 0}, "offers[0].threads must be an integer >= 1 and <= 1024"),
    ({"offers.1.threads": 1025}, "offers[1].threads"),
    ({"offers.0.runtime": "r" * 257}, "offers[0].runtime"),
    ({"spooled_job_ids": ["j"] * 10_001}, "spooled_job_ids has 10001 entries"),
    ({"agent_secret": "s" * 257}, "agent_secret"),
])
def test_bad_hellos_are_refused_naming_the_field(overrides, field):
    """Fails if an agent can register an oversized or malformed identity (every later page and row carries it)."""
    refused(limits.validate_hello, _hello(**overrides), match=field)


@pytest.mark.parametrize("field, text, match", [
    ("probe_json", "{", "device.probe_json is not valid JSON"),
    ("probe_json", "[1, 2]", "device.probe_json must be a JSON object, got list"),
    ("probe_json", '{"x": NaN}', "device.probe_json is not valid JSON (NaN"),
    ("probe_json", "[" * 100_000, "device.probe_json is not valid JSON (nested too deeply)"),
    ("probe_json", json.dumps({"x": "y" * limits.MAX_PROBE_JSON_BYTES}), "at most 262144 allowed"),
    ("hardware_json", "not json", "device.hardware_json is not valid JSON"),
    ("hardware_json", '"text"', "device.hardware_json must be a JSON object, got str"),
    ("hardware_json", '{"cores": Infinity}', "device.hardware_json"),
    ("hardware_json", json.dumps({"x": "y" * limits.MAX_HARDWARE_JSON_BYTES}), "at most 65536 allowed"),
])
def test_malformed_device_json_is_invalid_argument_naming_the_field(field, text, match):
    """Fails if a malformed hello's JSON surfaces as a JSONDecodeError/RecursionError (INTERNAL) instead of
    INVALID_ARGUMENT naming the field, or if an oversized blob is parsed at all."""
    refused(convert.hello_to_dict, hello_proto(**{field: text}), match=match)


# ------------------------------------------------------------------------------------------------ sweeps
def sweep(**overrides) -> dict:
    spec = fleet_pb2.SweepSpec(
        name="baseline", models=["ab" * 32], threads=[1, 4], repeats=2,
        platforms=fleet_pb2.PlatformSelector(runtimes=["onnxruntime"], labels={"site": "lab"}),
        settings=common_pb2.BenchSettings(warmup_runs=5, min_runs=20, min_duration_ms=500, max_runs=10_000,
                                          max_duration_ms=30_000, stable_rel_tol=0.01),
        inputs=[common_pb2.InputOverride(name="input", shape=[1, 3, 224, 224]),
                common_pb2.InputOverride(name="rate", fill=16000)],
        cooldown_s=1.0, max_start_temp_c=60, max_thermal_wait_s=120, reading=common_pb2.ReadingSettings(sessions=3))
    return _set_paths(convert.spec_to_dict(spec), overrides)


def test_good_sweeps_pass():
    """Fails if the sweep of the sweep-file docstring, an empty spec or a fixed-count spec is refused."""
    limits.validate_sweep_spec(sweep())
    limits.validate_sweep_spec({})
    limits.validate_sweep_spec(convert.spec_to_dict(fleet_pb2.SweepSpec(models=["m"])))
    # min_runs == max_runs with stable_rel_tol 0 is the agent's documented fixed count (agent/bench.py)
    limits.validate_sweep_spec(sweep(**{"settings.min_runs": 100, "settings.max_runs": 100,
                                        "settings.min_duration_ms": 0.0, "settings.stable_rel_tol": 0.0}))


@pytest.mark.parametrize("overrides, field", [
    ({"settings.max_runs": 0}, "settings.max_runs must be an integer >= 1"),
    ({"settings.min_runs": 0}, "settings.min_runs"),
    ({"settings.warmup_runs": -1}, "settings.warmup_runs"),
    ({"settings.min_runs": 50, "settings.max_runs": 10}, "settings.max_runs (10) must be >= settings.min_runs (50)"),
    ({"settings.max_duration_ms": 0.0}, "settings.max_duration_ms must be a finite number > 0"),
    ({"settings.max_duration_ms": NAN}, "settings.max_duration_ms"),
    ({"settings.min_duration_ms": INF}, "settings.min_duration_ms"),
    ({"settings.min_duration_ms": 40_000.0}, "settings.max_duration_ms (30000) must be >= settings.min_duration_ms"),
    ({"settings.stable_rel_tol": 1.5}, "settings.stable_rel_tol"),
    ({"settings.stable_rel_tol": NAN}, "settings.stable_rel_tol"),
    ({"settings.stable_rel_tol": -0.1}, "settings.stable_rel_tol"),
    ({"settings.max_runs": 50_000}, "samples per reading"),
    ({"reading.sessions": 11, "settings": {}}, "reading.sessions (11) allows 110000 samples"),
    ({"reading.sessions": 65}, "reading.sessions must be <= 64"),
    ({"reading.max_session_spread": NAN}, "reading.max_session_spread must be a finite number"),
    ({"cooldown_s": NAN}, "cooldown_s must be a finite number, got nan"),
    ({"cooldown_s": -1.0}, "cooldown_s must be a finite number >= 0"),
    ({"cooldown_s": 1e12}, "cooldown_s"),
    ({"max_thermal_wait_s": INF}, "max_thermal_wait_s"),
    ({"max_start_temp_c": 500.0}, "max_start_temp_c"),
    ({"repeat_sample": NAN}, "repeat_sample"),
    ({"inputs.0.shape": [1, 0, 224, 224]}, "inputs[0].shape[1] must be a positive integer, got 0"),
    ({"inputs.0.shape": [1, -3]}, "inputs[0].shape[1]"),
    ({"inputs.0.shape": [1] * 17}, "inputs[0].shape has 17 entries, at most 16"),
    ({"inputs.0.shape": [65536, 65536]}, "inputs[0].shape [65536, 65536] has 4294967296 elements"),
    ({"inputs.1.fill": NAN}, "inputs[1].fill"),
    ({"inputs": [{"name": "x", "shape": [1]}] * 257}, "inputs has 257 entries"),
    ({"name": "n" * 257}, "name is 257 characters"),
    ({"threads": [1, 5000]}, "threads[1] must be an integer <= 1024"),
    ({"platforms.labels": {"k": "v" * 300}}, "platforms.labels['k']"),
])
def test_bad_sweeps_are_refused_naming_the_field(overrides, field):
    """Fails if a sweep could make agents measure for ever, wait NaN seconds or allocate an absurd input."""
    refused(limits.validate_sweep_spec, sweep(**overrides), match=field)


def test_a_nan_is_reported_once():
    """Fails if one NaN produces two messages for the same field (the generic walk and the bound)."""
    message = refused(limits.validate_sweep_spec, sweep(cooldown_s=NAN), match="cooldown_s")
    assert message.count("cooldown_s") == 1, message


# ------------------------------------------------------------------------------------------------ imports
SHA = "cd" * 32


def row(line: int = 2, **overrides) -> dict:
    return {"line": line, "model_sha256": SHA, "platform": "pixel8-npu", "latency_ms": 1.5, "energy_mj": None,
            "peak_rss_bytes": None, "family": "", **overrides}


def test_good_import_rows_pass():
    """Fails if rows the CLI sends (optional columns absent or None) are refused."""
    limits.validate_import_rows([row(2), row(3, energy_mj=0.4, peak_rss_bytes=0, family="mlp"),
                                 {"line": 4, "model_sha256": SHA, "platform": "a:b+c@d=e_f.g-h", "latency_ms": 3}],
                                source="import:0123456789abcdef")


@pytest.mark.parametrize("bad, field", [
    ({"platform": "../../x"}, "line 2: platform must not have an empty, '.' or '..' part"),
    ({"platform": "a\\b"}, "line 2: platform may only use"),
    ({"platform": "/etc/x"}, "line 2: platform must not have an empty"),
    ({"platform": ""}, "line 2: platform must not be empty"),
    ({"platform": "lab\x00phone"}, "line 2: platform"),
    ({"platform": "lab\nphone"}, "line 2: platform"),
    ({"platform": "p" * (MAX_PLATFORM_ID_CHARS + 1)}, "line 2: platform is 129 characters"),
    ({"latency_ms": NAN}, "line 2: latency_ms must be a finite number > 0, got nan"),
    ({"latency_ms": INF}, "line 2: latency_ms"),
    ({"latency_ms": 0.0}, "line 2: latency_ms"),
    ({"latency_ms": -1.0}, "line 2: latency_ms"),
    ({"energy_mj": 0.0}, "line 2: energy_mj must be a finite number > 0"),
    ({"energy_mj": NAN}, "line 2: energy_mj"),
    ({"peak_rss_bytes": -1}, "line 2: peak_rss_bytes must be an integer >= 0"),
    ({"line": 0}, "rows[0].line must be an integer >= 1"),
    ({"model_sha256": "../x"}, "line 2: model_sha256 must be a sha256 hex digest"),
    ({"family": "f" * 300}, "line 2: family"),
])
def test_bad_import_rows_are_refused_naming_line_and_field(bad, field):
    """Fails if an import row with a path-like platform, a NaN or a negative number would be stored."""
    refused(limits.validate_import_rows, [{**row(2), **bad}, row(3)], match=field)


def test_duplicated_lines_are_refused_naming_them():
    """Fails if the same line twice in one request is accepted (the store would keep one and drop the other)."""
    message = refused(limits.validate_import_rows, [row(2), row(3), row(2, latency_ms=9.0)],
                      match="rows[2] duplicates rows[0]: both are line 2")
    assert "line 3" not in message


def test_too_many_rows_or_bad_source(monkeypatch):
    """Fails if the per-request row bound or the source bound is not enforced."""
    monkeypatch.setattr(limits, "MAX_IMPORT_ROWS", 3)
    refused(limits.validate_import_rows, [row(i) for i in range(2, 6)], match="rows has 4 entries, at most 3")
    refused(limits.validate_import_rows, [row(2)], source="s" * 300, match="source is 300 characters")


def test_many_bad_rows_list_twenty_then_a_count():
    message = refused(limits.validate_import_rows, [row(i, latency_ms=-1.0) for i in range(2, 52)],
                      match="line 21: latency_ms")
    assert "line 22:" not in message and message.endswith("; and 30 more")


def test_platform_name_rule_examples():
    """Fails if the shared rule drifts: what the CSV reader accepts, the controller must accept too."""
    for good in ("pixel8-npu-imported", "lab-phone", "a", "x" * MAX_PLATFORM_ID_CHARS, "jetson:orin@15W",
                 "rpi4+coral=usb", "v1.2_b", "pixel 7", "cpu-4c-ab12cd/onnxruntime-1.20/cpu/t1", "a..b"):
        assert platform_name_problem(good) is None, good
    for bad in ("", "../../x", "..", ".", "/a", "a//b", "a/./b", "a\\b", " pixel", "pixel /x", "tab\there", "é",
                "x" * 129, None):
        assert platform_name_problem(bad), bad


# ------------------------------------------------------------------------------------------------ CSV reader
@pytest.fixture()
def models(tmp_path):
    from fleetmeter.modeler.builtin import get_builtin_model

    for name in ("tiny_mlp", "tiny_squeeze"):
        shutil.copy(get_builtin_model(name, "onnx").path, tmp_path / f"{name}.onnx")
    return tmp_path


def test_csv_refuses_duplicated_rows_and_unsafe_platform_names(models):
    """Fails if a pasted line would count twice, or a platform name the server refuses passes the CLI's check
    (the user would learn it only after uploading every model)."""
    from fleetmeter.modeler.dataset import CsvImportError, FeatureCache, read_csv

    csv_path = models / "m.csv"
    csv_path.write_text("model,platform,latency_ms,energy_mj\n"
                        "tiny_mlp.onnx,lab-phone,1.5,0.5\n"       # line 2
                        "tiny_mlp.onnx,lab-phone,1.6,0.5\n"       # line 3: a real repeat (other value)
                        "tiny_mlp.onnx,lab-phone,1.50,0.5\n"      # line 4: duplicates line 2
                        "tiny_squeeze.onnx,lab-phone,1.5,0.5\n"   # line 5: other model
                        "tiny_mlp.onnx,lab-tablet,1.5,0.5\n"      # line 6: other platform
                        "tiny_mlp.onnx,../../x,1.5,\n"            # line 7: unsafe platform
                        f"{models / 'tiny_mlp.onnx'},lab-phone,1.6,0.5\n")  # line 8: same file, duplicates line 3
    with pytest.raises(CsvImportError) as info:
        read_csv(csv_path, cache=FeatureCache())
    problems = dict(info.value.problems)
    assert sorted(problems) == [4, 7, 8], problems
    assert problems[4].startswith("duplicates line 2") and problems[8].startswith("duplicates line 3")
    assert "platform must not have" in problems[7]


def test_csv_repeats_with_different_values_still_load(models):
    from fleetmeter.modeler.dataset import FeatureCache, read_csv

    csv_path = models / "ok.csv"
    csv_path.write_text("model,platform,latency_ms\ntiny_mlp.onnx,lab-phone,1.5\ntiny_mlp.onnx,lab-phone,1.7\n")
    assert [r.values["latency_ms"] for r in read_csv(csv_path, cache=FeatureCache())] == [1.5, 1.7]


def test_no_bound_check_mutates_its_input():
    """Fails if validation rewrites what it checks (the caller stores exactly what it passed)."""
    record = measurement()
    before = copy.deepcopy(record)
    limits.validate_measurement(record)
    assert json.dumps(record, sort_keys=True) == json.dumps(before, sort_keys=True)
    assert not math.isnan(record["latency_ms"]["median"])
