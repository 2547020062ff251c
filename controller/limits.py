"""Bounds on everything that enters the controller, and the pure functions that check them.

Each ``validate_*`` function takes the plain dict (or list) that ``convert.py``
or a servicer builds from a request, and either returns ``None`` or raises one
:class:`~fleetmeter.errors.InvalidArgument` that names every offending field
(``latency_ms.median must be a finite number > 0, got nan``), the first
:data:`MAX_REPORTED_PROBLEMS` of them followed by ``and N more``. They run
before anything is stored, so an invalid request leaves no trace and the
service keeps running.

- :func:`validate_measurement` — an agent's reading (``convert.measurement_to_dict``);
- :func:`validate_hello` — an agent's hello (``convert.hello_to_dict``);
  :func:`json_object` parses its raw ``probe_json`` / ``hardware_json``;
- :func:`validate_sweep_spec` — a sweep (``convert.spec_to_dict``): the bounds
  and finiteness ``Fleet.submit_sweep`` and ``quality.validate_reading`` do not
  already check;
- :func:`validate_import_rows` — ``ImportMeasurements`` rows, the same rules the
  CLI's CSV reader applies (``modeler/dataset.py: read_csv``), the platform-name
  rule shared through :mod:`fleetmeter._names`.

No I/O, no clock, no gRPC: tests call them directly.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping, Optional, Sequence

from fleetmeter._names import platform_name_problem
from fleetmeter.errors import InvalidArgument

__all__ = [
    "FAILURE_KINDS", "MAX_REPORTED_PROBLEMS", "MAX_ID_CHARS", "MAX_MESSAGE_CHARS", "MAX_SAMPLES_PER_READING",
    "MAX_OPERATORS", "MAX_SESSIONS", "MAX_FLAGS", "MAX_IMPORT_ROWS", "MAX_PROBE_JSON_BYTES",
    "MAX_HARDWARE_JSON_BYTES", "AGENT_ID_PATTERN",
    "validate_measurement", "validate_hello", "validate_sweep_spec", "validate_import_rows", "json_object",
]

#: An error message lists this many problems, then "and N more".
MAX_REPORTED_PROBLEMS = 20

# ---------------------------------------------------------------- text
#: Ids, names, versions, hostnames, label keys and values, flags.
MAX_ID_CHARS = 256
#: A failure message (the agent cuts its own to 400 characters; other senders get some room).
MAX_MESSAGE_CHARS = 4096
#: Free text that is longer than an id by nature: ONNX node names, shape strings, guard reasons.
MAX_TEXT_CHARS = 1024

# ---------------------------------------------------------------- measurements
#: Raw latency samples of one reading. A reading's samples are its accepted sessions' samples: the agent
#: caps each session at ``max_runs`` (default 10,000, agent/bench.py) and accepts ``sessions`` of them
#: (default 3, agent/reading.py), so a default reading has at most 30,000; 100,000 leaves room for a
#: sweep that raises one of the two (``validate_sweep_spec`` keeps their product within this bound), and
#: is 800 KB of doubles per record in the store.
MAX_SAMPLES_PER_READING = 100_000
#: The agent's default ``max_runs`` and ``sessions``, for a sweep that leaves one of them to the agent.
AGENT_DEFAULT_MAX_RUNS = 10_000
AGENT_DEFAULT_SESSIONS = 3
#: Operator profiles of one reading (one per node of the model; large transformer graphs have ~10k).
MAX_OPERATORS = 20_000
#: Shapes listed per operator input/output (a Concat of many tensors).
MAX_OPERATOR_SHAPES = 1024
#: Sessions of one reading, re-measures included (``reading.max_sessions`` of a sweep is held to this too).
MAX_SESSIONS = 64
#: Flags of one reading, reasons of one interference record.
MAX_FLAGS = 64
#: Temperature readings per snapshot (one per thermal zone).
MAX_THERMAL_ZONES = 256
#: Threads of a platform offer / a sweep's thread selection.
MAX_THREADS = 1024

#: What ``Measurement.failure_kind`` may say: the runtime failures (agent/runtimes.py: FAILURE_KINDS) and
#: the two the agent's connection adds (agent/connection.py): it could not get the model, or it failed itself.
FAILURE_KINDS = ("load_error", "unsupported_op", "out_of_memory", "invalid_input", "runtime_error",
                 "runtime_missing", "model_unavailable", "agent_error")

# ---------------------------------------------------------------- hellos
AGENT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
MAX_GPUS = 64
MAX_RUNTIMES = 32
MAX_OFFERS = 32
MAX_PROVIDERS = 32
MAX_LABELS = 64
MAX_SENSORS = 256
MAX_SPOOLED_JOB_IDS = 10_000
#: Raw JSON of a hello's ``device.probe_json`` (the whole probe) and ``device.hardware_json``.
MAX_PROBE_JSON_BYTES = 256 * 1024
MAX_HARDWARE_JSON_BYTES = 64 * 1024

# ---------------------------------------------------------------- sweeps
MAX_SWEEP_MODELS = 100_000
MAX_SWEEP_PLATFORM_IDS = 10_000
MAX_SWEEP_INPUTS = 256
MAX_INPUT_RANK = 16
#: Elements of one input override (1 GiB of float32).
MAX_INPUT_ELEMENTS = 1 << 28
#: Longest duration a sweep may ask of one session (1 day) and longest wait (cool-down, thermal gate).
MAX_DURATION_MS = 86_400_000.0
MAX_WAIT_S = 86_400.0
#: Highest start temperature a thermal gate may ask for.
MAX_START_TEMP_C = 150.0
#: Warm-up runs of one session.
MAX_WARMUP_RUNS = 1_000_000

# ---------------------------------------------------------------- imports
#: Rows of one ImportMeasurements request (the 64 MiB message limit, fleetmeter/_net.py, holds a request
#: to about 700,000 rows anyway; this bound is the one the controller states).
MAX_IMPORT_ROWS = 1_000_000


class _Problems:
    """Collects ``field: what is wrong`` and raises them as one InvalidArgument (the first few, then a count)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.items: list[str] = []
        self.count = 0
        self.fields: set[str] = set()

    def add(self, message: str, field: Optional[str] = None) -> None:
        """One problem; a second one about the same ``field`` is left out (it says the same thing)."""
        if field is not None:
            if field in self.fields:
                return
            self.fields.add(field)
        self.count += 1
        if len(self.items) < MAX_REPORTED_PROBLEMS:
            self.items.append(message)

    def skip(self, n: int) -> None:
        """Count ``n`` more problems without spelling them out (beyond the ones shown anyway)."""
        self.count += n

    def raise_if_any(self) -> None:
        if not self.count:
            return
        more = self.count - len(self.items)
        raise InvalidArgument(f"{self.what}: " + "; ".join(self.items) + (f"; and {more} more" if more else ""))

    # -------------------------------------------------- checks (each adds at most one problem)
    def number(self, field: str, value: Any, *, low: Optional[float] = 0.0, strict: bool = False,
               high: Optional[float] = None) -> None:
        """A finite int/float (not a bool) that is >= ``low`` (> with ``strict``) and <= ``high``."""
        ok = _is_number(value) and math.isfinite(value) and (
            low is None or (value > low if strict else value >= low)) and (high is None or value <= high)
        if not ok:
            bounds = [] if low is None else [f"{'>' if strict else '>='} {low:g}"]
            bounds += [] if high is None else [f"<= {high:g}"]
            self.add(f"{field} must be a finite number{' ' + ' and '.join(bounds) if bounds else ''}, "
                     f"got {_show(value)}", field)

    def integer(self, field: str, value: Any, *, low: Optional[int] = 0, high: Optional[int] = None) -> None:
        ok = isinstance(value, int) and not isinstance(value, bool) and (low is None or value >= low) \
            and (high is None or value <= high)
        if not ok:
            bounds = ([] if low is None else [f">= {low}"]) + ([] if high is None else [f"<= {high}"])
            self.add(f"{field} must be an integer{' ' + ' and '.join(bounds) if bounds else ''}, got {_show(value)}",
                     field)

    def text(self, field: str, value: Any, max_chars: int = MAX_ID_CHARS) -> None:
        if not isinstance(value, str):
            self.add(f"{field} must be text, got {type(value).__name__}")
        elif len(value) > max_chars:
            self.add(f"{field} is {len(value)} characters long, at most {max_chars} allowed")

    def sequence(self, field: str, value: Any, max_items: int) -> Sequence:
        """``value`` as a list/tuple of at most ``max_items`` entries; ``()`` (after adding a problem) otherwise,
        so that a caller does not walk a million entries it has already refused."""
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)):
            self.add(f"{field} must be a list, got {type(value).__name__}")
            return ()
        if len(value) > max_items:
            self.add(f"{field} has {len(value)} entries, at most {max_items} allowed")
            return ()
        return value

    def texts(self, field: str, value: Any, max_items: int, max_chars: int = MAX_ID_CHARS) -> None:
        for i, item in enumerate(self.sequence(field, value, max_items)):
            self.text(f"{field}[{i}]", item, max_chars)

    def mapping(self, field: str, value: Any, max_items: int) -> Mapping:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(f"{field} must be a mapping, got {type(value).__name__}")
            return {}
        if len(value) > max_items:
            self.add(f"{field} has {len(value)} entries, at most {max_items} allowed")
            return {}
        return value

    def text_map(self, field: str, value: Any, max_items: int) -> None:
        for key, item in self.mapping(field, value, max_items).items():
            self.text(f"{field} key {_show(key)}", key)
            self.text(f"{field}[{_show(key)}]", item)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    """A short rendering of a refused value (never the whole of a huge string)."""
    if isinstance(value, str):
        return ascii(value[:64]) + ("..." if len(value) > 64 else "")
    if isinstance(value, float):
        return repr(value)
    text = repr(value)
    return text[:64] + ("..." if len(text) > 64 else "")


