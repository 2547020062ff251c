from fleetmeter.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Device(_message.Message):
    __slots__ = ("agent_id", "name", "info", "labels", "connected", "state", "current_job_id", "last_seen_unix", "platform_ids", "suspended_reason")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_IDS_FIELD_NUMBER: _ClassVar[int]
    SUSPENDED_REASON_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    name: str
    info: _common_pb2.DeviceInfo
    labels: _containers.ScalarMap[str, str]
    connected: bool
    state: str
    current_job_id: str
    last_seen_unix: float
    platform_ids: _containers.RepeatedScalarFieldContainer[str]
    suspended_reason: str
    def __init__(self, agent_id: _Optional[str] = ..., name: _Optional[str] = ..., info: _Optional[_Union[_common_pb2.DeviceInfo, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., connected: _Optional[bool] = ..., state: _Optional[str] = ..., current_job_id: _Optional[str] = ..., last_seen_unix: _Optional[float] = ..., platform_ids: _Optional[_Iterable[str]] = ..., suspended_reason: _Optional[str] = ...) -> None: ...

class Platform(_message.Message):
    __slots__ = ("platform_id", "hardware", "runtime", "runtime_version", "provider", "threads", "labels", "hardware_json", "agents_connected", "agents_total", "noise_ceiling", "reference")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_JSON_FIELD_NUMBER: _ClassVar[int]
    AGENTS_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    AGENTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    NOISE_CEILING_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    platform_id: str
    hardware: str
    runtime: str
    runtime_version: str
    provider: str
    threads: int
    labels: _containers.ScalarMap[str, str]
    hardware_json: str
    agents_connected: int
    agents_total: int
    noise_ceiling: NoiseCeiling
    reference: ReferenceReading
    def __init__(self, platform_id: _Optional[str] = ..., hardware: _Optional[str] = ..., runtime: _Optional[str] = ..., runtime_version: _Optional[str] = ..., provider: _Optional[str] = ..., threads: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., hardware_json: _Optional[str] = ..., agents_connected: _Optional[int] = ..., agents_total: _Optional[int] = ..., noise_ceiling: _Optional[_Union[NoiseCeiling, _Mapping]] = ..., reference: _Optional[_Union[ReferenceReading, _Mapping]] = ...) -> None: ...

class NoiseCeiling(_message.Message):
    __slots__ = ("within_5", "within_10", "pairs")
    WITHIN_5_FIELD_NUMBER: _ClassVar[int]
    WITHIN_10_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    within_5: float
    within_10: float
    pairs: int
    def __init__(self, within_5: _Optional[float] = ..., within_10: _Optional[float] = ..., pairs: _Optional[int] = ...) -> None: ...

class ReferenceReading(_message.Message):
    __slots__ = ("model_sha256", "model_name", "median_ms", "session_spread", "flags", "finished_at_unix", "readings", "drift")
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_MS_FIELD_NUMBER: _ClassVar[int]
    SESSION_SPREAD_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    READINGS_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    model_sha256: str
    model_name: str
    median_ms: float
    session_spread: float
    flags: _containers.RepeatedScalarFieldContainer[str]
    finished_at_unix: float
    readings: int
    drift: float
    def __init__(self, model_sha256: _Optional[str] = ..., model_name: _Optional[str] = ..., median_ms: _Optional[float] = ..., session_spread: _Optional[float] = ..., flags: _Optional[_Iterable[str]] = ..., finished_at_unix: _Optional[float] = ..., readings: _Optional[int] = ..., drift: _Optional[float] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("sha256", "name", "format", "size_bytes", "inputs", "outputs", "node_count", "family", "metadata_json", "created_unix")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    name: str
    format: str
    size_bytes: int
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    node_count: int
    family: str
    metadata_json: str
    created_unix: float
    def __init__(self, sha256: _Optional[str] = ..., name: _Optional[str] = ..., format: _Optional[str] = ..., size_bytes: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., node_count: _Optional[int] = ..., family: _Optional[str] = ..., metadata_json: _Optional[str] = ..., created_unix: _Optional[float] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...

class ListPlatformsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPlatformsResponse(_message.Message):
    __slots__ = ("platforms",)
    PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    platforms: _containers.RepeatedCompositeFieldContainer[Platform]
    def __init__(self, platforms: _Optional[_Iterable[_Union[Platform, _Mapping]]] = ...) -> None: ...

class ModelUploadHeader(_message.Message):
    __slots__ = ("name", "format", "size_bytes", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    format: str
    size_bytes: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., format: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadModelRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ModelUploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[ModelUploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadModelResponse(_message.Message):
    __slots__ = ("model", "already_present")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    model: Model
    already_present: bool
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., already_present: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class PlatformSelector(_message.Message):
    __slots__ = ("platform_ids", "labels", "runtimes")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PLATFORM_IDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    platform_ids: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    runtimes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, platform_ids: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., runtimes: _Optional[_Iterable[str]] = ...) -> None: ...

class SweepSpec(_message.Message):
    __slots__ = ("name", "models", "platforms", "threads", "repeats", "settings", "priority", "inputs", "max_device_failures", "cooldown_s", "max_start_temp_c", "max_thermal_wait_s", "profile_operators", "reading", "repeat_sample")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_DEVICE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_S_FIELD_NUMBER: _ClassVar[int]
    MAX_START_TEMP_C_FIELD_NUMBER: _ClassVar[int]
    MAX_THERMAL_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    PROFILE_OPERATORS_FIELD_NUMBER: _ClassVar[int]
    READING_FIELD_NUMBER: _ClassVar[int]
    REPEAT_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    models: _containers.RepeatedScalarFieldContainer[str]
    platforms: PlatformSelector
    threads: _containers.RepeatedScalarFieldContainer[int]
    repeats: int
    settings: _common_pb2.BenchSettings
    priority: int
    inputs: _containers.RepeatedCompositeFieldContainer[_common_pb2.InputOverride]
    max_device_failures: int
    cooldown_s: float
    max_start_temp_c: float
    max_thermal_wait_s: float
    profile_operators: bool
    reading: _common_pb2.ReadingSettings
    repeat_sample: float
    def __init__(self, name: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., platforms: _Optional[_Union[PlatformSelector, _Mapping]] = ..., threads: _Optional[_Iterable[int]] = ..., repeats: _Optional[int] = ..., settings: _Optional[_Union[_common_pb2.BenchSettings, _Mapping]] = ..., priority: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[_common_pb2.InputOverride, _Mapping]]] = ..., max_device_failures: _Optional[int] = ..., cooldown_s: _Optional[float] = ..., max_start_temp_c: _Optional[float] = ..., max_thermal_wait_s: _Optional[float] = ..., profile_operators: _Optional[bool] = ..., reading: _Optional[_Union[_common_pb2.ReadingSettings, _Mapping]] = ..., repeat_sample: _Optional[float] = ...) -> None: ...

class SweepProgress(_message.Message):
    __slots__ = ("sweep_id", "state", "total", "pending", "leased", "done", "failed", "updated_unix", "cancelled", "eta_s", "platforms")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    LEASED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    state: str
    total: int
    pending: int
    leased: int
    done: int
    failed: int
    updated_unix: float
    cancelled: int
    eta_s: float
    platforms: _containers.RepeatedCompositeFieldContainer[PlatformProgress]
    def __init__(self, sweep_id: _Optional[str] = ..., state: _Optional[str] = ..., total: _Optional[int] = ..., pending: _Optional[int] = ..., leased: _Optional[int] = ..., done: _Optional[int] = ..., failed: _Optional[int] = ..., updated_unix: _Optional[float] = ..., cancelled: _Optional[int] = ..., eta_s: _Optional[float] = ..., platforms: _Optional[_Iterable[_Union[PlatformProgress, _Mapping]]] = ...) -> None: ...

class PlatformProgress(_message.Message):
    __slots__ = ("platform_id", "pending", "leased", "done", "failed", "cancelled", "agents_connected", "mean_job_s", "eta_s")
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    LEASED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    AGENTS_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    MEAN_JOB_S_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    platform_id: str
    pending: int
    leased: int
    done: int
    failed: int
    cancelled: int
    agents_connected: int
    mean_job_s: float
    eta_s: float
    def __init__(self, platform_id: _Optional[str] = ..., pending: _Optional[int] = ..., leased: _Optional[int] = ..., done: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ..., agents_connected: _Optional[int] = ..., mean_job_s: _Optional[float] = ..., eta_s: _Optional[float] = ...) -> None: ...

class SweepControlRequest(_message.Message):
    __slots__ = ("sweep_id",)
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    def __init__(self, sweep_id: _Optional[str] = ...) -> None: ...

class Sweep(_message.Message):
    __slots__ = ("sweep_id", "name", "spec", "progress", "created_unix", "platform_ids")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_IDS_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    name: str
    spec: SweepSpec
    progress: SweepProgress
    created_unix: float
    platform_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sweep_id: _Optional[str] = ..., name: _Optional[str] = ..., spec: _Optional[_Union[SweepSpec, _Mapping]] = ..., progress: _Optional[_Union[SweepProgress, _Mapping]] = ..., created_unix: _Optional[float] = ..., platform_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SubmitSweepRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: SweepSpec
    def __init__(self, spec: _Optional[_Union[SweepSpec, _Mapping]] = ...) -> None: ...

class SubmitSweepResponse(_message.Message):
    __slots__ = ("sweep",)
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    sweep: Sweep
    def __init__(self, sweep: _Optional[_Union[Sweep, _Mapping]] = ...) -> None: ...

class GetSweepRequest(_message.Message):
    __slots__ = ("sweep_id",)
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    def __init__(self, sweep_id: _Optional[str] = ...) -> None: ...

class GetSweepResponse(_message.Message):
    __slots__ = ("sweep",)
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    sweep: Sweep
    def __init__(self, sweep: _Optional[_Union[Sweep, _Mapping]] = ...) -> None: ...

class WatchSweepRequest(_message.Message):
    __slots__ = ("sweep_id",)
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    def __init__(self, sweep_id: _Optional[str] = ...) -> None: ...

class ListMeasurementsRequest(_message.Message):
    __slots__ = ("sweep_id", "platform_id", "model_sha256", "include_samples")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    platform_id: str
    model_sha256: str
    include_samples: bool
    def __init__(self, sweep_id: _Optional[str] = ..., platform_id: _Optional[str] = ..., model_sha256: _Optional[str] = ..., include_samples: _Optional[bool] = ...) -> None: ...

class ImportedMeasurement(_message.Message):
    __slots__ = ("line", "model_sha256", "platform", "latency_ms", "energy_mj", "peak_rss_bytes", "family")
    LINE_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_MJ_FIELD_NUMBER: _ClassVar[int]
    PEAK_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    line: int
    model_sha256: str
    platform: str
    latency_ms: float
    energy_mj: float
    peak_rss_bytes: int
    family: str
    def __init__(self, line: _Optional[int] = ..., model_sha256: _Optional[str] = ..., platform: _Optional[str] = ..., latency_ms: _Optional[float] = ..., energy_mj: _Optional[float] = ..., peak_rss_bytes: _Optional[int] = ..., family: _Optional[str] = ...) -> None: ...

class ImportMeasurementsRequest(_message.Message):
    __slots__ = ("source", "rows")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    source: str
    rows: _containers.RepeatedCompositeFieldContainer[ImportedMeasurement]
    def __init__(self, source: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[ImportedMeasurement, _Mapping]]] = ...) -> None: ...

class ImportMeasurementsResponse(_message.Message):
    __slots__ = ("imported", "already_present", "created_platforms")
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    imported: int
    already_present: int
    created_platforms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, imported: _Optional[int] = ..., already_present: _Optional[int] = ..., created_platforms: _Optional[_Iterable[str]] = ...) -> None: ...

