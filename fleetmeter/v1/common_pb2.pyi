from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RuntimeInfo(_message.Message):
    __slots__ = ("name", "version", "providers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ...) -> None: ...

class DeviceInfo(_message.Message):
    __slots__ = ("hostname", "host_id", "os", "arch", "cpu_model", "cpu_cores", "cpu_max_freq_mhz", "memory_total_bytes", "device_model", "gpus", "runtimes", "power_sensors", "thermal_zones", "probe_json", "hardware_json")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    CPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    CPU_MAX_FREQ_MHZ_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MODEL_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    POWER_SENSORS_FIELD_NUMBER: _ClassVar[int]
    THERMAL_ZONES_FIELD_NUMBER: _ClassVar[int]
    PROBE_JSON_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_JSON_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    host_id: str
    os: str
    arch: str
    cpu_model: str
    cpu_cores: int
    cpu_max_freq_mhz: float
    memory_total_bytes: int
    device_model: str
    gpus: _containers.RepeatedScalarFieldContainer[str]
    runtimes: _containers.RepeatedCompositeFieldContainer[RuntimeInfo]
    power_sensors: _containers.RepeatedScalarFieldContainer[str]
    thermal_zones: _containers.RepeatedScalarFieldContainer[str]
    probe_json: str
    hardware_json: str
    def __init__(self, hostname: _Optional[str] = ..., host_id: _Optional[str] = ..., os: _Optional[str] = ..., arch: _Optional[str] = ..., cpu_model: _Optional[str] = ..., cpu_cores: _Optional[int] = ..., cpu_max_freq_mhz: _Optional[float] = ..., memory_total_bytes: _Optional[int] = ..., device_model: _Optional[str] = ..., gpus: _Optional[_Iterable[str]] = ..., runtimes: _Optional[_Iterable[_Union[RuntimeInfo, _Mapping]]] = ..., power_sensors: _Optional[_Iterable[str]] = ..., thermal_zones: _Optional[_Iterable[str]] = ..., probe_json: _Optional[str] = ..., hardware_json: _Optional[str] = ...) -> None: ...

class BenchSettings(_message.Message):
    __slots__ = ("warmup_runs", "min_runs", "min_duration_ms", "max_runs", "max_duration_ms", "stable_rel_tol")
    WARMUP_RUNS_FIELD_NUMBER: _ClassVar[int]
    MIN_RUNS_FIELD_NUMBER: _ClassVar[int]
    MIN_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNS_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    STABLE_REL_TOL_FIELD_NUMBER: _ClassVar[int]
    warmup_runs: int
    min_runs: int
    min_duration_ms: float
    max_runs: int
    max_duration_ms: float
    stable_rel_tol: float
    def __init__(self, warmup_runs: _Optional[int] = ..., min_runs: _Optional[int] = ..., min_duration_ms: _Optional[float] = ..., max_runs: _Optional[int] = ..., max_duration_ms: _Optional[float] = ..., stable_rel_tol: _Optional[float] = ...) -> None: ...

class ReadingSettings(_message.Message):
    __slots__ = ("sessions", "max_sessions", "max_session_spread", "max_other_cpu_cores", "max_steal_share", "max_disturbed_reruns", "isolate", "session_min_duration_ms", "max_probe_slowdown", "max_speed_wait_s")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSION_SPREAD_FIELD_NUMBER: _ClassVar[int]
    MAX_OTHER_CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MAX_STEAL_SHARE_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTURBED_RERUNS_FIELD_NUMBER: _ClassVar[int]
    ISOLATE_FIELD_NUMBER: _ClassVar[int]
    SESSION_MIN_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_PROBE_SLOWDOWN_FIELD_NUMBER: _ClassVar[int]
    MAX_SPEED_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    sessions: int
    max_sessions: int
    max_session_spread: float
    max_other_cpu_cores: float
    max_steal_share: float
    max_disturbed_reruns: int
    isolate: bool
    session_min_duration_ms: float
    max_probe_slowdown: float
    max_speed_wait_s: float
    def __init__(self, sessions: _Optional[int] = ..., max_sessions: _Optional[int] = ..., max_session_spread: _Optional[float] = ..., max_other_cpu_cores: _Optional[float] = ..., max_steal_share: _Optional[float] = ..., max_disturbed_reruns: _Optional[int] = ..., isolate: _Optional[bool] = ..., session_min_duration_ms: _Optional[float] = ..., max_probe_slowdown: _Optional[float] = ..., max_speed_wait_s: _Optional[float] = ...) -> None: ...

class Interference(_message.Message):
    __slots__ = ("window_s", "other_cpu_cores", "steal_share", "iowait_share", "load_avg_1m", "cpu_freq_mhz_min", "cpu_freq_mhz_max", "disturbed", "reasons", "probe_slowdown", "speed_wait_s")
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    OTHER_CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    STEAL_SHARE_FIELD_NUMBER: _ClassVar[int]
    IOWAIT_SHARE_FIELD_NUMBER: _ClassVar[int]
    LOAD_AVG_1M_FIELD_NUMBER: _ClassVar[int]
    CPU_FREQ_MHZ_MIN_FIELD_NUMBER: _ClassVar[int]
    CPU_FREQ_MHZ_MAX_FIELD_NUMBER: _ClassVar[int]
    DISTURBED_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    PROBE_SLOWDOWN_FIELD_NUMBER: _ClassVar[int]
    SPEED_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    window_s: float
    other_cpu_cores: float
    steal_share: float
    iowait_share: float
    load_avg_1m: float
    cpu_freq_mhz_min: float
    cpu_freq_mhz_max: float
    disturbed: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    probe_slowdown: float
    speed_wait_s: float
    def __init__(self, window_s: _Optional[float] = ..., other_cpu_cores: _Optional[float] = ..., steal_share: _Optional[float] = ..., iowait_share: _Optional[float] = ..., load_avg_1m: _Optional[float] = ..., cpu_freq_mhz_min: _Optional[float] = ..., cpu_freq_mhz_max: _Optional[float] = ..., disturbed: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ..., probe_slowdown: _Optional[float] = ..., speed_wait_s: _Optional[float] = ...) -> None: ...

class SessionSummary(_message.Message):
    __slots__ = ("index", "median_ms", "n", "load_ms", "started_at_unix", "finished_at_unix", "interference", "accepted", "stop_reason", "failure_kind")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_MS_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    INTERFERENCE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_KIND_FIELD_NUMBER: _ClassVar[int]
    index: int
    median_ms: float
    n: int
    load_ms: float
    started_at_unix: float
    finished_at_unix: float
    interference: Interference
    accepted: bool
    stop_reason: str
    failure_kind: str
    def __init__(self, index: _Optional[int] = ..., median_ms: _Optional[float] = ..., n: _Optional[int] = ..., load_ms: _Optional[float] = ..., started_at_unix: _Optional[float] = ..., finished_at_unix: _Optional[float] = ..., interference: _Optional[_Union[Interference, _Mapping]] = ..., accepted: _Optional[bool] = ..., stop_reason: _Optional[str] = ..., failure_kind: _Optional[str] = ...) -> None: ...

class InputOverride(_message.Message):
    __slots__ = ("name", "shape", "fill")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    FILL_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    fill: float
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., fill: _Optional[float] = ...) -> None: ...

