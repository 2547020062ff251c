"""Architecture description: one network, written once, emitted as ONNX or TFLite.

An :class:`Architecture` is an ordered list of layers forming a DAG of named
tensors. Every layer produces exactly one tensor, named after the layer.
A layer reads the tensors named in its ``inputs``; when ``inputs`` is empty
it reads the output of the layer listed just before it, so a plain sequence
needs no names at all, while skips (``Add``) and branches (``Concat``) name
the tensors they join.

Logical layout (what shapes in this module mean):

* feature maps are ``(h, w, c)``, token sequences are ``(seq, dim)``,
  vectors are ``(features,)``; the batch dimension is always 1 and never
  written. Sequences and vectors have the same layout in both formats
  (``[1, seq, dim]``, ``[1, n]``); only feature maps differ (NCHW / NHWC);
* ``Flatten``/``Reshape`` order elements like NHWC (channels fastest). The
  TFLite emitter is NHWC and needs nothing; the ONNX emitter is NCHW and
  inserts ``Transpose`` nodes where the two orders differ, so both files
  compute the same numbers;
* ``padding="same"`` is TensorFlow's SAME (output = ceil(in / stride), the
  extra padding row/column goes after); ``"valid"`` pads nothing. Average
  pooling never counts padded positions.

Canonical weight layout (what :func:`init_weights` returns and what the
emitters accept): ``Conv2D`` kernels are OIHW ``(out_ch, in_ch // groups,
kh, kw)``, ``ConvTranspose2D`` kernels are IOHW ``(in_ch, out_ch, kh, kw)``
(as ONNX and PyTorch store them), ``Dense`` kernels are ``(units,
in_features)``, biases are ``(out,)``; ``BatchNorm`` has ``gamma``,
``beta``, ``mean``, ``variance``, ``LayerNorm`` ``gamma``, ``beta`` and
``PReLU`` ``alpha``, each ``(channels,)``; all float32.

Batch normalization is inference-only. Both emitters first run
:func:`.fold.fold_batchnorm`, which folds a ``BatchNorm`` into the ``Conv2D``
it reads when that conv has no activation and no other reader (what the
TFLite converter and onnxruntime's graph optimizer do anyway), so the two
files hold the same folded weights. A ``BatchNorm`` that cannot be folded
(DenseNet's pre-activation after a concat) stays a separate op: ONNX
``BatchNormalization``, TFLite ``MUL`` + ``ADD`` with precomputed scale/shift.

Adding a layer kind: a frozen dataclass in :mod:`.layers` (a subclass of its
``_Layer``, listed in its ``Layer`` union), a shape rule in
:data:`_SHAPE_RULES` (and a case in :func:`_arity` unless it reads one
tensor), its parameter shapes in :func:`param_shapes` and initial values in
:func:`init_weights`, its cost in :meth:`Architecture.mac_count`, and one
emitter function registered in each emitter. An emitter that meets a layer
kind it lacks raises :class:`UnsupportedLayerError`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..geometry import same_padding  # noqa: F401 - re-exported with the other shape helpers
from .layers import (  # noqa: F401 - re-exported: arch is where users import layers from
    _LAYER_TYPES,
    ACTIVATIONS,
    Activation,
    Add,
    ArchitectureError,
    Attention,
    AvgPool,
    BatchNorm,
    ChannelShuffle,
    Concat,
    Conv2D,
    ConvTranspose2D,
    Dense,
    Flatten,
    GlobalAvgPool,
    Input,
    Layer,
    LayerNorm,
    MaxPool,
    Mul,
    Pad,
    PReLU,
    Reshape,
    Resize,
    RESIZE_MODES,
    Scale,
    Shape,
    Slice,
    Softmax,
    UnsupportedLayerError,
    _set,
)

__all__ = [
    "GENERATOR_VERSION",
    "META_FAMILY",
    "META_HYPERPARAMETERS",
    "META_GENERATOR_VERSION",
    "META_NAME",
    "META_SEED",
    "ACTIVATIONS",
    "ArchitectureError",
    "UnsupportedLayerError",
    "Shape",
    "Layer",
    "Input",
    "Conv2D",
    "MaxPool",
    "AvgPool",
    "GlobalAvgPool",
    "Dense",
    "Add",
    "Concat",
    "Flatten",
    "Reshape",
    "Softmax",
    "Activation",
    "BatchNorm",
    "Mul",
    "Scale",
    "Slice",
    "ChannelShuffle",
    "LayerNorm",
    "Attention",
    "Resize",
    "RESIZE_MODES",
    "ConvTranspose2D",
    "PReLU",
    "Pad",
    "Architecture",
    "LayerWeights",
    "Weights",
    "param_shapes",
    "init_weights",
    "check_weights",
    "resolve_weights",
    "same_padding",
    "hyperparameters_json",
    "metadata_entries",
]

#: Bumped whenever emitted bytes change for the same description and seed.
GENERATOR_VERSION = "1"

# Metadata keys written into both formats (ONNX metadata_props, TFLite
# Model.metadata). Values are UTF-8 strings.
META_NAME = "fleetmeter.name"
META_FAMILY = "fleetmeter.family"
META_HYPERPARAMETERS = "fleetmeter.hyperparameters"  # canonical JSON object
META_GENERATOR_VERSION = "fleetmeter.generator_version"
META_SEED = "fleetmeter.seed"  # only when weights came from init_weights(seed)

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


# --------------------------------------------------------------------------
# Shape arithmetic
# --------------------------------------------------------------------------


def _out_size(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    effective = (kernel - 1) * dilation + 1
    if padding == "same":
        return -(-size // stride)
    if size < effective:
        raise ArchitectureError(f"kernel {effective} larger than input {size} with padding='valid'")
    return (size - effective) // stride + 1


def _spatial(shape: Shape, layer: Any) -> Shape:
    if len(shape) != 3:
        raise ArchitectureError(f"{type(layer).__name__} {layer.name!r} needs an (h, w, c) input, got {shape}")
    return shape


def _conv_shape(layer: Conv2D, ins: Sequence[Shape]) -> Shape:
    h, w, c = _spatial(ins[0], layer)
    if c % layer.groups:
        raise ArchitectureError(f"{layer.name!r}: in_ch {c} not divisible by groups {layer.groups}")
    return (
        _out_size(h, layer.kernel[0], layer.stride[0], layer.dilation[0], layer.padding),
        _out_size(w, layer.kernel[1], layer.stride[1], layer.dilation[1], layer.padding),
        layer.out_ch,
    )


def _pool_shape(layer: Any, ins: Sequence[Shape]) -> Shape:
    h, w, c = _spatial(ins[0], layer)
    return (
        _out_size(h, layer.kernel[0], layer.stride[0], 1, layer.padding),
        _out_size(w, layer.kernel[1], layer.stride[1], 1, layer.padding),
        c,
    )


def _global_pool_shape(layer: GlobalAvgPool, ins: Sequence[Shape]) -> Shape:
    if len(ins[0]) == 2 and not layer.keepdims:
        return (ins[0][1],)  # mean over the tokens of a sequence
    c = _spatial(ins[0], layer)[2]
    return (1, 1, c) if layer.keepdims else (c,)


def _dense_shape(layer: Dense, ins: Sequence[Shape]) -> Shape:
    if len(ins[0]) not in (1, 2):
        raise ArchitectureError(f"Dense {layer.name!r} needs a vector input, got {ins[0]} (add Flatten)")
    return ins[0][:-1] + (layer.units,)


def _add_shape(layer: Add, ins: Sequence[Shape]) -> Shape:
    if len(ins) != 2 or ins[0] != ins[1]:
        raise ArchitectureError(f"Add {layer.name!r} needs two inputs of one shape, got {list(ins)}")
    return ins[0]


def _concat_shape(layer: Concat, ins: Sequence[Shape]) -> Shape:
    if len(ins) < 2:
        raise ArchitectureError(f"Concat {layer.name!r} needs at least two inputs")
    lead = {s[:-1] for s in ins}
    if len(lead) != 1 or len({len(s) for s in ins}) != 1:
        raise ArchitectureError(f"Concat {layer.name!r}: shapes differ outside the channel axis: {list(ins)}")
    return ins[0][:-1] + (sum(s[-1] for s in ins),)


def _flatten_shape(layer: Flatten, ins: Sequence[Shape]) -> Shape:
    _spatial(ins[0], layer)
    return (math.prod(ins[0]),)


def _reshape_shape(layer: Reshape, ins: Sequence[Shape]) -> Shape:
    if math.prod(layer.shape) != math.prod(ins[0]):
        raise ArchitectureError(f"Reshape {layer.name!r}: {ins[0]} has no {layer.shape} view")
    return layer.shape


def _same_shape(layer: Any, ins: Sequence[Shape]) -> Shape:
    return ins[0]


def _resize_shape(layer: Resize, ins: Sequence[Shape]) -> Shape:
    h, w, c = _spatial(ins[0], layer)
    return h * layer.scale, w * layer.scale, c


def _conv_transpose_shape(layer: ConvTranspose2D, ins: Sequence[Shape]) -> Shape:
    h, w, _ = _spatial(ins[0], layer)
    if layer.padding == "same":
        return h * layer.stride[0], w * layer.stride[1], layer.out_ch
    return ((h - 1) * layer.stride[0] + layer.kernel[0], (w - 1) * layer.stride[1] + layer.kernel[1],
            layer.out_ch)


def _pad_shape(layer: Pad, ins: Sequence[Shape]) -> Shape:
    h, w, c = _spatial(ins[0], layer)
    return h + layer.top + layer.bottom, w + layer.left + layer.right, c


def _batchnorm_shape(layer: BatchNorm, ins: Sequence[Shape]) -> Shape:
    if len(ins[0]) not in (1, 3):
        raise ArchitectureError(f"BatchNorm {layer.name!r} needs an (h, w, c) or (n,) input, got {ins[0]}")
    return ins[0]


def _mul_shape(layer: Mul, ins: Sequence[Shape]) -> Shape:
    a, b = ins
    if b != a and not (len(a) == 3 and b == (1, 1, a[2])):
        raise ArchitectureError(f"Mul {layer.name!r} needs two inputs of one shape or (h, w, c) * (1, 1, c), "
                                f"got {list(ins)}")
    return a


def _slice_shape(layer: Slice, ins: Sequence[Shape]) -> Shape:
    if layer.start + layer.size > ins[0][-1]:
        raise ArchitectureError(f"Slice {layer.name!r}: [{layer.start}, {layer.start + layer.size}) is outside "
                                f"the last axis of {ins[0]}")
    return ins[0][:-1] + (layer.size,)


def _shuffle_shape(layer: ChannelShuffle, ins: Sequence[Shape]) -> Shape:
    if _spatial(ins[0], layer)[2] % layer.groups:
        raise ArchitectureError(f"ChannelShuffle {layer.name!r}: {ins[0][2]} channels not divisible by "
                                f"{layer.groups} groups")
    return ins[0]


def _layernorm_shape(layer: LayerNorm, ins: Sequence[Shape]) -> Shape:
    if len(ins[0]) not in (1, 2):
        raise ArchitectureError(f"LayerNorm {layer.name!r} needs a (seq, dim) or (n,) input, got {ins[0]}")
    return ins[0]


def _attention_shape(layer: Attention, ins: Sequence[Shape]) -> Shape:
    if any(len(s) != 2 for s in ins) or len(set(ins)) != 1:
        raise ArchitectureError(f"Attention {layer.name!r} needs q, k, v of one (seq, dim) shape, got {list(ins)}")
    if ins[0][1] % layer.heads:
        raise ArchitectureError(f"Attention {layer.name!r}: dim {ins[0][1]} not divisible by {layer.heads} heads")
    return ins[0]


#: Output shape of each layer kind from its input shapes; raises ArchitectureError when they do not fit.
_SHAPE_RULES: Dict[type, Callable[[Any, Sequence[Shape]], Shape]] = {
    Input: lambda layer, ins: layer.shape,
    Conv2D: _conv_shape,
    MaxPool: _pool_shape,
    AvgPool: _pool_shape,
    GlobalAvgPool: _global_pool_shape,
    Dense: _dense_shape,
    Add: _add_shape,
    Concat: _concat_shape,
    Flatten: _flatten_shape,
    Reshape: _reshape_shape,
    Softmax: _same_shape,
    Activation: _same_shape,
    Scale: _same_shape,
    PReLU: _same_shape,
    Resize: _resize_shape,
    ConvTranspose2D: _conv_transpose_shape,
    Pad: _pad_shape,
    BatchNorm: _batchnorm_shape,
    Mul: _mul_shape,
    Slice: _slice_shape,
    ChannelShuffle: _shuffle_shape,
    LayerNorm: _layernorm_shape,
    Attention: _attention_shape,
}


def _infer_shape(layer: Any, ins: Sequence[Shape]) -> Shape:
    rule = _SHAPE_RULES.get(type(layer))
    if rule is None:
        raise UnsupportedLayerError(f"no shape rule for {type(layer).__name__}")
    return rule(layer, ins)


def _arity(layer: Any) -> Optional[int]:
    if isinstance(layer, Input):
        return 0
    if isinstance(layer, (Add, Mul)):
        return 2
    if isinstance(layer, Attention):
        return 3
    if isinstance(layer, Concat):
        return None  # two or more
    return 1


# --------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------


def hyperparameters_json(hyperparameters: Mapping[str, Any]) -> str:
    """Canonical JSON (sorted keys, no spaces): what goes into model metadata."""
    return json.dumps(hyperparameters, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Architecture:
    """A named network: layers in topological order plus family metadata.

    ``hyperparameters`` must be JSON-serializable; it is recorded verbatim
    (canonical JSON) in the emitted models. ``outputs`` defaults to the last
    layer. After construction every layer has a unique ``name`` and explicit
    ``inputs``, and :attr:`shapes` maps each tensor name to its logical shape.
    """

    name: str
    family: str
    layers: Tuple[Any, ...]
    hyperparameters: Mapping[str, Any] = field(default_factory=dict, hash=False)
    outputs: Tuple[str, ...] = ()
    shapes: Mapping[str, Shape] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            hyperparameters_json(self.hyperparameters)
        except (TypeError, ValueError) as exc:
            raise ArchitectureError(f"hyperparameters are not JSON-serializable: {exc}") from exc
        _set(self, "hyperparameters", json.loads(hyperparameters_json(self.hyperparameters)))
        if not self.layers:
            raise ArchitectureError("an architecture needs at least one layer")
        layers = []
        shapes: Dict[str, Shape] = {}
        previous: Optional[str] = None
        counters: Dict[str, int] = {}
        for index, layer in enumerate(self.layers):
            kind = type(layer).__name__
            if kind not in _LAYER_TYPES or not isinstance(layer, _LAYER_TYPES[kind]):
                raise ArchitectureError(f"layer {index} is not a layer: {layer!r}")
            name = layer.name
            if not name:
                n = counters.get(kind, 0)
                while f"{kind.lower()}_{n}" in shapes:
                    n += 1
                counters[kind] = n + 1
                name = f"{kind.lower()}_{n}"
            if not _NAME_RE.match(name):
                raise ArchitectureError(f"bad layer name {name!r} (letters, digits, _ . - only)")
            if name in shapes:
                raise ArchitectureError(f"duplicate layer name {name!r}")
            inputs = tuple(layer.inputs)
            arity = _arity(layer)
            if not inputs and arity != 0:
                if previous is None:
                    raise ArchitectureError(f"layer {name!r} has no input (start with Input)")
                inputs = (previous,)
            if arity is not None and len(inputs) != arity:
                raise ArchitectureError(f"{kind} {name!r} takes {arity} input(s), got {inputs}")
            for ref in inputs:
                if ref not in shapes:
                    raise ArchitectureError(f"{kind} {name!r} reads {ref!r}, which is not an earlier layer")
            if isinstance(layer, Input):
                resolved = layer if layer.name == name else Input(*layer.shape, name=name)
            else:
                resolved = dataclasses.replace(layer, name=name, inputs=inputs)
            shapes[name] = _infer_shape(resolved, [shapes[i] for i in inputs])
            layers.append(resolved)
            previous = name
        outputs = tuple(self.outputs) or (previous,)
        for out in outputs:
            if out not in shapes:
                raise ArchitectureError(f"output {out!r} is not a layer")
        if not any(isinstance(layer, Input) for layer in layers):
            raise ArchitectureError("an architecture needs an Input layer")
        consumed = {ref for layer in layers for ref in layer.inputs} | set(outputs)
        dangling = [layer.name for layer in layers if layer.name not in consumed]
        if dangling:
            raise ArchitectureError(f"layers whose output nothing reads: {dangling}")
        _set(self, "layers", tuple(layers))
        _set(self, "outputs", outputs)
        _set(self, "shapes", dict(shapes))

    # -- queries ----------------------------------------------------------
    @property
    def input_layers(self) -> Tuple[Input, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, Input))

    def layer(self, name: str) -> Any:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def in_shapes(self, layer: Any) -> Tuple[Shape, ...]:
        return tuple(self.shapes[i] for i in layer.inputs)

    def param_count(self) -> int:
        return sum(math.prod(s) for p in param_shapes(self).values() for s in p.values())

    def mac_count(self) -> int:
        """Multiply-accumulates of one inference: convolutions (a transposed
        one: ``in_h*in_w*in_c * kh*kw * out_ch``), dense layers and attention's
        two matrix products; elementwise work (resize and PReLU included) is
        not counted."""
        total = 0
        for layer in self.layers:
            out = self.shapes[layer.name]
            if isinstance(layer, Conv2D):
                in_ch = self.shapes[layer.inputs[0]][2]
                total += math.prod(out) * (in_ch // layer.groups) * layer.kernel[0] * layer.kernel[1]
            elif isinstance(layer, ConvTranspose2D):
                total += math.prod(self.shapes[layer.inputs[0]]) * layer.kernel[0] * layer.kernel[1] * layer.out_ch
            elif isinstance(layer, Dense):
                total += math.prod(out) * self.shapes[layer.inputs[0]][-1]
            elif isinstance(layer, Attention):
                seq, dim = out
                total += 2 * seq * seq * dim
        return total

    # -- serialization ----------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready description (inverse of :meth:`from_dict`)."""
        layers = []
        for layer in self.layers:
            if isinstance(layer, Input):
                layers.append({"type": "Input", "name": layer.name, "shape": list(layer.shape)})
                continue
            entry: Dict[str, Any] = {"type": type(layer).__name__}
            for f in dataclasses.fields(layer):
                value = getattr(layer, f.name)
                entry[f.name] = list(value) if isinstance(value, tuple) else value
            layers.append(entry)
        return {
            "name": self.name,
            "family": self.family,
            "hyperparameters": self.hyperparameters,
            "layers": layers,
            "outputs": list(self.outputs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Architecture":
        layers = []
        for entry in data["layers"]:
            entry = dict(entry)
            kind = entry.pop("type")
            if kind not in _LAYER_TYPES:
                raise ArchitectureError(f"unknown layer type {kind!r}")
            if kind == "Input":
                layers.append(Input(*entry["shape"], name=entry.get("name", "input")))
                continue
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
            layers.append(_LAYER_TYPES[kind](**kwargs))
        return cls(
            name=data["name"],
            family=data["family"],
            layers=tuple(layers),
            hyperparameters=data.get("hyperparameters", {}),
            outputs=tuple(data.get("outputs", ())),
        )


# --------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------

LayerWeights = Dict[str, np.ndarray]  # "kernel" and, with a bias, "bias"
Weights = Dict[str, LayerWeights]  # by layer name


def param_shapes(arch: Architecture) -> Dict[str, Dict[str, Shape]]:
    """Canonical parameter shapes by layer name (see the module docstring)."""
    result: Dict[str, Dict[str, Shape]] = {}
    for layer in arch.layers:
        if isinstance(layer, Conv2D):
            in_ch = arch.shapes[layer.inputs[0]][2]
            shapes = {"kernel": (layer.out_ch, in_ch // layer.groups) + tuple(layer.kernel)}
        elif isinstance(layer, ConvTranspose2D):
            in_ch = arch.shapes[layer.inputs[0]][2]
            result[layer.name] = {"kernel": (in_ch, layer.out_ch) + tuple(layer.kernel)}
            if layer.bias:
                result[layer.name]["bias"] = (layer.out_ch,)
            continue
        elif isinstance(layer, Dense):
            shapes = {"kernel": (layer.units, arch.shapes[layer.inputs[0]][-1])}
        elif isinstance(layer, BatchNorm):
            c = (arch.shapes[layer.name][-1],)
            result[layer.name] = {"gamma": c, "beta": c, "mean": c, "variance": c}
            continue
        elif isinstance(layer, LayerNorm):
            c = (arch.shapes[layer.name][-1],)
            result[layer.name] = {"gamma": c, "beta": c}
            continue
        elif isinstance(layer, PReLU):
            result[layer.name] = {"alpha": (arch.shapes[layer.name][-1],)}
            continue
        else:
            continue
        if layer.bias:
            shapes["bias"] = (shapes["kernel"][0],)
        result[layer.name] = shapes
    return result


def init_weights(arch: Architecture, seed: int = 0) -> Weights:
    """Deterministic float32 weights: Kaiming-uniform kernels, small biases.

    Each layer draws from its own ``numpy.random.Generator`` (PCG64) seeded by
    ``(seed, crc32(layer name))``, so editing one layer leaves the others'
    weights unchanged. Only ``Generator.random`` is used: its stream is a
    plain function of the PCG64 bits, so files stay byte-identical across
    numpy versions. Normalization layers get ``gamma`` in [0.5, 1.5),
    ``variance`` in [0.5, 1.5) (BatchNorm), ``beta`` and ``mean`` in [-0.1, 0.1);
    PReLU slopes ``alpha`` are in [0.05, 0.3). A transposed convolution's fan-in
    is ``in_ch * kh * kw / (stride_h * stride_w)``: the terms each output sums.
    """
    weights: Weights = {}
    by_name = {layer.name: layer for layer in arch.layers}
    for name, shapes in param_shapes(arch).items():
        rng = np.random.Generator(np.random.PCG64([int(seed), zlib.crc32(name.encode("utf-8"))]))
        if "alpha" in shapes:  # PReLU
            weights[name] = {"alpha": (rng.random(shapes["alpha"]) * 0.25 + 0.05).astype(np.float32)}
            continue
        if "kernel" not in shapes:  # BatchNorm / LayerNorm
            offsets = {"gamma": 0.5, "variance": 0.5}
            weights[name] = {
                key: ((rng.random(shape) + offsets[key]) if key in offsets
                      else (rng.random(shape) * 2.0 - 1.0) * 0.1).astype(np.float32)
                for key, shape in shapes.items()
            }
            continue
        kernel_shape = shapes["kernel"]
        fan_in = math.prod(kernel_shape[1:])
        layer = by_name[name]
        if isinstance(layer, ConvTranspose2D):
            fan_in = max(kernel_shape[0] * math.prod(layer.kernel) // math.prod(layer.stride), 1)
        bound = math.sqrt(6.0 / fan_in)  # He / Kaiming uniform for ReLU nets
        layer_weights = {"kernel": ((rng.random(kernel_shape) * 2.0 - 1.0) * bound).astype(np.float32)}
        if "bias" in shapes:
            layer_weights["bias"] = ((rng.random(shapes["bias"]) * 2.0 - 1.0) * 0.1).astype(np.float32)
        weights[name] = layer_weights
    return weights


def check_weights(arch: Architecture, weights: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Raise ArchitectureError unless ``weights`` has every parameter, correctly shaped."""
    for name, shapes in param_shapes(arch).items():
        if name not in weights:
            raise ArchitectureError(f"no weights for layer {name!r}")
        for key, shape in shapes.items():
            value = weights[name].get(key)
            if value is None or tuple(value.shape) != shape:
                got = None if value is None else tuple(value.shape)
                raise ArchitectureError(f"weights[{name!r}][{key!r}] must have shape {shape}, got {got}")


def resolve_weights(arch: Architecture, weights: Optional[Weights], seed: int) -> Weights:
    """``weights`` checked and cast to float32, or :func:`init_weights` from ``seed``."""
    if weights is None:
        return init_weights(arch, seed)
    check_weights(arch, weights)
    return {
        name: {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in lw.items()} for name, lw in weights.items()
    }


def metadata_entries(arch: Architecture, seed: Optional[int]) -> Tuple[Tuple[str, str], ...]:
    """The (key, value) metadata pairs both emitters write, in a fixed order."""
    entries = [
        (META_NAME, arch.name),
        (META_FAMILY, arch.family),
        (META_HYPERPARAMETERS, hyperparameters_json(arch.hyperparameters)),
        (META_GENERATOR_VERSION, GENERATOR_VERSION),
    ]
    if seed is not None:
        entries.append((META_SEED, str(int(seed))))
    return tuple(entries)
