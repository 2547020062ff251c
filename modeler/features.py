"""Model features from the graph alone: per-node (kernel) records and model aggregates.

:func:`extract_features` reads an ONNX or TFLite file (or its bytes) and
returns :class:`ModelFeatures`: a list of :class:`NodeFeatures` (one per
operator, after :func:`fuse_activations`) and a flat, numeric ``model`` dict
for the per-platform predictors. Nothing is run; no TensorFlow is needed.
:data:`FEATURE_SCHEMA_VERSION` travels with every result and must travel with
every predictor trained on it: bump it whenever a key, a convention or a
normalization below changes.

Normalized op types (``NodeFeatures.op_type``), the same for both formats::

    compute     conv1d conv2d conv3d depthwise_conv2d conv_transpose2d dense matmul
                pool_max pool_avg global_pool global_pool_max
                reduce_mean reduce_max reduce_sum
    recurrent   lstm gru rnn
    elementwise add sub mul div resize cast quantize dequantize
                softmax log_softmax batchnorm layernorm instancenorm
                activation:relu activation:relu6 activation:relu_n1_to_1
                activation:clip activation:sigmoid activation:tanh
                activation:hardswish activation:hardsigmoid
                activation:leaky_relu activation:prelu activation:elu
                activation:gelu
    data moves  concat split slice pad gather depth_to_space space_to_depth
    layout      reshape transpose identity
    unknown     other:<raw op name>   (anything else; never dropped)

``reshape`` (also Flatten, Squeeze, Unsqueeze, EXPAND_DIMS), ``transpose``
and ``identity`` (also Dropout) are *layout* ops (:data:`LAYOUT_OPS`): the
two formats need different ones for the same network (an NCHW graph
transposes before flattening, an NHWC graph does not), so they are excluded
from kernels and from every model aggregate except ``layout_node_count`` and
``layout_bytes``. Grouped convolutions are ``conv2d`` with ``groups > 1``;
``groups == in_channels > 1`` (any depth multiplier) is ``depthwise_conv2d``.
A MatMul/Gemm/FULLY_CONNECTED/BATCH_MATMUL whose right operand is a constant
matrix is ``dense``; two activations make a ``matmul``. A mean over H and W of
a 4-D tensor is ``global_pool``. ONNX ``Constant`` nodes produce constants,
not records.

Layout of the reported shapes: feature maps are **NCHW** for both formats
(every rank-4 TFLite activation tensor is taken as NHWC and reported as
NCHW); other ranks are reported as stored. Dynamic or symbolic dimensions
count as 1, unless ``input_shapes`` (:func:`extract_features`) sets a graph
input's shape, as a sweep's input overrides set it for the runtime; then
every shape follows from it (ONNX: shape inference from the new input dims;
TFLite: LiteRT's own resize). An input left dynamic is named in
``ModelFeatures.warnings``. ``kernel``/``stride``/``dilation`` are
``(h, w)``, ``padding`` is ``(top, left, bottom, right)`` in pixels (TFLite SAME is resolved to
TensorFlow's amounts, the extra row/column after); a 1-D op uses ``w = 1``.
Fields that do not apply are 0.

MACs conventions (multiply-accumulates, batch included):

* conv: ``out_h*out_w*out_c * k_h*k_w * in_c/groups`` (depthwise: ``in_c/groups == 1``);
* conv_transpose: ``in_h*in_w*in_c * k_h*k_w * out_c/groups``;
* dense / matmul: ``output elements * K`` (a ``[1, in]`` input: ``in*out``);
* pools: ``output elements * k_h*k_w``; global pools and reductions: input elements;
* elementwise ops, activations, softmax, norms, resize, cast, quantize: output elements;
* concat, split, slice, pad, gather and layout ops: 0 (pure data movement,
  seen through the byte counts);
* ``other:*``: output elements.

A fused activation adds its own cost (one MAC per output element) to its
host, and :func:`fuse_activations` sums the records it merges, so a model's
total MACs and parameters do not depend on fusion or on the format.

Bytes: ``param_bytes`` counts the constant *weight* operands (conv/dense
kernels and biases, norm scales and statistics, constant operands of
elementwise ops), not shape/axes/clip-bound constants. An all-zero bias
(conv, dense, layer/instance-norm bias) counts as no bias: TFLite float
convolutions need one and emitters (``fleetmeter.modeler.zoo``, the TF
converter) write zeros where the source network had none. BatchNormalization
statistics always count (4 per channel), zero or not.
``act_read_bytes`` is the bytes of the non-constant inputs, ``act_write_bytes``
those of the outputs; ``arithmetic_intensity = macs / (param_bytes +
act_read_bytes + act_write_bytes)`` (0 when nothing moves).

Kernels: :func:`fuse_activations` merges an activation (and a BatchNorm)
into the op before it, as runtimes do; ``NodeFeatures.kernel_type`` names the
result (``conv2d+bn+relu``, ``depthwise_conv2d+relu6``, ``add+relu``, plain
``dense``): one kernel-level predictor per kernel type, fed
:meth:`NodeFeatures.numeric`.

Model aggregates (``ModelFeatures.model``, computed on the fused kernels,
layout ops left out) start with :data:`MODEL_CORE_KEYS` in that order, then
``bytes:<op_type>`` (weights read plus activations read and written), ``count:<op_type>``
and ``macs:<op_type>`` for each op type present, sorted,
then :data:`COVERAGE_KEYS`, what the parser did not understand (so that a
predictor can tell an estimate from a count, and serving can fall back on
work): ``unknown_node_count`` and ``unknown_macs`` (kernels of type
``other:*``, with their output-element MACs, plus the estimated MACs of
kernels whose shapes were not resolved), ``subgraph_node_count`` (kernels
inside control-flow bodies), ``loop_count`` (Loop/Scan/WHILE: bodies counted
once, the trip count unknown), ``unresolved_shape_count`` (records with an
output shape inference could not give) and ``quantized_node_count``.
``depth`` is the longest input-to-output path counted in kernels. For the
same network the ONNX and TFLite dicts agree on every key but
``layout_node_count`` and ``layout_bytes``.

Quantized ops map onto the float types with their MACs and ``quantized``
set: ONNX QLinearConv/ConvInteger are convolutions, QLinearMatMul,
MatMulInteger (and com.microsoft's DynamicQuantizeMatMul/MatMulIntegerToFloat)
dense or matmul, DynamicQuantizeLinear ``quantize``; a TFLite op is quantized
when its first activation input is an integer tensor. Recurrent ops are
``lstm``/``gru``/``rnn`` (ONNX LSTM/GRU/RNN and com.microsoft
DynamicQuantizeLSTM, TFLite's sequence RNN/LSTM ops): MACs are
``sequence x batch x (input + recurrent weight elements)`` plus one per
output element; ONNX Einsum's MACs are the product of every index's extent.

Control flow: the control-flow op stays an ``other:If``/``other:Loop``/...
record (no MACs), followed by the records of its body, named
``<op name>/<branch>/<node name>`` with ``subgraph`` set: for If (TFLite IF)
the branch with the larger MACs, for Loop/Scan (TFLite WHILE) the body once.
Nested control flow is descended into the same way. The parsers
(:mod:`.features_onnx`, :mod:`.features_tflite`) build the records of
:mod:`.graph`; the libraries they need are imported lazily: ``onnx`` for
ONNX, ``ai_edge_litert`` for TFLite (``pip install 'fleetmeter[modeler]'``).

Errors: a file that cannot be parsed raises :class:`fleetmeter.errors.InvalidArgument`
(a ``ValueError``; the gRPC boundary maps it to ``INVALID_ARGUMENT``) naming
the source and the reason; an unreadable path raises the ``OSError``.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from fleetmeter.modelfile import FORMATS, detect_format

from .features_onnx import parse_onnx
from .features_tflite import parse_tflite
from .graph import (KERNEL_FEATURE_KEYS, LAYOUT_OPS, NodeFeatures, ParsedGraph, Shape,  # noqa: F401 - re-exported
                    _invalid_model, _is_invalid_model, check_input_shapes, place_in_graph)

__all__ = [
    "FEATURE_SCHEMA_VERSION",
    "FORMATS",
    "LAYOUT_OPS",
    "FUSABLE_ACTIVATIONS",
    "MODEL_CORE_KEYS",
    "COVERAGE_KEYS",
    "KERNEL_FEATURE_KEYS",
    "NodeFeatures",
    "ModelFeatures",
    "ParsedGraph",
    "extract_features",
    "normalize_input_shapes",
    "input_shapes_key",
    "check_input_shapes",
    "dynamic_input_warning",
    "fuse_activations",
    "model_aggregates",
    "feature_vector",
    "feature_columns",
    "detect_format",
]

#: Version of every key, convention and normalization in this module.
FEATURE_SCHEMA_VERSION = 2


#: Activations :func:`fuse_activations` folds into the op before them.
FUSABLE_ACTIVATIONS = frozenset({
    "relu", "relu6", "relu_n1_to_1", "clip", "sigmoid", "tanh", "hardswish", "hardsigmoid", "leaky_relu",
})
#: Ops that take a fused activation (TFLite's fused_activation_function and more).
_FUSION_HOSTS = frozenset({
    "conv1d", "conv2d", "conv3d", "depthwise_conv2d", "conv_transpose2d", "dense", "matmul",
    "add", "sub", "mul", "div", "concat", "pool_max", "pool_avg", "batchnorm",
})
#: Ops a following BatchNormalization folds into.
_BN_HOSTS = frozenset({"conv1d", "conv2d", "conv3d", "depthwise_conv2d", "conv_transpose2d", "dense"})

#: The model aggregates every result has, in this order (then per-op-type keys).
MODEL_CORE_KEYS = (
    "node_count", "layout_node_count", "depth",
    "macs", "params", "param_bytes", "act_read_bytes", "act_write_bytes", "layout_bytes",
    "arithmetic_intensity", "largest_activation_bytes",
    "input_elements", "input_bytes", "output_elements",
    "fused_activation_count", "folded_bn_count",
)

#: What the parser did not understand, after the per-op-type keys in this order (see the module docstring).
COVERAGE_KEYS = (
    "unknown_node_count", "unknown_macs", "subgraph_node_count", "loop_count", "unresolved_shape_count",
    "quantized_node_count",
)
#: Control-flow ops whose body runs an unknown number of times (counted once).
LOOP_OPS = frozenset({"Loop", "Scan", "WHILE"})

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


@dataclass
class ModelFeatures:
    """Features of one model file. ``model`` is flat and numeric, keys in a stable order."""

    nodes: List[NodeFeatures]
    model: Dict[str, float]
    format: str
    source: str
    schema_version: int = FEATURE_SCHEMA_VERSION
    raw_nodes: List[NodeFeatures] = field(default_factory=list, repr=False)
    #: The ``input_shapes`` the features were computed at (name -> dims, the model's own layout).
    input_shapes: Dict[str, Shape] = field(default_factory=dict)
    #: What a prediction from these features should say (an input left at a dynamic size of 1).
    warnings: List[str] = field(default_factory=list)

    @property
    def kernels(self) -> List[NodeFeatures]:
        """The non-layout records: what kernel-level predictors see."""
        return [n for n in self.nodes if not n.is_layout]

    def kernel_types(self) -> List[str]:
        return [n.kernel_type for n in self.kernels]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "format": self.format,
            "source": self.source,
            "model": dict(self.model),
            "nodes": [n.to_dict() for n in self.nodes],
        }


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def normalize_input_shapes(shapes: Optional[Mapping[str, Sequence[int]]]) -> Dict[str, Shape]:
    """``{name: dims}`` as ``{str: tuple of int}``; :class:`~fleetmeter.errors.InvalidArgument` for an empty
    name, no dimensions or a dimension below 1."""
    out: Dict[str, Shape] = {}
    for name, dims in (shapes or {}).items():
        try:
            shape = tuple(int(d) for d in dims)
        except (TypeError, ValueError):
            raise _invalid_model(f"input shape for {name!r} must be a sequence of integers, got {dims!r}") from None
        if not name or not shape or any(d < 1 for d in shape):
            raise _invalid_model(f"bad input shape {name!r}={'x'.join(map(str, shape)) or '(none)'}: a name and "
                                 "positive dimensions, e.g. images=1x3x640x640")
        out[str(name)] = shape
    return out


def input_shapes_key(shapes: Optional[Mapping[str, Sequence[int]]]) -> Tuple[Tuple[str, Shape], ...]:
    """A hashable, order-independent key of ``shapes`` (``()`` for none): caches key features on
    ``(sha256, input_shapes_key(shapes))``."""
    return tuple(sorted((str(k), tuple(int(d) for d in v)) for k, v in (shapes or {}).items()))


def dynamic_input_warning(name: str) -> str:
    return (f"input {name!r} has a dynamic dimension (set to 1); pass --shape {name}=... "
            f"(Python: shapes={{{name!r}: (...)}}) to predict at the size it runs")


def extract_features(
    path_or_bytes: Source, format: Optional[str] = None, *, fuse: bool = True,  # noqa: A002
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
) -> ModelFeatures:
    """Features of the ONNX or TFLite model at ``path_or_bytes`` (a path or the file's bytes).

    A path is memory-mapped and only the graph is read, never the weights, so
    the time depends on the node count, not the file size. ``format``
    (``"onnx"``/``"tflite"``) overrides detection by content.
    ``nodes`` are fused kernels when ``fuse`` (the default; see
    :func:`fuse_activations`), else the raw operators (``raw_nodes`` always
    holds those); ``model`` is always computed on the fused kernels.
    ``input_shapes`` sets graph inputs' shapes (name -> every dimension, in
    the model's own layout: NCHW or NHWC as the runtime takes it); an input
    with a dynamic dimension it does not set is named in ``warnings``.
    Raises :class:`~fleetmeter.errors.InvalidArgument` (a ``ValueError``)
    naming the source when the model cannot be parsed, or an input name or
    rank in ``input_shapes`` is not the model's (the message lists its inputs).
    """
    if format is not None and format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    shapes = normalize_input_shapes(input_shapes)
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        source = "<bytes>"
        graph, fmt = _parse(bytes(path_or_bytes), source, format, shapes)
    else:
        source = os.fspath(path_or_bytes)
        # Memory-mapped: the parsers read the graph and skip the weights, whose
        # pages then never leave the page cache (a 100 MB file costs no copy).
        with open(source, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise _invalid_model(f"{source}: empty file, not a model")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                graph, fmt = _parse(data, source, format, shapes)
    try:
        fused = fuse_activations(graph.nodes, graph.output_names)
        model = model_aggregates(fused, graph)
    except OverflowError as exc:  # absurd shapes in a damaged file
        raise _invalid_model(f"{source}: implausible tensor shapes ({exc})") from exc
    return ModelFeatures(nodes=fused if fuse else list(graph.nodes), model=model, format=fmt,
                         source=source, raw_nodes=list(graph.nodes), input_shapes=shapes,
                         warnings=[dynamic_input_warning(n) for n in graph.dynamic_inputs])


def _parse(data: Any, source: str, format: Optional[str],  # noqa: A002
           input_shapes: Optional[Mapping[str, Shape]] = None) -> Tuple[ParsedGraph, str]:
    if not len(data):
        raise _invalid_model(f"{source}: empty file, not a model")
    fmt = format or detect_format(data[:8], source)
    parse = parse_tflite if fmt == "tflite" else parse_onnx
    try:
        return parse(data, source, input_shapes or {}), fmt
    except (TypeError, ValueError, IndexError, KeyError, OverflowError, ZeroDivisionError) as exc:
        # A file that parses but whose content contradicts its schema (an INTS
        # attribute stored as a float, an index past a table): still bad input.
        if _is_invalid_model(exc):
            raise
        raise _invalid_model(f"{source}: malformed {fmt} model ({type(exc).__name__}: {exc})") from exc


# --------------------------------------------------------------------------
# Fusion
# --------------------------------------------------------------------------


def fuse_activations(nodes: Sequence[NodeFeatures], graph_outputs: Iterable[str] = ()) -> List[NodeFeatures]:
    """Merge what runtimes run as one kernel; returns a new list, ``nodes`` is untouched.

    * a ``batchnorm`` right after a conv or dense is folded into it
      (``folded_bn``, kernel type ``conv2d+bn``);
    * an activation in :data:`FUSABLE_ACTIVATIONS` right after a conv,
      dense, matmul, add/sub/mul/div, concat, pool or batchnorm that has no
      fused activation yet becomes its ``fused_activation`` (the ops whose
      TFLite options carry a fused activation, and matmul/batchnorm).

    "Right after" means the host's only output is read by that one node and
    is not a graph output (TFLite's converter applies the same rule). The
    merged record keeps the host's name, inputs and geometry, takes the
    follower's outputs and written bytes, and sums MACs and parameters.
    ONNX's ``Conv -> Relu`` and TFLite's ``CONV_2D(fused RELU)`` give the
    same ``conv2d+relu`` record. Unmerged records are shared between the
    input and the result (records are treated as immutable everywhere).
    """
    outputs = set(graph_outputs)
    readers: Dict[str, int] = {}
    for node in nodes:
        for t in node.inputs:
            readers[t] = readers.get(t, 0) + 1
    merged: List[NodeFeatures] = []
    producer: Dict[str, int] = {}
    for node in nodes:
        host_index = _fusion_host(node, merged, producer, readers, outputs)
        if host_index is None:
            merged.append(node)  # shared with the input: records are never modified in place
            for t in node.outputs:
                producer[t] = len(merged) - 1
            continue
        host = merged[host_index]
        changes: Dict[str, Any] = dict(
            outputs=node.outputs, output_shapes=node.output_shapes, act_write_bytes=node.act_write_bytes,
            macs=host.macs + node.macs, params=host.params + node.params,
            param_bytes=host.param_bytes + node.param_bytes,
        )
        if node.op_type == "batchnorm":
            changes["folded_bn"] = True
        else:
            changes["fused_activation"] = node.op_type.split(":", 1)[1]
        merged[host_index] = dataclasses.replace(host, **changes)
        for t in node.outputs:
            producer[t] = host_index
    return merged


def _fusion_host(node: NodeFeatures, merged: List[NodeFeatures], producer: Mapping[str, int],
                 readers: Mapping[str, int], graph_outputs: set) -> Optional[int]:
    if node.op_type == "batchnorm":
        hosts = _BN_HOSTS
    elif node.op_type.startswith("activation:") and node.op_type[11:] in FUSABLE_ACTIVATIONS:
        hosts = _FUSION_HOSTS
    else:
        return None
    if len(node.inputs) != 1 or node.inputs[0] not in producer:
        return None
    index = producer[node.inputs[0]]
    host = merged[index]
    if host.op_type not in hosts or host.fused_activation is not None:
        return None
    if node.op_type == "batchnorm" and host.folded_bn:
        return None
    if len(host.outputs) != 1 or readers.get(host.outputs[0], 0) != 1 or host.outputs[0] in graph_outputs:
        return None
    return index


# --------------------------------------------------------------------------
# Aggregates and vectors
# --------------------------------------------------------------------------


def model_aggregates(nodes: Sequence[NodeFeatures], graph: ParsedGraph) -> Dict[str, float]:
    """The flat model dict (see the module docstring) for fused ``nodes`` of ``graph``."""
    kernels = [n for n in nodes if not n.is_layout]
    layout = [n for n in nodes if n.is_layout]
    totals = {
        "macs": sum(n.macs for n in nodes),
        "params": sum(n.params for n in nodes),
        "param_bytes": sum(n.param_bytes for n in nodes),
        "act_read_bytes": sum(n.act_read_bytes for n in kernels),
        "act_write_bytes": sum(n.act_write_bytes for n in kernels),
    }
    moved = totals["param_bytes"] + totals["act_read_bytes"] + totals["act_write_bytes"]
    per_op: Dict[str, List[int]] = {}
    for n in kernels:
        entry = per_op.setdefault(n.op_type, [0, 0, 0])
        entry[0] += 1
        entry[1] += n.macs
        entry[2] += n.param_bytes + n.act_read_bytes + n.act_write_bytes
    model: Dict[str, float] = {
        "node_count": len(kernels),
        "layout_node_count": len(layout),
        "depth": _depth(nodes),
        **totals,
        "layout_bytes": sum(n.act_read_bytes + n.act_write_bytes for n in layout),
        "arithmetic_intensity": totals["macs"] / moved if moved else 0.0,
        "largest_activation_bytes": max((n.act_write_bytes for n in kernels), default=0),
        "input_elements": sum(math.prod(s) for s in graph.input_shapes),
        "input_bytes": graph.input_bytes,
        "output_elements": sum(math.prod(s) for s in graph.output_shapes),
        "fused_activation_count": sum(1 for n in kernels if n.fused_activation),
        "folded_bn_count": sum(1 for n in kernels if n.folded_bn),
    }
    assert tuple(model) == MODEL_CORE_KEYS
    for op in sorted(per_op):
        model[f"bytes:{op}"] = per_op[op][2]
        model[f"count:{op}"] = per_op[op][0]
        model[f"macs:{op}"] = per_op[op][1]
    model.update(_coverage(nodes, kernels))
    return {k: float(v) for k, v in model.items()}


def _coverage(nodes: Sequence[NodeFeatures], kernels: Sequence[NodeFeatures]) -> Dict[str, float]:
    """:data:`COVERAGE_KEYS`: how much of the model the parser did not understand (see the module docstring)."""
    unknown = [n for n in kernels if n.op_type.startswith("other:")]
    guessed = [n for n in kernels if n.shape_unresolved and not n.op_type.startswith("other:")]
    return {
        "unknown_node_count": len(unknown),
        "unknown_macs": sum(n.macs for n in unknown) + sum(n.macs for n in guessed),
        "subgraph_node_count": sum(1 for n in kernels if n.subgraph),
        "loop_count": sum(1 for n in kernels if n.raw_op.rsplit(":", 1)[-1] in LOOP_OPS),
        "unresolved_shape_count": sum(1 for n in nodes if n.shape_unresolved),
        "quantized_node_count": sum(1 for n in kernels if n.quantized),
    }


def _depth(nodes: Sequence[NodeFeatures]) -> int:
    """Longest path in kernels (layout records count 0); nodes are in topological order."""
    depth_of: Dict[str, int] = {}
    best = 0
    for n in nodes:
        d = max((depth_of.get(t, 0) for t in n.inputs), default=0) + (0 if n.is_layout else 1)
        for t in n.outputs:
            depth_of[t] = d
        best = max(best, d)
    return best


def _model_dict(features: Union[ModelFeatures, Mapping[str, float]]) -> Mapping[str, float]:
    return features.model if isinstance(features, ModelFeatures) else features


def feature_vector(model_features: Union[ModelFeatures, Mapping[str, float]], columns: Sequence[str]) -> List[float]:
    """``model_features.model`` as floats in ``columns`` order; a missing key is 0."""
    model = _model_dict(model_features)
    return [float(model.get(c, 0.0)) for c in columns]


def feature_columns(features_list: Iterable[Union[ModelFeatures, Mapping[str, float]]]) -> List[str]:
    """The sorted union of model keys over ``features_list`` (a training set's columns).

    Raises ``ValueError`` when the items carry different schema versions.
    """
    columns: set = set()
    versions = set()
    for item in features_list:
        if isinstance(item, ModelFeatures):
            versions.add(item.schema_version)
        columns.update(_model_dict(item))
    if len(versions) > 1:
        raise ValueError(f"features of different schema versions cannot share columns: {sorted(versions)}")
    return sorted(columns)
