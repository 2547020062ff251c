"""The benchmark: one model, one runtime configuration, one reading.

Measurement protocol (see DESIGN.md, "Measurement protocol"):

1. The model file is hashed (sha256) and temperatures are read.
2. On Linux the process's peak-RSS counter is reset, then the model is
   loaded, timed as ``load_ms``.
3. Fixed-seed inputs are built once (:func:`~fleetmeter.agent.runtimes.make_inputs`),
   outside every timed region.
4. The first inference is timed on its own (``first_run_ms``; it pays for
   lazy allocation and any re-preparation at the benchmark's input shapes).
5. ``warmup_runs`` untimed runs follow (the first run is not one of them).
6. The timed loop (:func:`measure_latency`) runs with Python's garbage
   collector disabled and the power sensor, if any, covering exactly it.
7. Peak RSS and temperatures are read; the session is closed.

Any failure on the way (corrupt file, unsupported op, out of memory, bad
input, missing runtime) ends the benchmark with a :class:`BenchResult` whose
``failure_kind``/``failure_message`` say why: a failed run is a result,
not an exception.
"""
from __future__ import annotations

import gc
import logging
import math
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from fleetmeter._hashing import sha256_file

from ._checks import require_finite, require_ints
from .runtimes import RunFailure, Runtime, classify_failure, get_runtime, make_inputs, runtime_for_model

from .stats import summarize

