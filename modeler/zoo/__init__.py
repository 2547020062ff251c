"""fleetmeter's own model generator: one description, two emitters (TFLite also int8).

* :mod:`.arch` — the architecture description (shapes, weights), with the
  layer kinds of :mod:`.layers`; re-exported here.
* :mod:`.onnx_emit` — ``build_onnx`` / ``write_onnx`` (NCHW, opset 17).
* :mod:`.tflite_emit` — ``build_tflite`` / ``write_tflite`` (NHWC, builtin ops).
* :mod:`.tflite_quant` — ``build_tflite_int8`` / ``write_tflite_int8``: the
  same graph, full-integer post-training quantized (int8 weights per channel,
  int8 activations calibrated in LiteRT, float input/output); every family.
* :mod:`.fold` — BatchNorm folding, run by both emitters.
* :mod:`.tiny` — parametrised generators and the built-in demo models.
* :mod:`.make_builtin` — regenerates ``fleetmeter/modeler/builtin_models``.
* :mod:`.odd_files` — odd files for tests (large, unsupported op, corrupt).
* :mod:`.families` — the zoo's sampled architecture families (registry), built
  from :mod:`.sampling` (ranges, seeds), :mod:`.blocks` and ``fam_*`` modules
  (classifiers, the transformer, NAS-Bench-201, and :mod:`.fam_dense`'s
  segmenters and detectors).
* :mod:`.build` — ``build_zoo``: COUNT models per family into a folder + index
  (formats ``onnx``, ``tflite``, ``tflite-int8`` of :mod:`.formats`); it fans
  out through an injected ``map_fn``, never Ray itself.

The ``fleetmeter zoo families`` / ``fleetmeter zoo build`` commands live in the
top layer, ``fleetmeter/zoo_cli.py`` (it starts the local Ray); this package,
like the rest of the modeler, imports only the modeler and the core layer.

The names below are imported on first use (PEP 562), so importing
the zoo to build the ``fleetmeter`` parser stays cheap; the emitters
import onnx / LiteRT lazily, and everything else needs only numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    "Attention",
    "AvgPool",
    "BatchNorm",
    "ChannelShuffle",
    "Concat",
    "Conv2D",
    "ConvTranspose2D",
    "Dense",
    "Flatten",
    "GlobalAvgPool",
    "Input",
    "LayerNorm",
    "MaxPool",
    "Mul",
    "Pad",
    "PReLU",
    "Reshape",
    "Resize",
    "Scale",
    "Slice",
    "Softmax",
    "UnsupportedLayerError",
    "init_weights",
    "param_shapes",
    "FAMILIES",
    "Family",
    "build_zoo",
    "family_names",
    "get_family",
]

_FROM_FAMILIES = {"FAMILIES", "Family", "family_names", "get_family"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = "families" if name in _FROM_FAMILIES else "build" if name == "build_zoo" else "arch"
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
