"""The benchmark loop and protocol, driven by a fake session and a fake clock.

Also: input generation and failure classification (no real runtime needed).
"""
from __future__ import annotations

import gc
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import numpy as np
import pytest

from fleetmeter.agent import runtimes
from fleetmeter.agent.bench import BenchResult, BenchSettings, measure_latency, run_benchmark
from fleetmeter.agent.runtimes import (
    FAILURE_KINDS,
    InputSpec,
    RunFailure,
    RuntimeMissingError,
    classify_failure,
    describe_runtimes,
    make_inputs,
    runtime_for_model,
)

from _support import FakeClock  # seconds from 100.0, moved by advance_ms (tests/ is on sys.path)

# --------------------------------------------------------------------------
# Fakes


class Script:
    """Per-run durations (ms): an explicit prefix, then the last value forever,
    or an infinite iterator."""

    def __init__(self, durations) -> None:
        self._it: Iterator[float] = iter(durations)
        self.last = None

    def next_ms(self) -> float:
        try:
            self.last = next(self._it)
        except StopIteration:
            pass
        return self.last


def loop(settings: BenchSettings, durations) -> "tuple[list[float], str]":
    clock = FakeClock()
    script = Script(durations)
    outcome = measure_latency(lambda: clock.advance_ms(script.next_ms()), settings, clock)
    return outcome.samples_ms, outcome.stop_reason


def fast(**kw) -> BenchSettings:
    base = dict(warmup_runs=0, min_runs=1, min_duration_ms=0.0, max_runs=100000, max_duration_ms=1e9,
                stable_rel_tol=0.01)
    base.update(kw)
    return BenchSettings(**base)