__all__ = [
    "BenchResult",
    "BenchSettings",
    "EnergyWindow",
    "LoopOutcome",
    "PowerSensor",
    "measure_latency",
    "read_peak_rss_bytes",
    "reset_peak_rss",
    "run_benchmark",
    "sha256_file",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class EnergyWindow(Protocol):
    """Energy a sensor measured over one window (typing only)."""

    energy_j: float
    elapsed_s: float


class PowerSensor(Protocol):
    """Typing-only view of ``fleetmeter.agent.power``'s sensor seam.

    ``start()`` opens a measurement window, ``stop()`` closes it and returns
    what was measured, or None when nothing trustworthy was.
    """

    name: str

    def start(self) -> None: ...

    def stop(self) -> Optional[EnergyWindow]: ...


class WindowGuard(Protocol):
    """Typing-only view of ``fleetmeter.agent.interference.InterferenceGuard``:
    ``start()`` right before the timed loop, ``stop()`` right after it returns
    what else the machine did meanwhile (an object with ``to_dict()``)."""

    def start(self) -> None: ...

    def stop(self) -> Any: ...


@dataclass(frozen=True)
class BenchSettings:
    """How long to measure (the TVM ``number``/``repeat``/``min_repeat_ms`` knobs).

    Timed runs continue until *both* ``min_runs`` runs and
    ``min_duration_ms`` of timed looping are reached; from then on the loop
    stops as soon as the median is stable (see :func:`measure_latency`),
    and in any case at ``max_runs`` runs or ``max_duration_ms``, whichever
    comes first (the caps win over the minimums).  With
    ``stable_rel_tol = 0`` the early stop needs the two medians to be
    exactly equal; ``min_runs == max_runs`` with ``min_duration_ms = 0``
    gives a fixed run count.
    """

    warmup_runs: int = 5
    min_runs: int = 10
    min_duration_ms: float = 500.0
    max_runs: int = 10000
    max_duration_ms: float = 30000.0
    stable_rel_tol: float = 0.01

    def __post_init__(self) -> None:
        require_ints(self, ("warmup_runs", "min_runs", "max_runs"))
        require_finite(self, ("min_duration_ms", "max_duration_ms", "stable_rel_tol"))
        if self.warmup_runs < 0:
            raise ValueError(f"BenchSettings.warmup_runs must be >= 0, got {self.warmup_runs}")
        if self.min_runs < 1:
            raise ValueError(f"BenchSettings.min_runs must be >= 1, got {self.min_runs}")
        if self.max_runs < self.min_runs:
            raise ValueError(f"BenchSettings.max_runs ({self.max_runs}) < min_runs ({self.min_runs})")
        if self.min_duration_ms < 0:
            raise ValueError(f"BenchSettings.min_duration_ms must be >= 0, got {self.min_duration_ms}")
        if self.max_duration_ms < self.min_duration_ms:
            raise ValueError(
                f"BenchSettings.max_duration_ms ({self.max_duration_ms}) < "
                f"min_duration_ms ({self.min_duration_ms})"
            )
        if self.stable_rel_tol < 0:
            raise ValueError(f"BenchSettings.stable_rel_tol must be >= 0, got {self.stable_rel_tol}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------
# The timed loop


@dataclass(frozen=True)
class LoopOutcome:
    """Every timed sample (ms, in run order) and why the loop stopped:
    ``"stable"``, ``"max_runs"`` or ``"max_duration"``."""

    samples_ms: List[float]
    stop_reason: str


def _median_is_stable(samples_ms: Sequence[float], rel_tol: float) -> bool:
    values = np.asarray(samples_ms, dtype=np.float64)
    overall = float(np.median(values))
    recent = float(np.median(values[len(values) // 2:]))
    return abs(recent - overall) <= rel_tol * abs(overall)


def measure_latency(
    run_once: Callable[[], None],
    settings: BenchSettings,
    clock: Clock = time.perf_counter,
) -> LoopOutcome:
    """Time ``run_once`` repeatedly; ``clock`` returns seconds.

    Stopping rule, checked after each run:

    1. Cap: stop at ``max_runs`` samples, or once the loop has run for
       ``max_duration_ms`` (measured from the loop's start to the end of
       the last run).
    2. Minimum: never stop before both ``min_runs`` samples and
       ``min_duration_ms`` of looping.
    3. Early stop: once the minimum is met, stop when the median of the
       most recent half of the samples (``samples[n // 2:]``) is within
       ``stable_rel_tol`` (relative) of the median of all samples.  The
       check runs when the minimum is first met and then each time the
       sample count has grown by 10% (at least one run), which keeps its
       cost negligible.

    Python's garbage collector is disabled for the loop and restored to its
    previous state afterwards, even when ``run_once`` raises (callers may
    ``gc.collect()`` just before).  Every sample is kept.
    """
    samples: List[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        next_check: Optional[int] = None
        loop_start = clock()
        while True:
            t0 = clock()
            run_once()
            t1 = clock()
            samples.append((t1 - t0) * 1000.0)
            n = len(samples)
            elapsed_ms = (t1 - loop_start) * 1000.0
            if n >= settings.max_runs:
                return LoopOutcome(samples, "max_runs")
            if elapsed_ms >= settings.max_duration_ms:
                return LoopOutcome(samples, "max_duration")
            if n < settings.min_runs or elapsed_ms < settings.min_duration_ms:
                continue
            if next_check is None:
                next_check = n
            if n >= next_check:
                if _median_is_stable(samples, settings.stable_rel_tol):
                    return LoopOutcome(samples, "stable")
                next_check = n + max(1, n // 10)
    finally:
        if gc_was_enabled:
            gc.enable()


# --------------------------------------------------------------------------
# Memory

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS counter (Linux: ``5`` to clear_refs).

    Returns whether it worked; elsewhere, or without permission, the peak
    stays the process-lifetime peak.
    """
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def read_peak_rss_bytes() -> Optional[int]:
    """Peak resident set size of this process, in bytes.

    Linux: ``VmHWM`` from /proc/self/status (since the last
    :func:`reset_peak_rss`).  Elsewhere: ``getrusage(RUSAGE_SELF).ru_maxrss``,
    which is kilobytes on Linux but bytes on macOS (lifetime peak).
    """
    try:
        with open(_STATUS) as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    parts = line.split()
                    unit = parts[2].lower() if len(parts) > 2 else "kb"
                    scale = {"kb": 1024, "mb": 1024 ** 2, "b": 1}.get(unit, 1024)
                    return int(parts[1]) * scale
    except (OSError, ValueError, IndexError):
        pass
    try:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError):
        return None
    return int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024


# --------------------------------------------------------------------------
# Result


@dataclass(frozen=True)
class BenchResult:
    """One measurement record (the agent's JSON contract).

    ``latency_ms`` is the :class:`~fleetmeter.agent.stats.LatencySummary` of
    ``samples_ms`` as a dict (None on failure).  ``peak_rss_bytes`` is the
    process's peak RSS during load + run when ``peak_rss_reset`` is true,
    the process-lifetime peak otherwise.  Energy fields are None unless a
    power sensor measured the timed loop; they are never estimated.
    ``failure_kind`` is None on success, else one of
    :data:`~fleetmeter.agent.runtimes.FAILURE_KINDS`.
    """

    model_sha256: str
    runtime: str
    runtime_version: Optional[str]
    threads: int
    latency_ms: Optional[Dict[str, Any]]
    samples_ms: List[float]
    load_ms: Optional[float]
    first_run_ms: Optional[float]
    peak_rss_bytes: Optional[int]
    energy_mj_per_inference: Optional[float]
    avg_power_w: Optional[float]
    power_sensor: Optional[str]
    temps_c_before: Dict[str, float]
    temps_c_after: Dict[str, float]
    failure_kind: Optional[str]
    failure_message: Optional[str]
    # extras
    model_path: Optional[str] = None
    model_size_bytes: Optional[int] = None
    provider: Optional[str] = None
    runtime_config: Dict[str, Any] = field(default_factory=dict)
    input_shapes: Dict[str, List[int]] = field(default_factory=dict)
    seed: int = 0
    settings: Dict[str, Any] = field(default_factory=dict)
    warmup_runs: int = 0
    stop_reason: Optional[str] = None
    peak_rss_reset: bool = False
    cpu_affinity: Optional[List[int]] = None
    started_at_unix: Optional[float] = None
    finished_at_unix: Optional[float] = None
    interference: Optional[Dict[str, Any]] = None  # the guard's figures over the timed loop, when guarded

    @property
    def ok(self) -> bool:
        return self.failure_kind is None

    def to_json_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (plain lists, dicts, numbers, strings, None)."""
        return asdict(self)

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> "BenchResult":
        """Inverse of :meth:`to_json_dict`; unknown keys are ignored (newer
        agents may add fields), missing extras take their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# --------------------------------------------------------------------------
# The benchmark

def _read_temps(read_temps: Optional[Callable[[], Dict[str, float]]]) -> Dict[str, float]:
    if read_temps is None:
        return {}
    try:
        return {str(k): float(v) for k, v in dict(read_temps()).items()}
    except Exception:  # a sensor glitch must not lose the measurement
        logger.warning("reading temperatures failed", exc_info=True)
        return {}


def _cpu_affinity() -> Optional[List[int]]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _energy(
    sensor: Optional[PowerSensor], window: Optional[EnergyWindow], n: int
) -> Tuple[Optional[float], Optional[float]]:
    if sensor is None or window is None or n < 1:
        return None, None
    energy_j = float(window.energy_j)
    elapsed_s = float(window.elapsed_s)
    if not math.isfinite(energy_j) or energy_j < 0:
        logger.warning("power sensor %s reported energy %r J; ignored", sensor.name, energy_j)
        return None, None
    per_inference_mj = energy_j * 1000.0 / n
    avg_power_w = energy_j / elapsed_s if elapsed_s > 0 else None
    return per_inference_mj, avg_power_w


def _initial_state(
    path: str,
    runtime: Union[str, Runtime, None],
    threads: int,
    seed: int,
    settings: BenchSettings,
    power_sensor: Optional[PowerSensor],
) -> Dict[str, Any]:
    """The result's fields known before anything is measured."""
    return {
        "model_path": path,
        "threads": threads,
        "seed": seed,
        "settings": settings.to_dict(),
        "warmup_runs": settings.warmup_runs,
        "power_sensor": getattr(power_sensor, "name", None) if power_sensor is not None else None,
        "cpu_affinity": _cpu_affinity(),
        "started_at_unix": time.time(),
        "model_sha256": "",
        "runtime": runtime if isinstance(runtime, str) else getattr(runtime, "name", "") or "",
        "runtime_version": None,
        "samples_ms": [],
        "temps_c_before": {},
        "temps_c_after": {},
    }


_RESULT_DEFAULTS: Mapping[str, Any] = {
    "load_ms": None,
    "first_run_ms": None,
    "peak_rss_bytes": None,
    "latency_ms": None,
    "energy_mj_per_inference": None,
    "avg_power_w": None,
    "failure_kind": None,
    "failure_message": None,
}


def _finish(state: Dict[str, Any], failure: Optional[RunFailure] = None) -> BenchResult:
    """Stamp the end time and build the result; a failure drops the latency and energy figures."""
    state["finished_at_unix"] = time.time()
    if failure is not None:
        state["failure_kind"] = failure.kind
        state["failure_message"] = failure.message
        state["latency_ms"] = None
        state["energy_mj_per_inference"] = None
        state["avg_power_w"] = None
        logger.info("benchmark of %s failed (%s): %s", state["model_path"], failure.kind, failure.message)
    result = BenchResult(**{**_RESULT_DEFAULTS, **state})
    if failure is None:
        logger.info(
            "benchmark of %s: median %.4f ms over %d runs (%s)",
            result.model_path,
            result.latency_ms["median"] if result.latency_ms else float("nan"),
            len(result.samples_ms),
            result.stop_reason,
        )
    return result


def _identify_model(state: Dict[str, Any], path: str) -> None:
    """Size and sha256 of the model file (outside every timed region). Raises RunFailure."""
    try:
        state["model_size_bytes"] = os.path.getsize(path)
        state["model_sha256"] = sha256_file(path)
    except OSError as exc:
        raise RunFailure("load_error", f"cannot read model file {path}: {exc.strerror or exc}") from exc


def _resolve_runtime(state: Dict[str, Any], runtime: Union[str, Runtime, None], path: str) -> Runtime:
    """The runtime object for ``runtime`` (a name, an object, or None: by file). Raises RunFailure."""
    try:
        if runtime is None or isinstance(runtime, str):
            name = runtime or runtime_for_model(path)
            state["runtime"] = name
            rt: Runtime = get_runtime(name)
        else:
            rt = runtime
    except ValueError as exc:  # unknown runtime name or undetectable format
        kind = "runtime_missing" if runtime else "load_error"
        raise RunFailure(kind, str(exc)) from exc
    state["runtime"] = rt.name
    state["runtime_version"] = rt.version
    return rt


def _warm_up(
    session: Any, feeds: Any, settings: BenchSettings, clock: Clock, state: Dict[str, Any]
) -> Callable[[], None]:
    """Bind the inputs, time the first run on its own, then run the untimed warm-ups.

    Returns the one-inference callable the timed loop uses."""
    bind = getattr(session, "bind", None)
    run_once = bind(feeds) if bind is not None else (lambda: session.run(feeds))
    t0 = clock()
    run_once()
    state["first_run_ms"] = (clock() - t0) * 1000.0
    for _ in range(settings.warmup_runs):
        run_once()
    return run_once


def _start_sensor(sensor: Optional[PowerSensor], name: Optional[str]) -> bool:
    """Open the sensor's window; whether it started (a sensor fault must not lose the measurement)."""
    if sensor is None:
        return False
    try:
        sensor.start()
        return True
    except Exception:
        logger.warning("power sensor %s failed to start", name, exc_info=True)
        return False


def _stop_sensor(sensor: PowerSensor, name: Optional[str]) -> Optional[EnergyWindow]:
    try:
        return sensor.stop()
    except Exception:
        logger.warning("power sensor %s failed to stop", name, exc_info=True)
        return None


def _timed_sessions(
    run_once: Callable[[], None],
    settings: BenchSettings,
    clock: Clock,
    power_sensor: Optional[PowerSensor],
    guard: Optional[WindowGuard],
    state: Dict[str, Any],
) -> None:
    """The timed loop, with the power sensor's window around the guard's around exactly it;
    records the samples, their summary and the energy."""
    gc.collect()  # start the timed loop with no garbage pending
    window = None
    sensor_started = _start_sensor(power_sensor, state["power_sensor"])
    try:
        if guard is not None:
            guard.start()
        outcome = measure_latency(run_once, settings, clock)
        if guard is not None:
            state["interference"] = guard.stop().to_dict()
    finally:
        if sensor_started:
            window = _stop_sensor(power_sensor, state["power_sensor"])
    state["samples_ms"] = outcome.samples_ms
    state["stop_reason"] = outcome.stop_reason
    state["latency_ms"] = summarize(outcome.samples_ms).to_dict()
    energy, power = _energy(power_sensor if sensor_started else None, window, len(outcome.samples_ms))
    state["energy_mj_per_inference"] = energy
    state["avg_power_w"] = power


def _read_after_run(state: Dict[str, Any], read_temps: Optional[Callable[[], Dict[str, float]]]) -> None:
    state["peak_rss_bytes"] = read_peak_rss_bytes()
    state["temps_c_after"] = _read_temps(read_temps)


def _close(session: Any) -> None:
    if session is None:
        return
    try:
        session.close()
    except Exception:
        logger.warning("closing the session failed", exc_info=True)


def run_benchmark(
    model_path: "os.PathLike[str] | str",
    *,
    runtime: Union[str, Runtime, None] = None,
    threads: int = 1,
    provider: Optional[str] = None,
    settings: BenchSettings = BenchSettings(),
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    fills: Optional[Mapping[str, float]] = None,
    power_sensor: Optional[PowerSensor] = None,
    read_temps: Optional[Callable[[], Dict[str, float]]] = None,
    clock: Clock = time.perf_counter,
    seed: int = 0,
    guard: Optional[WindowGuard] = None,
) -> BenchResult:
    """Benchmark one model under the measurement protocol (module docstring).

    Args:
        model_path: the model file.
        runtime: a runtime name (``"onnxruntime"``, ``"litert"``), a
            :class:`~fleetmeter.agent.runtimes.Runtime` object, or None to
            pick by file content / extension.
        threads: intra-op threads (>= 1).
        provider: execution provider / delegate; None for the runtime's default.
        settings: how long to measure.
        shapes: input name -> shape, overriding dynamic (or static) dims.
        fills: input name -> constant value for that input.
        power_sensor: measures energy over the timed loop; None: no energy.
        read_temps: returns {zone: °C}; called before load and after the run.
        clock: seconds, monotonic; injected for tests.
        seed: seed of the generated inputs.
        guard: an interference guard started right before and stopped right
            after the timed loop (inside the power sensor's window); its
            figures become ``interference``.

    Returns:
        A :class:`BenchResult`; on failure ``failure_kind`` is set and the
        latency summary is None.  Never raises for a model that cannot be
        run here.

    Raises:
        ValueError: ``threads < 1`` (a caller bug, not a model property).
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    path = os.fspath(model_path)
    state = _initial_state(path, runtime, threads, seed, settings, power_sensor)
    try:
        _identify_model(state, path)
        rt = _resolve_runtime(state, runtime, path)
    except RunFailure as failure:
        return _finish(state, failure)

    state["temps_c_before"] = _read_temps(read_temps)
    state["peak_rss_reset"] = reset_peak_rss()
    session = None
    phase = "load"
    try:
        t0 = clock()
        session = rt.load(path, threads, provider)
        state["load_ms"] = (clock() - t0) * 1000.0
        state["provider"] = getattr(session, "provider", provider)
        state["runtime_config"] = dict(getattr(session, "config", {}) or {})

        phase = "inputs"
        feeds = make_inputs(session.inputs, shapes, fills, seed)
        state["input_shapes"] = {k: [int(d) for d in v.shape] for k, v in feeds.items()}

        phase = "run"
        run_once = _warm_up(session, feeds, settings, clock, state)
        _timed_sessions(run_once, settings, clock, power_sensor, guard, state)
    except Exception as exc:  # every failure of the model becomes data
        logger.debug("benchmark failed in phase %s", phase, exc_info=True)
        _read_after_run(state, read_temps)
        return _finish(state, classify_failure(exc, phase))
    finally:
        _close(session)
    _read_after_run(state, read_temps)
    return _finish(state)