def _non_finite(value: Any, path: str, limit: int = MAX_REPORTED_PROBLEMS + 1) -> list[tuple[str, float]]:
    """``(path, number)`` of the NaN/inf numbers nested in ``value`` (dicts and lists, walked without
    recursion; the first ``limit`` found, sorted by path)."""
    found: list[tuple[str, float]] = []
    stack = [(path, value)]
    while stack and len(found) < limit:
        where, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            found.append((where, item))
        elif isinstance(item, Mapping):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))
    return sorted(found)


# ------------------------------------------------------------------------------------------------ measurements
_LATENCY_POSITIVE = ("median", "mean", "p90", "p99", "min", "max")
_LATENCY_NON_NEGATIVE = ("std", "cv")
_MEASUREMENT_IDS = ("measurement_id", "job_id", "agent_id", "platform_id", "model_sha256", "runtime",
                    "runtime_version", "provider", "power_sensor", "sweep_id", "job_kind")
_MEASUREMENT_NON_NEGATIVE = ("load_ms", "first_run_ms", "cooldown_wait_s", "thermal_wait_s", "started_at_unix",
                             "finished_at_unix")
_INTERFERENCE_NON_NEGATIVE = ("window_s", "speed_wait_s", "other_cpu_cores", "steal_share", "iowait_share",
                              "load_avg_1m", "cpu_freq_mhz_min", "cpu_freq_mhz_max")


