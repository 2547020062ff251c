from fleetmeter.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("model_bytes", "model_sha256", "model_graph", "model_name", "platforms", "targets", "request_id", "input_shapes")
    MODEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_GRAPH_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPES_FIELD_NUMBER: _ClassVar[int]
    model_bytes: bytes
    model_sha256: str
    model_graph: ModelGraph
    model_name: str
    platforms: _containers.RepeatedScalarFieldContainer[str]
    targets: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    input_shapes: _containers.RepeatedCompositeFieldContainer[_common_pb2.InputOverride]
    def __init__(self, model_bytes: _Optional[bytes] = ..., model_sha256: _Optional[str] = ..., model_graph: _Optional[_Union[ModelGraph, _Mapping]] = ..., model_name: _Optional[str] = ..., platforms: _Optional[_Iterable[str]] = ..., targets: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ..., input_shapes: _Optional[_Iterable[_Union[_common_pb2.InputOverride, _Mapping]]] = ...) -> None: ...

class ModelGraph(_message.Message):
    __slots__ = ("onnx", "sha256")
    ONNX_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    onnx: bytes
    sha256: str
    def __init__(self, onnx: _Optional[bytes] = ..., sha256: _Optional[str] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("platform", "target", "value", "lower", "upper", "unit", "predictor_version", "granularity", "interval_level", "warnings", "method")
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    PREDICTOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_LEVEL_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    platform: str
    target: str
    value: float
    lower: float
    upper: float
    unit: str
    predictor_version: int
    granularity: str
    interval_level: float
    warnings: _containers.RepeatedScalarFieldContainer[str]
    method: str
    def __init__(self, platform: _Optional[str] = ..., target: _Optional[str] = ..., value: _Optional[float] = ..., lower: _Optional[float] = ..., upper: _Optional[float] = ..., unit: _Optional[str] = ..., predictor_version: _Optional[int] = ..., granularity: _Optional[str] = ..., interval_level: _Optional[float] = ..., warnings: _Optional[_Iterable[str]] = ..., method: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("request_id", "model_sha256", "predictions", "error", "error_code", "features_ms", "model_not_found")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_sha256: str
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    error: str
    error_code: str
    features_ms: float
    model_not_found: bool
    def __init__(self, request_id: _Optional[str] = ..., model_sha256: _Optional[str] = ..., predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., error: _Optional[str] = ..., error_code: _Optional[str] = ..., features_ms: _Optional[float] = ..., model_not_found: _Optional[bool] = ...) -> None: ...

class ListPredictorsRequest(_message.Message):
    __slots__ = ("platforms", "targets")
    PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    platforms: _containers.RepeatedScalarFieldContainer[str]
    targets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, platforms: _Optional[_Iterable[str]] = ..., targets: _Optional[_Iterable[str]] = ...) -> None: ...

class PredictorInfo(_message.Message):
    __slots__ = ("platform", "target", "version", "versions", "pinned", "granularity", "chosen_because", "n_samples", "feature_schema_version", "training_fingerprint", "created_unix", "unit", "interval_level", "interval_coverage", "metrics_json", "method", "warnings")
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_BECAUSE_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_LEVEL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    platform: str
    target: str
    version: int
    versions: _containers.RepeatedScalarFieldContainer[int]
    pinned: int
    granularity: str
    chosen_because: str
    n_samples: int
    feature_schema_version: int
    training_fingerprint: str
    created_unix: float
    unit: str
    interval_level: float
    interval_coverage: float
    metrics_json: str
    method: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, platform: _Optional[str] = ..., target: _Optional[str] = ..., version: _Optional[int] = ..., versions: _Optional[_Iterable[int]] = ..., pinned: _Optional[int] = ..., granularity: _Optional[str] = ..., chosen_because: _Optional[str] = ..., n_samples: _Optional[int] = ..., feature_schema_version: _Optional[int] = ..., training_fingerprint: _Optional[str] = ..., created_unix: _Optional[float] = ..., unit: _Optional[str] = ..., interval_level: _Optional[float] = ..., interval_coverage: _Optional[float] = ..., metrics_json: _Optional[str] = ..., method: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ListPredictorsResponse(_message.Message):
    __slots__ = ("predictors",)
    PREDICTORS_FIELD_NUMBER: _ClassVar[int]
    predictors: _containers.RepeatedCompositeFieldContainer[PredictorInfo]
    def __init__(self, predictors: _Optional[_Iterable[_Union[PredictorInfo, _Mapping]]] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("platforms", "targets", "seed", "skip_family_split", "min_samples")
    PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SKIP_FAMILY_SPLIT_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    platforms: _containers.RepeatedScalarFieldContainer[str]
    targets: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    skip_family_split: bool
    min_samples: int
    def __init__(self, platforms: _Optional[_Iterable[str]] = ..., targets: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., skip_family_split: _Optional[bool] = ..., min_samples: _Optional[int] = ...) -> None: ...

class TrainedPredictor(_message.Message):
    __slots__ = ("platform", "target", "version", "n_samples", "skipped", "granularity", "chosen_because", "metrics_json", "method", "warnings")
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_BECAUSE_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    platform: str
    target: str
    version: int
    n_samples: int
    skipped: str
    granularity: str
    chosen_because: str
    metrics_json: str
    method: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, platform: _Optional[str] = ..., target: _Optional[str] = ..., version: _Optional[int] = ..., n_samples: _Optional[int] = ..., skipped: _Optional[str] = ..., granularity: _Optional[str] = ..., chosen_because: _Optional[str] = ..., metrics_json: _Optional[str] = ..., method: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class TrainProgress(_message.Message):
    __slots__ = ("stage", "done", "total", "message", "results")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    done: int
    total: int
    message: str
    results: _containers.RepeatedCompositeFieldContainer[TrainedPredictor]
    def __init__(self, stage: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., message: _Optional[str] = ..., results: _Optional[_Iterable[_Union[TrainedPredictor, _Mapping]]] = ...) -> None: ...

class PinPredictorRequest(_message.Message):
    __slots__ = ("platform", "target", "version")
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    platform: str
    target: str
    version: int
    def __init__(self, platform: _Optional[str] = ..., target: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class PlanAdaptRequest(_message.Message):
    __slots__ = ("platform", "from_platforms", "budget", "models", "seed", "target")
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    FROM_PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    platform: str
    from_platforms: _containers.RepeatedScalarFieldContainer[str]
    budget: int
    models: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    target: str
    def __init__(self, platform: _Optional[str] = ..., from_platforms: _Optional[_Iterable[str]] = ..., budget: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., target: _Optional[str] = ...) -> None: ...

class PlannedModel(_message.Message):
    __slots__ = ("model_sha256", "model_name", "predicted_value")
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_VALUE_FIELD_NUMBER: _ClassVar[int]
    model_sha256: str
    model_name: str
    predicted_value: float
    def __init__(self, model_sha256: _Optional[str] = ..., model_name: _Optional[str] = ..., predicted_value: _Optional[float] = ...) -> None: ...

class PlanAdaptResponse(_message.Message):
    __slots__ = ("platform", "from_platforms", "models", "candidates", "skipped_sources")
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    FROM_PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_SOURCES_FIELD_NUMBER: _ClassVar[int]
    platform: str
    from_platforms: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedCompositeFieldContainer[PlannedModel]
    candidates: int
    skipped_sources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, platform: _Optional[str] = ..., from_platforms: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[_Union[PlannedModel, _Mapping]]] = ..., candidates: _Optional[int] = ..., skipped_sources: _Optional[_Iterable[str]] = ...) -> None: ...

class AdaptRequest(_message.Message):
    __slots__ = ("platform", "from_platforms", "targets", "budget", "models", "seed")
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    FROM_PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    platform: str
    from_platforms: _containers.RepeatedScalarFieldContainer[str]
    targets: _containers.RepeatedScalarFieldContainer[str]
    budget: int
    models: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    def __init__(self, platform: _Optional[str] = ..., from_platforms: _Optional[_Iterable[str]] = ..., targets: _Optional[_Iterable[str]] = ..., budget: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ...) -> None: ...
