"""Architecture description: one network, written once, emitted as ONNX or TFLite.

An :class:`Architecture` is an ordered list of layers forming a DAG of named
tensors. Every layer produces exactly one tensor, named after the layer.
A layer reads the tensors named in its ``inputs``; when ``inputs`` is empty
it reads the output of the layer listed just before it, so a plain sequence
needs no names at all, while skips (``Add``) and branches (``Concat``) name
the tensors they join.

Logical layout (what shapes in this module mean):

* feature maps are ``(h, w, c)``, vectors are ``(features,)``; the batch
  dimension is always 1 and never written;
* ``Flatten``/``Reshape`` order elements like NHWC (channels fastest). The
  TFLite emitter is NHWC and needs nothing; the ONNX emitter is NCHW and
  inserts ``Transpose`` nodes where the two orders differ, so both files
  compute the same numbers;
* ``padding="same"`` is TensorFlow's SAME (output = ceil(in / stride), the
  extra padding row/column goes after); ``"valid"`` pads nothing. Average
  pooling never counts padded positions.

Canonical weight layout (what :func:`init_weights` returns and what the
emitters accept): ``Conv2D`` kernels are OIHW ``(out_ch, in_ch // groups,
kh, kw)``, ``Dense`` kernels are ``(units, in_features)``, biases are
``(out,)``; all float32.

Adding a layer kind: a frozen dataclass here (with ``name`` and ``inputs``
as its last two fields), a case in :func:`_infer_shape`, its parameter shapes
in :func:`param_shapes`, and one handler in each emitter. An emitter that
meets a layer kind it lacks raises :class:`UnsupportedLayerError`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

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

#: Fused / standalone activations both emitters support.
ACTIVATIONS = (None, "relu", "relu6")

Shape = Tuple[int, ...]
IntPair = Union[int, Tuple[int, int]]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


class ArchitectureError(ValueError):
    """The description is inconsistent (bad shapes, names, parameters)."""


class UnsupportedLayerError(ArchitectureError):
    """An emitter has no translation for this layer kind or option."""


def _pair(value: IntPair, what: str) -> Tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    else:
        try:
            a, b = value  # type: ignore[misc]
        except (TypeError, ValueError) as exc:
            raise ArchitectureError(f"{what} must be an int or a pair, got {value!r}") from exc
        pair = (int(a), int(b))
    if pair[0] < 1 or pair[1] < 1:
        raise ArchitectureError(f"{what} must be >= 1, got {value!r}")
    return pair


def _check_padding(padding: str) -> None:
    if padding not in ("same", "valid"):
        raise ArchitectureError(f"padding must be 'same' or 'valid', got {padding!r}")


def _check_activation(activation: Optional[str]) -> None:
    if activation not in ACTIVATIONS:
        raise ArchitectureError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _norm_inputs(obj: Any) -> None:
    _set(obj, "inputs", tuple(obj.inputs))


# --------------------------------------------------------------------------
# Layers. Each is a frozen dataclass; ``name`` and ``inputs`` come last and
# may be left empty (Architecture fills them in).
# --------------------------------------------------------------------------


@dataclass(frozen=True, init=False)
class Input:
    """A graph input: ``Input(h, w, c)`` for an image, ``Input(n)`` for a vector."""

    shape: Shape
    name: str

    def __init__(self, *dims: int, name: str = "input") -> None:
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        if len(dims) not in (1, 3) or any(int(d) < 1 for d in dims):
            raise ArchitectureError(f"Input takes (h, w, c) or (features,), got {dims!r}")
        _set(self, "shape", tuple(int(d) for d in dims))
        _set(self, "name", name)

    @property
    def inputs(self) -> Tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class Conv2D:
    """2-D convolution; ``groups == in_ch`` makes it depthwise."""

    out_ch: int
    kernel: IntPair
    stride: IntPair = 1
    padding: str = "same"
    groups: int = 1
    dilation: IntPair = 1
    activation: Optional[str] = None
    bias: bool = True
    name: str = ""
    inputs: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _set(self, "kernel", _pair(self.kernel, "kernel"))
        _set(self, "stride", _pair(self.stride, "stride"))
        _set(self, "dilation", _pair(self.dilation, "dilation"))
        _check_padding(self.padding)
        _check_activation(self.activation)
        if self.out_ch < 1 or self.groups < 1:
            raise ArchitectureError("out_ch and groups must be >= 1")
        if self.out_ch % self.groups:
            raise ArchitectureError(f"out_ch {self.out_ch} not divisible by groups {self.groups}")
        _norm_inputs(self)


@dataclass(frozen=True)
class MaxPool:
    kernel: IntPair
    stride: Optional[IntPair] = None  # default: the kernel size
    padding: str = "valid"
    name: str = ""
    inputs: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _set(self, "kernel", _pair(self.kernel, "kernel"))
        _set(self, "stride", _pair(self.kernel if self.stride is None else self.stride, "stride"))
        _check_padding(self.padding)
        _norm_inputs(self)


@dataclass(frozen=True)
class AvgPool:
    kernel: IntPair
    stride: Optional[IntPair] = None  # default: the kernel size
    padding: str = "valid"
    name: str = ""
    inputs: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _set(self, "kernel", _pair(self.kernel, "kernel"))
        _set(self, "stride", _pair(self.kernel if self.stride is None else self.stride, "stride"))
        _check_padding(self.padding)
        _norm_inputs(self)


@dataclass(frozen=True)
class GlobalAvgPool:
    """Mean over h and w: ``(h, w, c) -> (c,)``, or ``(1, 1, c)`` with keepdims."""

    keepdims: bool = False
    name: str = ""
    inputs: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _norm_inputs(self)


@dataclass(frozen=True)
class Dense:
    """Fully connected layer on a vector: ``(n,) -> (units,)``."""

    units: int
    activation: Optional[str] = None
    bias: bool = True
    name: str = ""
    inputs: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_activation(self.activation)
        if self.units < 1:
            raise ArchitectureError("units must be >= 1")
        _norm_inputs(self)


@dataclass(frozen=True)
class Add:
    """Elementwise sum of exactly two same-shaped tensors (residual)."""

    activation: Optional[str] = None
    name: str = ""
    inputs: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_activation(self.activation)
        _norm_inputs(self)


@dataclass(frozen=True)
class Concat:
    """Concatenation of two or more tensors along channels (the last axis)."""

    name: str = ""
    inputs: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _norm_inputs(self)


@dataclass(frozen=True)
class Flatten:
    """``(h, w, c) -> (h*w*c,)`` in h, w, c order."""

    name: str = ""
    inputs: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _norm_inputs(self)


@dataclass(frozen=True)
class Reshape:
    """To ``shape`` (``(h, w, c)`` or ``(n,)``), elements in h, w, c order."""

    shape: Shape
    name: str = ""
    inputs: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        shape = tuple(int(d) for d in self.shape)
        if len(shape) not in (1, 3) or any(d < 1 for d in shape):
            raise ArchitectureError(f"Reshape target must be (h, w, c) or (n,), got {self.shape!r}")
        _set(self, "shape", shape)
        _norm_inputs(self)


@dataclass(frozen=True)
class Softmax:
    """Softmax over the last (channel / feature) axis."""

    name: str = ""
    inputs: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _norm_inputs(self)


@dataclass(frozen=True)
class Activation:
    """A standalone activation ("relu" or "relu6")."""

    kind: str
    name: str = ""
    inputs: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind is None:
            raise ArchitectureError("Activation needs a kind")
        _check_activation(self.kind)
        _norm_inputs(self)


Layer = Union[
    Input, Conv2D, MaxPool, AvgPool, GlobalAvgPool, Dense, Add, Concat, Flatten, Reshape, Softmax, Activation
]
_LAYER_TYPES: Dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Input, Conv2D, MaxPool, AvgPool, GlobalAvgPool, Dense, Add, Concat, Flatten, Reshape, Softmax, Activation
    )
}


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


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> Tuple[int, int]:
    """TensorFlow SAME padding along one axis: (before, after)."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _spatial(shape: Shape, layer: Any) -> Shape:
    if len(shape) != 3:
        raise ArchitectureError(f"{type(layer).__name__} {layer.name!r} needs an (h, w, c) input, got {shape}")
    return shape