def validate_measurement(record: Mapping[str, Any]) -> None:
    """Check one reading (the dict of ``convert.measurement_to_dict``); InvalidArgument naming each bad field.

    A successful reading (``failure_kind == ""``) needs ``latency_ms`` with ``median``, ``mean``, ``p90``,
    ``p99``, ``min``, ``max`` finite and > 0, ``std``/``cv`` finite and >= 0, ``n`` >= 1, and every
    ``samples_ms`` value finite and > 0. A failed one (``failure_kind`` one of :data:`FAILURE_KINDS`) needs
    no latency, but what it carries must be finite (latencies and samples >= 0) and bounded. Both: at most
    :data:`MAX_SAMPLES_PER_READING` samples, :data:`MAX_OPERATORS` operators, :data:`MAX_SESSIONS` sessions,
    :data:`MAX_FLAGS` flags; ids <= :data:`MAX_ID_CHARS` characters, ``failure_message`` <=
    :data:`MAX_MESSAGE_CHARS`; energy > 0 and average power >= 0 when present; temperatures finite.
    """
    p = _Problems(f"measurement {_show(record.get('measurement_id', ''))}")
    failure_kind = record.get("failure_kind") or ""
    failed = bool(failure_kind)
    if failed and failure_kind not in FAILURE_KINDS:
        p.add(f"failure_kind must be empty (success) or one of {', '.join(FAILURE_KINDS)}, got {_show(failure_kind)}")
    for key in _MEASUREMENT_IDS:
        if record.get(key) is not None:
            p.text(key, record[key])
    p.text("failure_message", record.get("failure_message") or "", MAX_MESSAGE_CHARS)
    for key in ("threads", "warmup_runs"):
        if record.get(key) is not None:
            p.integer(key, record[key], low=0, high=MAX_THREADS if key == "threads" else MAX_WARMUP_RUNS)
    for key in _MEASUREMENT_NON_NEGATIVE:
        if record.get(key) is not None:
            p.number(key, record[key])
    if record.get("peak_rss_bytes") is not None:
        p.integer("peak_rss_bytes", record["peak_rss_bytes"], low=0)
    if record.get("energy_mj_per_inference") is not None:
        p.number("energy_mj_per_inference", record["energy_mj_per_inference"], strict=True)
    if record.get("avg_power_w") is not None:
        p.number("avg_power_w", record["avg_power_w"])
    if record.get("session_spread") is not None:
        p.number("session_spread", record["session_spread"])

    latency = record.get("latency_ms")
    if latency is None:
        if not failed:
            p.add("latency_ms is missing (a successful reading needs its latency summary)")
    elif not isinstance(latency, Mapping):
        p.add(f"latency_ms must be a mapping, got {type(latency).__name__}")
    else:
        for key in _LATENCY_POSITIVE:
            if key in latency or not failed:
                p.number(f"latency_ms.{key}", latency.get(key), strict=not failed)
        for key in _LATENCY_NON_NEGATIVE:
            if key in latency or not failed:
                p.number(f"latency_ms.{key}", latency.get(key))
        if "n" in latency or not failed:
            p.integer("latency_ms.n", latency.get("n"), low=0 if failed else 1)

    samples = p.sequence("samples_ms", record.get("samples_ms"), MAX_SAMPLES_PER_READING)
    _check_samples(p, samples, strict=not failed)

    for key in ("temps_c_before", "temps_c_after"):
        for zone, temp in p.mapping(key, record.get(key), MAX_THERMAL_ZONES).items():
            p.text(f"{key} key {_show(zone)}", zone)
            p.number(f"{key}[{_show(zone)}]", temp, low=None)

    for i, op in enumerate(p.sequence("operators", record.get("operators"), MAX_OPERATORS)):
        _check_operator(p, f"operators[{i}]", op)
    for i, session in enumerate(p.sequence("sessions", record.get("sessions"), MAX_SESSIONS)):
        _check_session(p, f"sessions[{i}]", session)
    if record.get("interference") is not None:
        _check_interference(p, "interference", record["interference"])
    p.texts("flags", record.get("flags"), MAX_FLAGS)
    p.raise_if_any()


