"""fleetmeter's own model generator: one description, two emitters.

* :mod:`.arch` — the architecture description (layers, shapes, weights);
  re-exported here.
* :mod:`.onnx_emit` — ``build_onnx`` / ``write_onnx`` (NCHW, opset 17).
* :mod:`.tflite_emit` — ``build_tflite`` / ``write_tflite`` (NHWC, builtin ops).
* :mod:`.tiny` — parametrised generators and the built-in demo models.
* :mod:`.make_builtin` — regenerates ``fleetmeter/modeler/builtin_models``.
* :mod:`.special` — odd files for tests (large, unsupported op, corrupt).

The emitters import onnx / LiteRT lazily; importing this package needs only numpy.
"""

from .arch import (
    ACTIVATIONS,
    GENERATOR_VERSION,
    META_FAMILY,
    META_GENERATOR_VERSION,
    META_HYPERPARAMETERS,
    META_NAME,
    META_SEED,
    Activation,
    Add,
    Architecture,
    ArchitectureError,
    AvgPool,
    Concat,
    Conv2D,
    Dense,
    Flatten,
    GlobalAvgPool,
    Input,
    MaxPool,
    Reshape,
    Softmax,
    UnsupportedLayerError,
    init_weights,
    param_shapes,
)

__all__ = [
    "ACTIVATIONS",
    "GENERATOR_VERSION",
    "META_FAMILY",
    "META_GENERATOR_VERSION",
    "META_HYPERPARAMETERS",
    "META_NAME",
    "META_SEED",
    "Activation",
    "Add",
    "Architecture",
    "ArchitectureError",
    "AvgPool",
    "Concat",
    "Conv2D",
    "Dense",
    "Flatten",
    "GlobalAvgPool",
    "Input",
    "MaxPool",
    "Reshape",
    "Softmax",
    "UnsupportedLayerError",
    "init_weights",
    "param_shapes",
]