class LatencySummary(_message.Message):
    __slots__ = ("median", "mean", "p90", "p99", "std", "min", "max", "n", "cv")
    MEDIAN_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    P90_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    CV_FIELD_NUMBER: _ClassVar[int]
    median: float
    mean: float
    p90: float
    p99: float
    std: float
    min: float
    max: float
    n: int
    cv: float
    def __init__(self, median: _Optional[float] = ..., mean: _Optional[float] = ..., p90: _Optional[float] = ..., p99: _Optional[float] = ..., std: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., n: _Optional[int] = ..., cv: _Optional[float] = ...) -> None: ...

class Measurement(_message.Message):
    __slots__ = ("measurement_id", "job_id", "agent_id", "platform_id", "model_sha256", "runtime", "runtime_version", "provider", "threads", "latency_ms", "samples_ms", "load_ms", "first_run_ms", "peak_rss_bytes", "energy_mj_per_inference", "avg_power_w", "power_sensor", "temps_c_before", "temps_c_after", "failure_kind", "failure_message", "started_at_unix", "finished_at_unix", "sweep_id", "warmup_runs", "cooldown_wait_s", "thermal_wait_s", "thermal_gate_timed_out", "operators", "sessions", "session_spread", "interference", "flags", "job_kind")
    class TempsCBeforeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TempsCAfterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MEASUREMENT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_MS_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_RUN_MS_FIELD_NUMBER: _ClassVar[int]
    PEAK_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENERGY_MJ_PER_INFERENCE_FIELD_NUMBER: _ClassVar[int]
    AVG_POWER_W_FIELD_NUMBER: _ClassVar[int]
    POWER_SENSOR_FIELD_NUMBER: _ClassVar[int]
    TEMPS_C_BEFORE_FIELD_NUMBER: _ClassVar[int]
    TEMPS_C_AFTER_FIELD_NUMBER: _ClassVar[int]
    FAILURE_KIND_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RUNS_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    THERMAL_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    THERMAL_GATE_TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    OPERATORS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    SESSION_SPREAD_FIELD_NUMBER: _ClassVar[int]
    INTERFERENCE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    JOB_KIND_FIELD_NUMBER: _ClassVar[int]
    measurement_id: str
    job_id: str
    agent_id: str
    platform_id: str
    model_sha256: str
    runtime: str
    runtime_version: str
    provider: str
    threads: int
    latency_ms: LatencySummary
    samples_ms: _containers.RepeatedScalarFieldContainer[float]
    load_ms: float
    first_run_ms: float
    peak_rss_bytes: int
    energy_mj_per_inference: float
    avg_power_w: float
    power_sensor: str
    temps_c_before: _containers.ScalarMap[str, float]
    temps_c_after: _containers.ScalarMap[str, float]
    failure_kind: str
    failure_message: str
    started_at_unix: float
    finished_at_unix: float
    sweep_id: str
    warmup_runs: int
    cooldown_wait_s: float
    thermal_wait_s: float
    thermal_gate_timed_out: bool
    operators: _containers.RepeatedCompositeFieldContainer[OperatorProfile]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionSummary]
    session_spread: float
    interference: Interference
    flags: _containers.RepeatedScalarFieldContainer[str]
    job_kind: str
    def __init__(self, measurement_id: _Optional[str] = ..., job_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., platform_id: _Optional[str] = ..., model_sha256: _Optional[str] = ..., runtime: _Optional[str] = ..., runtime_version: _Optional[str] = ..., provider: _Optional[str] = ..., threads: _Optional[int] = ..., latency_ms: _Optional[_Union[LatencySummary, _Mapping]] = ..., samples_ms: _Optional[_Iterable[float]] = ..., load_ms: _Optional[float] = ..., first_run_ms: _Optional[float] = ..., peak_rss_bytes: _Optional[int] = ..., energy_mj_per_inference: _Optional[float] = ..., avg_power_w: _Optional[float] = ..., power_sensor: _Optional[str] = ..., temps_c_before: _Optional[_Mapping[str, float]] = ..., temps_c_after: _Optional[_Mapping[str, float]] = ..., failure_kind: _Optional[str] = ..., failure_message: _Optional[str] = ..., started_at_unix: _Optional[float] = ..., finished_at_unix: _Optional[float] = ..., sweep_id: _Optional[str] = ..., warmup_runs: _Optional[int] = ..., cooldown_wait_s: _Optional[float] = ..., thermal_wait_s: _Optional[float] = ..., thermal_gate_timed_out: _Optional[bool] = ..., operators: _Optional[_Iterable[_Union[OperatorProfile, _Mapping]]] = ..., sessions: _Optional[_Iterable[_Union[SessionSummary, _Mapping]]] = ..., session_spread: _Optional[float] = ..., interference: _Optional[_Union[Interference, _Mapping]] = ..., flags: _Optional[_Iterable[str]] = ..., job_kind: _Optional[str] = ...) -> None: ...

class OperatorProfile(_message.Message):
    __slots__ = ("node_name", "op_type", "provider", "input_shapes", "output_shapes", "median_us", "mean_us", "runs")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    OP_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHAPES_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_US_FIELD_NUMBER: _ClassVar[int]
    MEAN_US_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    op_type: str
    provider: str
    input_shapes: _containers.RepeatedScalarFieldContainer[str]
    output_shapes: _containers.RepeatedScalarFieldContainer[str]
    median_us: float
    mean_us: float
    runs: int
    def __init__(self, node_name: _Optional[str] = ..., op_type: _Optional[str] = ..., provider: _Optional[str] = ..., input_shapes: _Optional[_Iterable[str]] = ..., output_shapes: _Optional[_Iterable[str]] = ..., median_us: _Optional[float] = ..., mean_us: _Optional[float] = ..., runs: _Optional[int] = ...) -> None: ...