def _check_samples(p: _Problems, samples: Sequence, *, strict: bool) -> None:
    def ok(x: Any) -> bool:
        return _is_number(x) and (0 < x < math.inf if strict else 0 <= x < math.inf)

    inf = math.inf
    if all(type(x) is float and (0.0 < x < inf if strict else 0.0 <= x < inf) for x in samples):
        return  # the usual case (samples from the proto are floats), ~5x faster than the loop below
    bad = [i for i, x in enumerate(samples) if not ok(x)]
    for i in bad[:MAX_REPORTED_PROBLEMS]:
        p.add(f"samples_ms[{i}] must be a finite number {'>' if strict else '>='} 0, got {_show(samples[i])}")
    p.skip(max(0, len(bad) - MAX_REPORTED_PROBLEMS))


def _check_operator(p: _Problems, field: str, op: Any) -> None:
    if not isinstance(op, Mapping):
        p.add(f"{field} must be a mapping, got {type(op).__name__}")
        return
    p.text(f"{field}.node_name", op.get("node_name", ""), MAX_TEXT_CHARS)
    p.text(f"{field}.op_type", op.get("op_type", ""))
    p.text(f"{field}.provider", op.get("provider", ""))
    p.texts(f"{field}.input_shapes", op.get("input_shapes"), MAX_OPERATOR_SHAPES, MAX_TEXT_CHARS)
    p.texts(f"{field}.output_shapes", op.get("output_shapes"), MAX_OPERATOR_SHAPES, MAX_TEXT_CHARS)
    for key in ("median_us", "mean_us"):
        p.number(f"{field}.{key}", op.get(key, 0.0))
    p.integer(f"{field}.runs", op.get("runs", 0), low=0)