def _infer_shape(layer: Any, ins: Sequence[Shape]) -> Shape:
    if isinstance(layer, Input):
        return layer.shape
    if isinstance(layer, Conv2D):
        h, w, c = _spatial(ins[0], layer)
        if c % layer.groups:
            raise ArchitectureError(f"{layer.name!r}: in_ch {c} not divisible by groups {layer.groups}")
        return (
            _out_size(h, layer.kernel[0], layer.stride[0], layer.dilation[0], layer.padding),
            _out_size(w, layer.kernel[1], layer.stride[1], layer.dilation[1], layer.padding),
            layer.out_ch,
        )
    if isinstance(layer, (MaxPool, AvgPool)):
        h, w, c = _spatial(ins[0], layer)
        return (
            _out_size(h, layer.kernel[0], layer.stride[0], 1, layer.padding),
            _out_size(w, layer.kernel[1], layer.stride[1], 1, layer.padding),
            c,
        )
    if isinstance(layer, GlobalAvgPool):
        c = _spatial(ins[0], layer)[2]
        return (1, 1, c) if layer.keepdims else (c,)
    if isinstance(layer, Dense):
        if len(ins[0]) != 1:
            raise ArchitectureError(f"Dense {layer.name!r} needs a vector input, got {ins[0]} (add Flatten)")
        return (layer.units,)
    if isinstance(layer, Add):
        if len(ins) != 2 or ins[0] != ins[1]:
            raise ArchitectureError(f"Add {layer.name!r} needs two inputs of one shape, got {list(ins)}")
        return ins[0]
    if isinstance(layer, Concat):
        if len(ins) < 2:
            raise ArchitectureError(f"Concat {layer.name!r} needs at least two inputs")
        lead = {s[:-1] for s in ins}
        if len(lead) != 1 or len({len(s) for s in ins}) != 1:
            raise ArchitectureError(f"Concat {layer.name!r}: shapes differ outside the channel axis: {list(ins)}")
        return ins[0][:-1] + (sum(s[-1] for s in ins),)
    if isinstance(layer, Flatten):
        _spatial(ins[0], layer)
        return (math.prod(ins[0]),)
    if isinstance(layer, Reshape):
        if math.prod(layer.shape) != math.prod(ins[0]):
            raise ArchitectureError(f"Reshape {layer.name!r}: {ins[0]} has no {layer.shape} view")
        return layer.shape
    if isinstance(layer, (Softmax, Activation)):
        return ins[0]
    raise UnsupportedLayerError(f"no shape rule for {type(layer).__name__}")


def _arity(layer: Any) -> Optional[int]:
    if isinstance(layer, Input):
        return 0
    if isinstance(layer, Add):
        return 2
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
        elif isinstance(layer, Dense):
            shapes = {"kernel": (layer.units, arch.shapes[layer.inputs[0]][0])}
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
    numpy versions.
    """
    weights: Weights = {}
    for name, shapes in param_shapes(arch).items():
        rng = np.random.Generator(np.random.PCG64([int(seed), zlib.crc32(name.encode("utf-8"))]))
        kernel_shape = shapes["kernel"]
        fan_in = math.prod(kernel_shape[1:])
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