def stable_rule(samples: List[float], tol: float) -> bool:
    a = np.asarray(samples)
    return abs(np.median(a[len(a) // 2:]) - np.median(a)) <= tol * np.median(a)


# --------------------------------------------------------------------------
# Stopping rule


def test_stops_at_min_runs_when_already_stable():
    samples, reason = loop(fast(min_runs=20), itertools.repeat(1.0))
    assert len(samples) == 20, "constant latency must stop exactly when min_runs is reached"
    assert reason == "stable"
    assert samples == pytest.approx([1.0] * 20)


def test_min_duration_keeps_running_past_min_runs():
    # 10 ms a run: 95 ms of looping needs 10 runs even though min_runs is 2.
    samples, reason = loop(fast(min_runs=2, min_duration_ms=95.0), itertools.repeat(10.0))
    assert len(samples) == 10
    assert reason == "stable"


def test_min_runs_keeps_running_past_min_duration():
    samples, _ = loop(fast(min_runs=30, min_duration_ms=5.0), itertools.repeat(10.0))
    assert len(samples) == 30


def test_max_runs_caps_an_unstable_series():
    # Strictly increasing latency: the recent-half median never matches the overall one.
    samples, reason = loop(fast(min_runs=5, max_runs=50), itertools.count(1.0))
    assert reason == "max_runs"
    assert len(samples) == 50
    assert samples == pytest.approx([float(i) for i in range(1, 51)]), "every sample must be kept, in order"


def test_max_duration_caps_before_min_runs():
    # runs of 1, 2, 3 ... ms: after 10 runs 55 ms have elapsed.
    samples, reason = loop(fast(min_runs=1000, max_runs=2000, max_duration_ms=54.5), itertools.count(1.0))
    assert reason == "max_duration"
    assert len(samples) == 10


def test_early_stop_between_minimum_and_cap():
    # A noisy ramp for the first 20 runs, then a steady 5 ms.
    durations = itertools.chain([float(i) for i in range(1, 21)], itertools.repeat(5.0))
    samples, reason = loop(fast(min_runs=20, max_runs=10000), durations)
    assert reason == "stable"
    assert 20 < len(samples) < 10000
    assert stable_rule(samples, 0.01)
    assert not stable_rule(samples[:20], 0.01), "the test needs an unstable start"


def test_looser_tolerance_stops_sooner():
    durations = lambda: itertools.chain([float(i) for i in range(1, 21)], itertools.repeat(5.0))  # noqa: E731
    tight, _ = loop(fast(min_runs=20, stable_rel_tol=0.001), durations())
    loose, reason = loop(fast(min_runs=20, stable_rel_tol=0.5), durations())
    assert reason == "stable"
    assert len(loose) < len(tight)


def test_stability_is_checked_at_least_every_ten_percent():
    # Unstable ramp for 100 runs, then constant: the loop must notice
    # stability within 10% (+1) of the count at which it first holds.
    durations = itertools.chain([float(i) for i in range(1, 101)], itertools.repeat(50.0))
    samples, reason = loop(fast(min_runs=10, max_runs=100000), durations)
    assert reason == "stable"
    first_stable = next(n for n in range(10, len(samples) + 1) if stable_rule(samples[:n], 0.01))
    assert len(samples) <= first_stable + first_stable // 10 + 1


def test_gc_is_disabled_inside_the_loop_and_restored_after():
    assert gc.isenabled()
    seen: List[bool] = []
    clock = FakeClock()

    def run_once():
        seen.append(gc.isenabled())
        clock.advance_ms(1.0)

    measure_latency(run_once, fast(min_runs=5), clock)
    assert seen and not any(seen), "gc must be off during timed runs"
    assert gc.isenabled(), "gc must be re-enabled after the loop"


def test_gc_is_restored_when_a_run_raises():
    clock = FakeClock()
    calls = itertools.count()

    def run_once():
        clock.advance_ms(1.0)
        if next(calls) == 3:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        measure_latency(run_once, fast(min_runs=10), clock)
    assert gc.isenabled()


def test_gc_stays_off_if_it_was_off_before():
    gc.disable()
    try:
        clock = FakeClock()
        measure_latency(lambda: clock.advance_ms(1.0), fast(min_runs=3), clock)
        assert not gc.isenabled(), "the loop must restore the caller's gc state, not force it on"
    finally:
        gc.enable()


# --------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize(
    "kw",
    [
        {"warmup_runs": -1},
        {"min_runs": 0},
        {"min_runs": 10, "max_runs": 9},
        {"min_duration_ms": -1.0},
        {"min_duration_ms": 100.0, "max_duration_ms": 50.0},
        {"stable_rel_tol": -0.1},
        {"stable_rel_tol": float("nan")},
        {"min_runs": 2.5},
        {"warmup_runs": True},
    ],
)
def test_settings_reject_bad_values(kw):
    with pytest.raises(ValueError):
        BenchSettings(**kw)


def test_settings_defaults_and_frozen():
    s = BenchSettings()
    assert (s.warmup_runs, s.min_runs, s.min_duration_ms, s.max_runs, s.max_duration_ms, s.stable_rel_tol) == (
        5, 10, 500.0, 10000, 30000.0, 0.01)
    with pytest.raises(Exception):
        s.min_runs = 3  # type: ignore[misc]


# --------------------------------------------------------------------------
# run_benchmark with a fake runtime


@dataclass
class FakeWindow:
    energy_j: float
    elapsed_s: float


class FakeSensor:
    name = "fake-rapl"

    def __init__(self, session: "FakeSession", window: Optional[FakeWindow]) -> None:
        self.session = session
        self.window = window
        self.runs_at_start: Optional[int] = None
        self.runs_at_stop: Optional[int] = None

    def start(self) -> None:
        self.runs_at_start = self.session.runs

    def stop(self):
        self.runs_at_stop = self.session.runs
        return self.window


class FakeSession:
    def __init__(self, clock: FakeClock, durations: List[float], fail_at: Optional[int] = None,
                 error: Optional[BaseException] = None) -> None:
        self.inputs = [InputSpec("x", (None, 4), np.float32), InputSpec("ids", (2,), np.int64)]
        self.provider = "fake-cpu"
        self.config = {"threads": 1}
        self.clock = clock
        self.script = Script(durations)
        self.runs = 0
        self.fail_at = fail_at
        self.error = error or RuntimeError("kernel exploded")
        self.feeds_seen: List[Dict[str, np.ndarray]] = []
        self.closed = False

    def run(self, feeds) -> None:
        if self.fail_at is not None and self.runs == self.fail_at:
            raise self.error
        self.runs += 1
        self.feeds_seen.append(feeds)
        self.clock.advance_ms(self.script.next_ms())

    def close(self) -> None:
        self.closed = True


class FakeRuntime:
    name = "fakert"
    version = "9.9"

    def __init__(self, session: Optional[FakeSession], clock: FakeClock, load_ms: float = 12.0,
                 load_error: Optional[BaseException] = None) -> None:
        self.session = session
        self.clock = clock
        self.load_ms = load_ms
        self.load_error = load_error
        self.loaded_with = None

    def providers(self):
        return ["fake-cpu"]

    def load(self, model_path, threads, provider=None):
        self.loaded_with = (model_path, threads, provider)
        self.clock.advance_ms(self.load_ms)
        if self.load_error is not None:
            raise self.load_error
        return self.session


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.bin"
    path.write_bytes(b"not really a model" * 100)
    return path


def fixed(n: int, warmup: int = 2) -> BenchSettings:
    return BenchSettings(warmup_runs=warmup, min_runs=n, max_runs=n, min_duration_ms=0.0, max_duration_ms=1e9)


def bench(model_file, session, *, settings=None, **kw) -> BenchResult:
    clock = session.clock
    rt = FakeRuntime(session, clock)
    return run_benchmark(model_file, runtime=rt, settings=settings or fixed(20), clock=clock, **kw)


def test_protocol_times_load_first_run_and_samples_separately(model_file):
    clock = FakeClock()
    # first run 50 ms, 2 warm-ups of 7 ms, then 1 ms timed runs
    session = FakeSession(clock, [50.0, 7.0, 7.0, 1.0])
    result = bench(model_file, session, settings=fixed(20, warmup=2))
    assert result.failure_kind is None, result.failure_message
    assert result.load_ms == pytest.approx(12.0)
    assert result.first_run_ms == pytest.approx(50.0)
    assert result.samples_ms == pytest.approx([1.0] * 20), "warm-ups and the first run must not be samples"
    assert session.runs == 1 + 2 + 20
    assert result.latency_ms["n"] == 20 and result.latency_ms["median"] == pytest.approx(1.0)
    assert result.model_sha256 == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert (result.runtime, result.runtime_version, result.provider) == ("fakert", "9.9", "fake-cpu")
    assert result.runtime_config == {"threads": 1}
    assert result.input_shapes == {"x": [1, 4], "ids": [2]}
    assert session.closed


def test_inputs_are_built_once_and_reused(model_file):
    clock = FakeClock()
    session = FakeSession(clock, [1.0])
    bench(model_file, session, settings=fixed(5))
    assert all(f is session.feeds_seen[0] for f in session.feeds_seen), "inputs must be prepared once"


def test_energy_math_with_a_sensor(model_file):
    clock = FakeClock()
    session = FakeSession(clock, [1.0])
    sensor = FakeSensor(session, FakeWindow(energy_j=2.0, elapsed_s=4.0))
    result = bench(model_file, session, settings=fixed(20, warmup=3), power_sensor=sensor)
    assert result.energy_mj_per_inference == pytest.approx(2.0 * 1000 / 20)
    assert result.avg_power_w == pytest.approx(0.5)
    assert result.power_sensor == "fake-rapl"
    # the window covers exactly the timed loop: after first run + warm-ups, before anything else
    assert sensor.runs_at_start == 1 + 3
    assert sensor.runs_at_stop == 1 + 3 + 20


def test_no_sensor_means_no_energy(model_file):
    result = bench(model_file, FakeSession(FakeClock(), [1.0]))
    assert result.energy_mj_per_inference is None and result.avg_power_w is None
    assert result.power_sensor is None


def test_sensor_without_reading_means_no_energy(model_file):
    clock = FakeClock()
    session = FakeSession(clock, [1.0])
    result = bench(model_file, session, power_sensor=FakeSensor(session, None))
    assert result.energy_mj_per_inference is None and result.avg_power_w is None
    assert result.power_sensor == "fake-rapl"
    assert result.failure_kind is None


def test_temperatures_read_before_load_and_after_run(model_file):
    clock = FakeClock()
    session = FakeSession(clock, [1.0])
    reads: List[int] = []

    def read_temps():
        reads.append(session.runs)
        return {"cpu": 40.0 + len(reads)}

    result = bench(model_file, session, settings=fixed(10, warmup=0), read_temps=read_temps)
    assert reads == [0, 11]
    assert result.temps_c_before == {"cpu": 41.0}
    assert result.temps_c_after == {"cpu": 42.0}


def test_no_thermal_reader_gives_empty_dicts(model_file):
    result = bench(model_file, FakeSession(FakeClock(), [1.0]))
    assert result.temps_c_before == {} and result.temps_c_after == {}


def test_failure_in_timed_loop_is_a_result_and_cleans_up(model_file):
    clock = FakeClock()
    session = FakeSession(clock, [1.0], fail_at=8)
    sensor = FakeSensor(session, FakeWindow(1.0, 1.0))
    result = bench(model_file, session, settings=fixed(20, warmup=2), power_sensor=sensor)
    assert result.failure_kind == "runtime_error"
    assert "kernel exploded" in result.failure_message
    assert result.latency_ms is None
    assert result.energy_mj_per_inference is None and result.avg_power_w is None
    assert sensor.runs_at_stop is not None, "the sensor must be stopped even on failure"
    assert gc.isenabled()
    assert session.closed


def test_load_failure_is_classified(model_file):
    clock = FakeClock()
    rt = FakeRuntime(None, clock, load_error=RuntimeError(
        "Encountered unresolved custom op: MyFancyOp.\nSee instructions: ..."))
    result = run_benchmark(model_file, runtime=rt, settings=fixed(5), clock=clock)
    assert result.failure_kind == "unsupported_op"
    assert "MyFancyOp" in result.failure_message
    assert "\n" not in result.failure_message
    assert result.load_ms is None and result.latency_ms is None


def test_bad_input_names_are_an_invalid_input_result(model_file):
    result = bench(model_file, FakeSession(FakeClock(), [1.0]), shapes={"nope": (1, 4)})
    assert result.failure_kind == "invalid_input"
    assert "nope" in result.failure_message and "x" in result.failure_message


def test_missing_file_is_a_load_error_result(tmp_path):
    result = run_benchmark(tmp_path / "absent.onnx", settings=fixed(5))
    assert result.failure_kind == "load_error"
    assert "absent.onnx" in result.failure_message


def test_unknown_runtime_name_is_a_result(model_file):
    result = run_benchmark(model_file, runtime="tensorrt", settings=fixed(5))
    assert result.failure_kind == "runtime_missing"
    assert "tensorrt" in result.failure_message


def test_threads_must_be_positive(model_file):
    with pytest.raises(ValueError):
        run_benchmark(model_file, threads=0)


def test_json_round_trip_and_contract_keys(model_file):
    clock = FakeClock()
    session = FakeSession(clock, [1.0, 2.0, 3.0])
    result = bench(model_file, session, power_sensor=FakeSensor(session, FakeWindow(0.5, 0.1)))
    data = json.loads(json.dumps(result.to_json_dict()))
    contract = {
        "model_sha256", "runtime", "runtime_version", "threads", "latency_ms", "samples_ms", "load_ms",
        "first_run_ms", "peak_rss_bytes", "energy_mj_per_inference", "avg_power_w", "power_sensor",
        "temps_c_before", "temps_c_after", "failure_kind", "failure_message",
    }
    assert contract <= set(data)
    assert {"median", "mean", "p90", "p99", "std", "min", "max", "n"} <= set(data["latency_ms"])
    assert BenchResult.from_json_dict(data) == result
    assert BenchResult.from_json_dict({**data, "field_from_the_future": 1}) == result


def test_peak_rss_is_reported(model_file):
    result = bench(model_file, FakeSession(FakeClock(), [1.0]))
    assert result.peak_rss_bytes is not None and result.peak_rss_bytes > 1 << 20


# --------------------------------------------------------------------------
# Inputs


SPECS = [
    InputSpec("image", (None, 3, 8, 8), np.float32),
    InputSpec("ids", (None, 5), np.int64),
    InputSpec("mask", (1, 5), np.bool_),
    InputSpec("q", (4,), np.uint8),
    InputSpec("h", (2,), np.float16),
]


def test_dynamic_dims_default_to_one_and_dtypes_match():
    feeds = make_inputs(SPECS, {}, {})
    assert {k: v.shape for k, v in feeds.items()} == {
        "image": (1, 3, 8, 8), "ids": (1, 5), "mask": (1, 5), "q": (4,), "h": (2,)}
    assert {k: v.dtype for k, v in feeds.items()} == {s.name: s.dtype for s in SPECS}


def test_value_ranges():
    feeds = make_inputs(SPECS, {"image": (64, 3, 8, 8), "ids": (64, 5)}, {})
    img = feeds["image"]
    assert img.min() >= 0.0 and img.max() < 1.0 and img.std() > 0.1
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() < 10
    assert len(np.unique(feeds["ids"])) > 1
    assert feeds["mask"].dtype == np.bool_


def test_shapes_override_dynamic_dims():
    feeds = make_inputs(SPECS, {"image": (8, 3, 8, 8)}, {})
    assert feeds["image"].shape == (8, 3, 8, 8)
    assert feeds["ids"].shape == (1, 5)


def test_fills_set_a_constant():
    feeds = make_inputs(SPECS, {}, {"ids": 3, "mask": 1, "image": 0.25})
    assert np.all(feeds["ids"] == 3)
    assert np.all(feeds["mask"])
    assert np.all(feeds["image"] == np.float32(0.25))


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = make_inputs(SPECS, {}, {}, seed=0), make_inputs(SPECS, {}, {}, seed=0), make_inputs(SPECS, {}, {}, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["image"], c["image"])


@pytest.mark.parametrize("kw", [{"shapes": {"imagee": (1, 3, 8, 8)}}, {"fills": {"idz": 1.0}}])
def test_unknown_names_raise_and_list_valid_inputs(kw):
    with pytest.raises(ValueError) as err:
        make_inputs(SPECS, kw.get("shapes", {}), kw.get("fills", {}))
    assert "image" in str(err.value) and "ids" in str(err.value) and "mask" in str(err.value)


def test_rank_mismatch_and_bad_dims_raise():
    with pytest.raises(ValueError, match="rank"):
        make_inputs(SPECS, {"image": (1, 3, 8)}, {})
    with pytest.raises(ValueError):
        make_inputs(SPECS, {"image": (0, 3, 8, 8)}, {})


def test_ungeneratable_dtype_raises():
    with pytest.raises(ValueError, match="text"):
        make_inputs([InputSpec("text", (1,), object)], {}, {})


def test_input_spec_normalizes_dynamic_dims():
    spec = InputSpec("x", (-1, 3, None), "float32")
    assert spec.shape == (None, 3, None) and spec.dtype == np.float32


# --------------------------------------------------------------------------
# Failure classification


def _ort_error(type_name: str, message: str) -> Exception:
    """An exception shaped like onnxruntime's pybind error classes."""
    return type(type_name, (Exception,), {})(message)


@pytest.mark.parametrize(
    "exc, phase, kind, needle",
    [
        (_ort_error("Fail", "[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed:Fatal error: "
                            "com.example:NoSuchOp(-1) is not a registered function/op"),
         "load", "unsupported_op", "NoSuchOp (domain com.example)"),
        (_ort_error("InvalidGraph", '[ONNXRuntimeError] : 10 : INVALID_GRAPH : This is an invalid model. '
                                    'In Node, ("", Frobnicate, "", -1) : ("x": tensor(float),) -> ("y": '
                                    'tensor(float),) , Error No Op registered for Frobnicate with '
                                    'domain_version of 17'),
         "load", "unsupported_op", "Frobnicate (domain ai.onnx"),
        (_ort_error("NotImplemented", "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an "
                                      "implementation for Relu(14) node with name 'relu_1'"),
         "load", "unsupported_op", "Relu (version 14, node 'relu_1'"),
        (RuntimeError("Didn't find op for builtin opcode 'STABLEHLO_COMPOSITE' version '1'. An older "
                      "version of this builtin might be supported."),
         "load", "unsupported_op", "STABLEHLO_COMPOSITE"),
        (RuntimeError("Encountered unresolved custom op: FlexConv3D.\nSee instructions"),
         "load", "unsupported_op", "FlexConv3D"),
        (_ort_error("InvalidProtobuf", "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from x "
                                       "failed:Protobuf parsing failed."),
         "load", "load_error", "Protobuf parsing failed"),
        (ValueError("The model is not a valid Flatbuffer buffer"), "load", "load_error", "Flatbuffer"),
        (MemoryError(), "run", "out_of_memory", "out of memory"),
        (_ort_error("RuntimeException", "std::bad_alloc"), "run", "out_of_memory", "bad_alloc"),
        (_ort_error("InvalidArgument", "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid "
                                       "dimensions for input: x"),
         "run", "invalid_input", "invalid dimensions"),
        (ValueError("Cannot set tensor: Dimension mismatch."), "run", "invalid_input", "Dimension mismatch"),
        (ValueError("unknown input 'z'"), "inputs", "invalid_input", "unknown input"),
        (RuntimeError("something odd"), "run", "runtime_error", "something odd"),
    ],
)
def test_classify_failure(exc, phase, kind, needle):
    failure = classify_failure(exc, phase)
    assert failure.kind == kind
    assert needle in failure.message
    assert "\n" not in failure.message
    assert "[ONNXRuntimeError]" not in failure.message


def test_run_failure_kinds_are_closed():
    assert set(FAILURE_KINDS) == {"load_error", "unsupported_op", "out_of_memory", "invalid_input",
                                  "runtime_error", "runtime_missing"}
    with pytest.raises(ValueError):
        RunFailure("kaboom", "x")
    err = RuntimeMissingError("pip install 'fleetmeter[onnx]'")
    assert err.kind == "runtime_missing" and isinstance(err, ImportError) and isinstance(err, RunFailure)
    assert classify_failure(err, "load") is err


# --------------------------------------------------------------------------
# Runtime discovery


def test_runtime_for_model_reads_content_then_name(tmp_path):
    tfl = tmp_path / "blob"
    tfl.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 32)
    assert runtime_for_model(tfl) == "litert", "content-addressed blobs have no extension"
    onnx_blob = tmp_path / "blob2"
    onnx_blob.write_bytes(b"\x08\x08\x12\x07pytorch")
    assert runtime_for_model(onnx_blob) == "onnxruntime"
    named = tmp_path / "m.tflite"
    named.write_bytes(b"\x00" * 16)
    assert runtime_for_model(named) == "litert"
    named = tmp_path / "m.onnx"
    named.write_bytes(b"\x00" * 16)
    assert runtime_for_model(named) == "onnxruntime"
    other = tmp_path / "m.bin"
    other.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="onnxruntime"):
        runtime_for_model(other)


