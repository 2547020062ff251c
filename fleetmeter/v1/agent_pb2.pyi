from fleetmeter.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "result")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    result: JobResult
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., result: _Optional[_Union[JobResult, _Mapping]] = ...) -> None: ...

class PlatformOffer(_message.Message):
    __slots__ = ("runtime", "runtime_version", "provider", "threads")
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    runtime: str
    runtime_version: str
    provider: str
    threads: int
    def __init__(self, runtime: _Optional[str] = ..., runtime_version: _Optional[str] = ..., provider: _Optional[str] = ..., threads: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_id", "name", "device", "offers", "labels", "agent_version", "current_job_id", "spooled_results", "spooled_job_ids", "agent_secret")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SPOOLED_RESULTS_FIELD_NUMBER: _ClassVar[int]
    SPOOLED_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    AGENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    name: str
    device: _common_pb2.DeviceInfo
    offers: _containers.RepeatedCompositeFieldContainer[PlatformOffer]
    labels: _containers.ScalarMap[str, str]
    agent_version: str
    current_job_id: str
    spooled_results: int
    spooled_job_ids: _containers.RepeatedScalarFieldContainer[str]
    agent_secret: str
    def __init__(self, agent_id: _Optional[str] = ..., name: _Optional[str] = ..., device: _Optional[_Union[_common_pb2.DeviceInfo, _Mapping]] = ..., offers: _Optional[_Iterable[_Union[PlatformOffer, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., agent_version: _Optional[str] = ..., current_job_id: _Optional[str] = ..., spooled_results: _Optional[int] = ..., spooled_job_ids: _Optional[_Iterable[str]] = ..., agent_secret: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("current_job_id", "sent_unix")
    CURRENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_FIELD_NUMBER: _ClassVar[int]
    current_job_id: str
    sent_unix: float
    def __init__(self, current_job_id: _Optional[str] = ..., sent_unix: _Optional[float] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("measurement",)
    MEASUREMENT_FIELD_NUMBER: _ClassVar[int]
    measurement: _common_pb2.Measurement
    def __init__(self, measurement: _Optional[_Union[_common_pb2.Measurement, _Mapping]] = ...) -> None: ...

class ControllerMessage(_message.Message):
    __slots__ = ("welcome", "job", "ack")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    job: JobAssignment
    ack: Ack
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., job: _Optional[_Union[JobAssignment, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("agent_id", "platform_ids", "heartbeat_interval_s")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_IDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    platform_ids: _containers.RepeatedScalarFieldContainer[str]
    heartbeat_interval_s: float
    def __init__(self, agent_id: _Optional[str] = ..., platform_ids: _Optional[_Iterable[str]] = ..., heartbeat_interval_s: _Optional[float] = ...) -> None: ...

class JobAssignment(_message.Message):
    __slots__ = ("job_id", "sweep_id", "platform_id", "model_sha256", "model_size_bytes", "model_format", "runtime", "provider", "threads", "settings", "inputs", "cooldown_s", "max_start_temp_c", "max_thermal_wait_s", "profile_operators", "reading", "job_kind")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_S_FIELD_NUMBER: _ClassVar[int]
    MAX_START_TEMP_C_FIELD_NUMBER: _ClassVar[int]
    MAX_THERMAL_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    PROFILE_OPERATORS_FIELD_NUMBER: _ClassVar[int]
    READING_FIELD_NUMBER: _ClassVar[int]
    JOB_KIND_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sweep_id: str
    platform_id: str
    model_sha256: str
    model_size_bytes: int
    model_format: str
    runtime: str
    provider: str
    threads: int
    settings: _common_pb2.BenchSettings
    inputs: _containers.RepeatedCompositeFieldContainer[_common_pb2.InputOverride]
    cooldown_s: float
    max_start_temp_c: float
    max_thermal_wait_s: float
    profile_operators: bool
    reading: _common_pb2.ReadingSettings
    job_kind: str
    def __init__(self, job_id: _Optional[str] = ..., sweep_id: _Optional[str] = ..., platform_id: _Optional[str] = ..., model_sha256: _Optional[str] = ..., model_size_bytes: _Optional[int] = ..., model_format: _Optional[str] = ..., runtime: _Optional[str] = ..., provider: _Optional[str] = ..., threads: _Optional[int] = ..., settings: _Optional[_Union[_common_pb2.BenchSettings, _Mapping]] = ..., inputs: _Optional[_Iterable[_Union[_common_pb2.InputOverride, _Mapping]]] = ..., cooldown_s: _Optional[float] = ..., max_start_temp_c: _Optional[float] = ..., max_thermal_wait_s: _Optional[float] = ..., profile_operators: _Optional[bool] = ..., reading: _Optional[_Union[_common_pb2.ReadingSettings, _Mapping]] = ..., job_kind: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("measurement_id", "job_id", "rejected")
    MEASUREMENT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    measurement_id: str
    job_id: str
    rejected: str
    def __init__(self, measurement_id: _Optional[str] = ..., job_id: _Optional[str] = ..., rejected: _Optional[str] = ...) -> None: ...

class FetchModelRequest(_message.Message):
    __slots__ = ("sha256", "offset")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    offset: int
    def __init__(self, sha256: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("data", "offset", "total_size_bytes")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    total_size_bytes: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., total_size_bytes: _Optional[int] = ...) -> None: ...