class AgentToken(_message.Message):
    __slots__ = ("token_id", "name", "agent_id", "created_unix", "last_used_unix", "revoked_unix")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_UNIX_FIELD_NUMBER: _ClassVar[int]
    REVOKED_UNIX_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    name: str
    agent_id: str
    created_unix: float
    last_used_unix: float
    revoked_unix: float
    def __init__(self, token_id: _Optional[str] = ..., name: _Optional[str] = ..., agent_id: _Optional[str] = ..., created_unix: _Optional[float] = ..., last_used_unix: _Optional[float] = ..., revoked_unix: _Optional[float] = ...) -> None: ...

class CreateAgentTokenRequest(_message.Message):
    __slots__ = ("name", "agent_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    agent_id: str
    def __init__(self, name: _Optional[str] = ..., agent_id: _Optional[str] = ...) -> None: ...

class CreateAgentTokenResponse(_message.Message):
    __slots__ = ("token", "secret")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    token: AgentToken
    secret: str
    def __init__(self, token: _Optional[_Union[AgentToken, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListAgentTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAgentTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[AgentToken]
    def __init__(self, tokens: _Optional[_Iterable[_Union[AgentToken, _Mapping]]] = ...) -> None: ...

class RevokeAgentTokenRequest(_message.Message):
    __slots__ = ("token_id",)
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    def __init__(self, token_id: _Optional[str] = ...) -> None: ...

class ForgetDeviceRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class ForgetDeviceResponse(_message.Message):
    __slots__ = ("agent_id", "released_jobs")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASED_JOBS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    released_jobs: int
    def __init__(self, agent_id: _Optional[str] = ..., released_jobs: _Optional[int] = ...) -> None: ...

class ListSweepsRequest(_message.Message):
    __slots__ = ("states",)
    STATES_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, states: _Optional[_Iterable[str]] = ...) -> None: ...

class ListSweepsResponse(_message.Message):
    __slots__ = ("sweeps",)
    SWEEPS_FIELD_NUMBER: _ClassVar[int]
    sweeps: _containers.RepeatedCompositeFieldContainer[Sweep]
    def __init__(self, sweeps: _Optional[_Iterable[_Union[Sweep, _Mapping]]] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("model", "force")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    force: bool
    def __init__(self, model: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ("model", "jobs_removed", "measurements_kept")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    JOBS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENTS_KEPT_FIELD_NUMBER: _ClassVar[int]
    model: Model
    jobs_removed: int
    measurements_kept: int
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., jobs_removed: _Optional[int] = ..., measurements_kept: _Optional[int] = ...) -> None: ...