def _check_session(p: _Problems, field: str, s: Any) -> None:
    if not isinstance(s, Mapping):
        p.add(f"{field} must be a mapping, got {type(s).__name__}")
        return
    for key in ("index", "n"):
        p.integer(f"{field}.{key}", s.get(key, 0), low=0)
    for key in ("median_ms", "load_ms", "started_at_unix", "finished_at_unix"):
        p.number(f"{field}.{key}", s.get(key, 0.0))
    p.text(f"{field}.stop_reason", s.get("stop_reason") or "")
    kind = s.get("failure_kind") or ""
    if kind and kind not in FAILURE_KINDS:
        p.add(f"{field}.failure_kind must be empty or one of {', '.join(FAILURE_KINDS)}, got {_show(kind)}")
    if s.get("interference") is not None:
        _check_interference(p, f"{field}.interference", s["interference"])


def _check_interference(p: _Problems, field: str, d: Any) -> None:
    if not isinstance(d, Mapping):
        p.add(f"{field} must be a mapping, got {type(d).__name__}")
        return
    for key, value in d.items():
        if key in ("disturbed", "reasons") or value is None:
            continue
        # probe_slowdown is relative to the machine's recent best: a probe faster than that is negative.
        p.number(f"{field}.{key}", value, low=0.0 if key in _INTERFERENCE_NON_NEGATIVE else None)
    p.texts(f"{field}.reasons", d.get("reasons"), MAX_FLAGS, MAX_TEXT_CHARS)


# ------------------------------------------------------------------------------------------------ hellos
_DEVICE_TEXT = ("hostname", "host_id", "os", "arch", "cpu_model", "device_model")