def test_describe_runtimes_survives_missing_and_broken_runtimes(monkeypatch):
    class Broken:
        def __init__(self):
            raise OSError("libfoo.so: cannot open shared object file")

    def missing():
        raise RuntimeMissingError("pip install 'fleetmeter[onnx]'")

    monkeypatch.setitem(runtimes._RUNTIME_CLASSES, "onnxruntime", missing)
    monkeypatch.setitem(runtimes._RUNTIME_CLASSES, "litert", Broken)
    assert describe_runtimes() == []


def test_missing_runtime_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ort(name, *args, **kwargs):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    with pytest.raises(RuntimeMissingError, match=r"fleetmeter\[onnx\]"):
        runtimes.get_runtime("onnxruntime")


def test_public_api_is_pinned():
    from fleetmeter.agent import bench, cli, runtimes as rt, stats

    assert sorted(stats.__all__) == ["LatencySummary", "summarize"]
    assert sorted(bench.__all__) == sorted([
        "BenchResult", "BenchSettings", "EnergyWindow", "LoopOutcome", "PowerSensor", "measure_latency",
        "read_peak_rss_bytes", "reset_peak_rss", "run_benchmark", "sha256_file"])
    assert sorted(rt.__all__) == sorted([
        "FAILURE_KINDS", "RUNTIME_NAMES", "InputSpec", "LiteRtRuntime", "OnnxRuntime", "RunFailure", "Runtime",
        "RuntimeMissingError", "Session", "classify_failure", "describe_runtimes", "get_runtime",
        "make_inputs", "runtime_for_model"])
    assert sorted(cli.__all__) == sorted([
        "EXIT_MODEL_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "format_result", "main"])
    for module in (stats, bench, rt, cli):
        assert all(hasattr(module, name) for name in module.__all__)