def json_object(text: str, field: str, max_bytes: int) -> dict:
    """``text`` parsed as a JSON object of at most ``max_bytes`` UTF-8 bytes (NaN/Infinity refused);
    InvalidArgument naming ``field`` for anything else."""
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidArgument(f"{field} is {len(text.encode('utf-8', 'surrogatepass'))} bytes, "
                              f"at most {max_bytes} allowed")

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not a number JSON allows")

    try:
        value = json.loads(text, parse_constant=refuse)
    except RecursionError:
        raise InvalidArgument(f"{field} is not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        raise InvalidArgument(f"{field} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{field} must be a JSON object, got {type(value).__name__}")
    return value


def validate_hello(hello: Mapping[str, Any]) -> None:
    """Check an agent's hello (the dict of ``convert.hello_to_dict``); InvalidArgument naming each bad field.

    ``agent_id`` matches :data:`AGENT_ID_PATTERN`; names, hostnames, versions and other ids are at most
    :data:`MAX_ID_CHARS` characters; lists are bounded (gpus 64, runtimes 32, offers 32, labels 64, power
    sensors and thermal zones 256, spooled job ids 10,000); each offer's threads 1..:data:`MAX_THREADS`;
    numbers finite and >= 0, also inside ``device.hardware`` and ``device.probe`` (their raw JSON sizes are
    bounded where they are parsed, :func:`json_object`).
    """
    agent_id = hello.get("agent_id")
    p = _Problems(f"hello from agent {_show(agent_id if agent_id is not None else '')}")
    if not isinstance(agent_id, str) or not AGENT_ID_PATTERN.fullmatch(agent_id):
        p.add(f"agent_id must be 1-128 characters of letters, digits and . _ : - starting with a letter or "
              f"digit, got {_show(agent_id)}")
    for key in ("name", "agent_version", "current_job_id", "agent_secret"):
        if hello.get(key) is not None:
            p.text(key, hello[key])
    device = hello.get("device") or {}
    if not isinstance(device, Mapping):
        p.add(f"device must be a mapping, got {type(device).__name__}")
        device = {}
    for key in _DEVICE_TEXT:
        if device.get(key) is not None:
            p.text(f"device.{key}", device[key])
    for key in ("cpu_cores", "memory_total_bytes"):
        if device.get(key) is not None:
            p.integer(f"device.{key}", device[key], low=0)
    if device.get("cpu_max_freq_mhz") is not None:
        p.number("device.cpu_max_freq_mhz", device["cpu_max_freq_mhz"])
    p.texts("device.gpus", device.get("gpus"), MAX_GPUS)
    p.texts("device.power_sensors", device.get("power_sensors"), MAX_SENSORS)
    p.texts("device.thermal_zones", device.get("thermal_zones"), MAX_SENSORS)
    for i, runtime in enumerate(p.sequence("device.runtimes", device.get("runtimes"), MAX_RUNTIMES)):
        if not isinstance(runtime, Mapping):
            p.add(f"device.runtimes[{i}] must be a mapping, got {type(runtime).__name__}")
            continue
        p.text(f"device.runtimes[{i}].name", runtime.get("name", ""))
        p.text(f"device.runtimes[{i}].version", runtime.get("version", ""))
        p.texts(f"device.runtimes[{i}].providers", runtime.get("providers"), MAX_PROVIDERS)
    for key in ("hardware", "probe"):
        value = device.get(key)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            p.add(f"device.{key} must be a mapping, got {type(value).__name__}")
            continue
        for where, number in _non_finite(value, f"device.{key}"):
            p.add(f"{where} must be a finite number, got {number!r}", where)
    p.text_map("labels", hello.get("labels"), MAX_LABELS)
    for i, offer in enumerate(p.sequence("offers", hello.get("offers"), MAX_OFFERS)):
        if not isinstance(offer, Mapping):
            p.add(f"offers[{i}] must be a mapping, got {type(offer).__name__}")
            continue
        for key in ("runtime", "runtime_version", "provider"):
            p.text(f"offers[{i}].{key}", offer.get(key, ""))
        p.integer(f"offers[{i}].threads", offer.get("threads"), low=1, high=MAX_THREADS)
    p.texts("spooled_job_ids", hello.get("spooled_job_ids"), MAX_SPOOLED_JOB_IDS)
    p.raise_if_any()


# ------------------------------------------------------------------------------------------------ sweeps
def validate_sweep_spec(spec: Mapping[str, Any]) -> None:
    """Check a sweep spec's bounds (the dict of ``convert.spec_to_dict``); InvalidArgument naming each bad field.

    What this adds to ``Fleet.submit_sweep`` (models and platforms known, ``repeats`` >= 1, threads >= 1,
    non-negative waits) and ``quality.validate_reading`` (each ``reading`` field's type and lower bound):
    no NaN or infinity anywhere; ``settings``: ``warmup_runs`` >= 0, ``min_runs`` >= 1, ``max_runs`` >= 1 and
    >= ``min_runs``, ``min_duration_ms`` >= 0, ``max_duration_ms`` > 0 and >= ``min_duration_ms``,
    ``stable_rel_tol`` in [0, 1] (0: the two medians must be equal, agent/bench.py); ``max_runs`` times the
    reading's ``sessions`` (the agent's defaults where unset) at most :data:`MAX_SAMPLES_PER_READING`, so
    the readings a sweep asks for fit what the controller accepts; ``cooldown_s``, ``max_thermal_wait_s``
    <= 1 day, ``max_start_temp_c`` <= 150; ``reading.sessions``/``max_sessions`` <= :data:`MAX_SESSIONS`;
    inputs' shapes positive integers of rank <= 16 and at most 2**28 elements, at most 256 inputs; list and
    text sizes bounded.
    """
    p = _Problems("sweep spec")
    for where, value in _non_finite(spec, ""):
        p.add(f"{where} must be a finite number, got {value!r}", where)
    if spec.get("name") is not None:
        p.text("name", spec["name"])
    p.texts("models", spec.get("models"), MAX_SWEEP_MODELS)
    platforms = p.mapping("platforms", spec.get("platforms"), 16)
    p.texts("platforms.platform_ids", platforms.get("platform_ids"), MAX_SWEEP_PLATFORM_IDS)
    p.text_map("platforms.labels", platforms.get("labels"), MAX_LABELS)
    p.texts("platforms.runtimes", platforms.get("runtimes"), MAX_RUNTIMES)
    for i, t in enumerate(p.sequence("threads", spec.get("threads"), MAX_THREADS)):
        if not (isinstance(t, int) and not isinstance(t, bool) and t <= MAX_THREADS):
            p.add(f"threads[{i}] must be an integer <= {MAX_THREADS}, got {_show(t)}")

    settings = p.mapping("settings", spec.get("settings"), 16)
    if "warmup_runs" in settings:
        p.integer("settings.warmup_runs", settings["warmup_runs"], low=0, high=MAX_WARMUP_RUNS)
    for key in ("min_runs", "max_runs"):
        if key in settings:
            p.integer(f"settings.{key}", settings[key], low=1, high=MAX_SAMPLES_PER_READING)
    if "min_duration_ms" in settings:
        p.number("settings.min_duration_ms", settings["min_duration_ms"], high=MAX_DURATION_MS)
    if "max_duration_ms" in settings:
        p.number("settings.max_duration_ms", settings["max_duration_ms"], strict=True, high=MAX_DURATION_MS)
    if "stable_rel_tol" in settings:
        p.number("settings.stable_rel_tol", settings["stable_rel_tol"], high=1.0)
    if _ordered(settings, "min_runs", "max_runs") is False:
        p.add(f"settings.max_runs ({settings['max_runs']}) must be >= settings.min_runs ({settings['min_runs']})")
    if _ordered(settings, "min_duration_ms", "max_duration_ms") is False:
        p.add(f"settings.max_duration_ms ({settings['max_duration_ms']:g}) must be >= settings.min_duration_ms "
              f"({settings['min_duration_ms']:g})")

    reading = p.mapping("reading", spec.get("reading"), 64)
    for key in ("sessions", "max_sessions"):
        value = reading.get(key)
        if _is_number(value) and value > MAX_SESSIONS:
            p.add(f"reading.{key} must be <= {MAX_SESSIONS}, got {value}")
    max_runs = settings.get("max_runs", AGENT_DEFAULT_MAX_RUNS)
    sessions = reading.get("sessions", AGENT_DEFAULT_SESSIONS)
    if _is_number(max_runs) and _is_number(sessions) and max_runs * sessions > MAX_SAMPLES_PER_READING:
        p.add(f"settings.max_runs ({max_runs}{'' if 'max_runs' in settings else ', the agent default'}) x "
              f"reading.sessions ({sessions}{'' if 'sessions' in reading else ', the agent default'}) allows "
              f"{max_runs * sessions:g} samples per reading, more than the controller's limit of "
              f"{MAX_SAMPLES_PER_READING}")

    for key, high in (("cooldown_s", MAX_WAIT_S), ("max_thermal_wait_s", MAX_WAIT_S),
                      ("max_start_temp_c", MAX_START_TEMP_C)):
        if spec.get(key) is not None:
            p.number(key, spec[key], high=high)

    for i, item in enumerate(p.sequence("inputs", spec.get("inputs"), MAX_SWEEP_INPUTS)):
        field = f"inputs[{i}]"
        if not isinstance(item, Mapping):
            p.add(f"{field} must be a mapping, got {type(item).__name__}")
            continue
        p.text(f"{field}.name", item.get("name", ""))
        _check_shape(p, f"{field}.shape", item.get("shape"))
        if item.get("fill") is not None:
            p.number(f"{field}.fill", item["fill"], low=None)
    p.raise_if_any()


def _ordered(d: Mapping, low_key: str, high_key: str) -> Optional[bool]:
    """Whether ``d[low_key] <= d[high_key]`` (``None`` unless both are finite numbers)."""
    low, high = d.get(low_key), d.get(high_key)
    if not (_is_number(low) and _is_number(high) and math.isfinite(low) and math.isfinite(high)):
        return None
    return low <= high


def _check_shape(p: _Problems, field: str, shape: Any) -> None:
    dims = p.sequence(field, shape, MAX_INPUT_RANK)
    if isinstance(shape, (list, tuple)) and len(shape) > MAX_INPUT_RANK:
        return  # already reported as too many entries
    bad = [i for i, d in enumerate(dims) if not (isinstance(d, int) and not isinstance(d, bool) and d >= 1)]
    for i in bad:
        p.add(f"{field}[{i}] must be a positive integer, got {_show(dims[i])}")
    if dims and not bad:
        elements = math.prod(dims)
        if elements > MAX_INPUT_ELEMENTS:
            p.add(f"{field} {list(dims)} has {elements} elements, at most {MAX_INPUT_ELEMENTS} allowed")


# ------------------------------------------------------------------------------------------------ imports
_SHA256 = re.compile(r"[0-9a-f]{64}")


def validate_import_rows(rows: Sequence[Mapping[str, Any]], source: Optional[str] = None) -> None:
    """Check ImportMeasurements rows (``{line, model_sha256, platform, latency_ms, energy_mj, peak_rss_bytes,
    family}``, the optional ones may be absent or ``None``) and the request's ``source``.

    The CLI's CSV reader applies the same rules (``modeler/dataset.py: read_csv``): at most
    :data:`MAX_IMPORT_ROWS` rows; ``line`` >= 1 and unique within the request (the store tells imported
    measurements apart by source and line); ``model_sha256`` a sha256 hex digest; ``platform`` an imported
    platform name (:func:`fleetmeter._names.platform_name_problem`: no ``/``, no ``..``, no control
    characters); ``latency_ms`` finite > 0; ``energy_mj`` finite > 0 and ``peak_rss_bytes`` >= 0 when
    present; ``family`` <= :data:`MAX_ID_CHARS` characters. Each problem names its line and field.
    """
    p = _Problems("ImportMeasurements: nothing imported")
    if source is not None:
        p.text("source", source)
    if len(rows) > MAX_IMPORT_ROWS:
        p.add(f"rows has {len(rows)} entries, at most {MAX_IMPORT_ROWS} allowed per request")
        p.raise_if_any()
    first_index: dict[Any, int] = {}
    duplicates: dict[Any, list[int]] = {}
    # A request repeats few models and platforms over many rows: each distinct one is checked once.
    sha_ok: dict[Any, bool] = {}
    platform_problem: dict[Any, Optional[str]] = {}
    inf = math.inf
    for i, row in enumerate(rows):
        line = row.get("line")
        is_int = type(line) is int
        where = f"line {line}" if is_int else f"rows[{i}]"
        if not (is_int and line >= 1):
            p.add(f"rows[{i}].line must be an integer >= 1, got {_show(line)}")
        elif line in first_index:
            duplicates.setdefault(line, []).append(i)
        else:
            first_index[line] = i
        sha = row.get("model_sha256")
        key = sha if isinstance(sha, str) else None
        if key not in sha_ok:
            sha_ok[key] = isinstance(sha, str) and _SHA256.fullmatch(sha) is not None
        if not sha_ok[key]:
            p.add(f"{where}: model_sha256 must be a sha256 hex digest (64 lowercase hex digits), got {_show(sha)}")
        platform = row.get("platform")
        key = platform if isinstance(platform, str) else None
        if key not in platform_problem:
            platform_problem[key] = platform_name_problem(platform)
        if platform_problem[key]:
            p.add(f"{where}: platform {platform_problem[key]}")
        latency = row.get("latency_ms")
        if not (type(latency) is float and 0.0 < latency < inf):
            p.number(f"{where}: latency_ms", latency, strict=True)
        energy = row.get("energy_mj")
        if energy is not None and not (type(energy) is float and 0.0 < energy < inf):
            p.number(f"{where}: energy_mj", energy, strict=True)
        if row.get("peak_rss_bytes") is not None:
            p.integer(f"{where}: peak_rss_bytes", row["peak_rss_bytes"], low=0)
        family = row.get("family")
        if family is not None and not (type(family) is str and len(family) <= MAX_ID_CHARS):
            p.text(f"{where}: family", family)
    for line, later in duplicates.items():
        first = first_index[line]
        for i in later:
            p.add(f"rows[{i}] duplicates rows[{first}]: both are line {line} (a line is imported once)")
    p.raise_if_any()
