"""Architecture -> TFLite flatbuffer (NHWC, float32, batch 1, builtin ops).

Built with the object API of ``ai_edge_litert.schema_py_generated`` and a
``flatbuffers.Builder`` (file identifier ``TFL3``). Both are imported lazily.
The result is deterministic: same description and weights, same bytes.

Op mapping: ``Conv2D`` -> CONV_2D (DEPTHWISE_CONV_2D when ``groups ==
in_ch > 1``), pools -> MAX_POOL_2D / AVERAGE_POOL_2D, ``GlobalAvgPool`` ->
MEAN over axes (1, 2), ``Dense`` -> FULLY_CONNECTED, ``Add`` -> ADD,
``Concat`` -> CONCATENATION, ``Flatten``/``Reshape`` -> RESHAPE, ``Softmax`` ->
SOFTMAX, ``Activation`` -> RELU / RELU6. ReLU/ReLU6 after a conv, dense or add
is fused into the op, as the TFLite converter does. Constant buffers are
16-byte aligned.

The newer layers: foldable ``BatchNorm`` goes into its conv (:mod:`.fold`),
the rest become MUL + ADD with precomputed scale/shift; ``Mul`` -> MUL;
``Slice`` -> SLICE; ``ChannelShuffle`` -> RESHAPE/TRANSPOSE/RESHAPE;
``Dense`` on a sequence -> FULLY_CONNECTED with ``keep_num_dims``;
``LayerNorm`` (no builtin) -> MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, MUL, ADD;
``Attention`` -> RESHAPE/TRANSPOSE per input, MUL by ``1/sqrt(head_dim)``,
BATCH_MATMUL (``adj_y``), SOFTMAX, BATCH_MATMUL, TRANSPOSE/RESHAPE.
Activations that cannot be fused are their own ops: "sigmoid" -> LOGISTIC,
"hardswish" -> HARD_SWISH, "gelu" -> GELU (``approximate``), "swish" ->
LOGISTIC + MUL, "hardsigmoid" -> ADD 3 (fused RELU6) + MUL 1/6, as the
converter emits Keras' ``hard_sigmoid``.

Dense-prediction layers: ``Resize`` -> RESIZE_NEAREST_NEIGHBOR (no align
corners, no half-pixel centers) or RESIZE_BILINEAR (``half_pixel_centers``)
with a constant int32 size; ``ConvTranspose2D`` -> TRANSPOSE_CONV (output
shape, OHWI kernel, input, bias; no fused activation); ``PReLU`` -> PRELU
with a ``[1, 1, C]`` alpha (``[C]`` for sequences and vectors); ``Pad`` ->
PAD with ``[[0, 0], [top, bottom], [left, right], [0, 0]]``.

Op versions are the lowest that cover the options used (FULLY_CONNECTED
with ``keep_num_dims``: 5; RESIZE_BILINEAR with half-pixel centers: 3;
TRANSPOSE_CONV with a bias: 3).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from fleetmeter.modelfile import TFLITE_IDENTIFIER

from ._files import atomic_write
from .arch import GENERATOR_VERSION, Architecture, Shape, Weights, metadata_entries, resolve_weights
from .fold import batchnorm_scale_shift, fold_batchnorm
from .layers import (Activation, Add, Attention, AvgPool, BatchNorm, ChannelShuffle, Concat, Conv2D, ConvTranspose2D,
                     Dense, Flatten, GlobalAvgPool, Input, LayerNorm, MaxPool, Mul, Pad, PReLU, Reshape, Resize, Scale,
                     Slice, Softmax, UnsupportedLayerError)

__all__ = ["FILE_IDENTIFIER", "SCHEMA_VERSION", "tflite_shape", "build_tflite", "write_tflite", "TfliteGraph",
           "float_graph"]

FILE_IDENTIFIER = TFLITE_IDENTIFIER
SCHEMA_VERSION = 3
_BUFFER_ALIGNMENT = 16


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("TFLite emission needs ai-edge-litert: pip install 'fleetmeter[zoo]'") from exc
    return schema


def tflite_shape(shape: Shape) -> List[int]:
    """Logical shape -> the TFLite tensor shape (batch 1, NHWC)."""
    return [1, *shape]


class TfliteGraph:
    """Accumulates tensors, buffers, operator codes and operators of one subgraph.

    Also used by :mod:`.odd_files` to write hand-made fixtures.
    """

    def __init__(self) -> None:
        self.schema = _schema()
        self.tensors: List[Any] = []
        self.buffers: List[Any] = [self.schema.BufferT()]  # buffer 0: the empty sentinel
        self.operator_codes: List[Any] = []
        self.operators: List[Any] = []
        self._opcode_index: Dict[Tuple[int, Optional[str]], int] = {}
        self._tensor_index: Dict[str, int] = {}

    # -- tensors ----------------------------------------------------------
    def tensor(self, name: str, shape: Sequence[int], data: Optional[np.ndarray] = None, dtype: str = "float32") -> int:
        s = self.schema
        if name in self._tensor_index:
            raise ValueError(f"duplicate tensor name {name!r}")
        buffer = 0
        if data is not None:
            array = np.asarray(data, dtype=dtype, order="C")  # keeps 0-d scalars 0-d
            if list(array.shape) != list(shape):
                raise ValueError(f"{name}: data shape {array.shape} != {list(shape)}")
            buffer = self.add_buffer(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
        tensor_type = {"float32": s.TensorType.FLOAT32, "int32": s.TensorType.INT32}[dtype]
        self.tensors.append(s.TensorT(shape=[int(d) for d in shape], type=tensor_type, buffer=buffer, name=name))
        index = len(self.tensors) - 1
        self._tensor_index[name] = index
        return index

    def index(self, name: str) -> int:
        return self._tensor_index[name]

    def const(self, name: str, data: np.ndarray, dtype: str = "float32") -> int:
        """A constant tensor shared by name: the first call creates it, later calls reuse it."""
        if name in self._tensor_index:
            return self._tensor_index[name]
        array = np.asarray(data, dtype=dtype)
        return self.tensor(name, list(array.shape), array, dtype=dtype)

    def add_buffer(self, raw: bytes) -> int:
        self.buffers.append(_AlignedBuffer(raw))
        return len(self.buffers) - 1

    # -- operators --------------------------------------------------------
    def opcode(self, builtin: int, custom: Optional[str] = None, version: int = 1) -> int:
        """The operator-code index of ``builtin``; its version is the highest any op asked for."""
        key = (builtin, custom)
        if key not in self._opcode_index:
            code = self.schema.OperatorCodeT(
                deprecatedBuiltinCode=min(builtin, 127), customCode=custom, version=version, builtinCode=builtin
            )
            self.operator_codes.append(code)
            self._opcode_index[key] = len(self.operator_codes) - 1
        code = self.operator_codes[self._opcode_index[key]]
        code.version = max(code.version, version)
        return self._opcode_index[key]

    def op(
        self,
        builtin: int,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options_type: int = 0,
        options: Any = None,
        custom: Optional[str] = None,
        custom_options: Optional[bytes] = None,
        version: int = 1,
    ) -> None:
        op = self.schema.OperatorT(
            opcodeIndex=self.opcode(builtin, custom, version),
            inputs=list(inputs),
            outputs=list(outputs),
            builtinOptionsType=options_type,
            builtinOptions=options,
        )
        if custom_options is not None:
            op.customOptions = list(custom_options)
        self.operators.append(op)

    # -- finishing --------------------------------------------------------
    def to_bytes(
        self,
        inputs: Sequence[int],
        outputs: Sequence[int],
        *,
        description: str,
        metadata: Sequence[Tuple[str, str]] = (),
    ) -> bytes:
        import flatbuffers

        s = self.schema
        subgraph = s.SubGraphT(
            tensors=self.tensors, inputs=list(inputs), outputs=list(outputs), operators=self.operators, name="main"
        )
        meta = [s.MetadataT(name=key, buffer=self.add_buffer(value.encode("utf-8"))) for key, value in metadata]
        signature = s.SignatureDefT(
            inputs=[s.TensorMapT(name=self.tensors[i].name, tensorIndex=i) for i in inputs],
            outputs=[s.TensorMapT(name=self.tensors[i].name, tensorIndex=i) for i in outputs],
            signatureKey="serving_default",
            subgraphIndex=0,
        )
        model = s.ModelT(
            version=SCHEMA_VERSION,
            operatorCodes=self.operator_codes,
            subgraphs=[subgraph],
            description=description,
            buffers=self.buffers,
            metadata=meta or None,
            signatureDefs=[signature],
        )
        payload = sum(len(b.data) for b in self.buffers if b.data is not None)
        builder = flatbuffers.Builder(payload + 64 * 1024)
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())


class _AlignedBuffer:
    """A ``BufferT`` stand-in whose data vector starts on a 16-byte boundary.

    The generated ``BufferT.Pack`` writes byte vectors one byte at a time and
    unaligned; weights deserve better.
    """

    def __init__(self, raw: bytes) -> None:
        self.data = raw
        self.offset = 0
        self.size = 0

    def Pack(self, builder: Any) -> int:  # noqa: N802 - flatbuffers naming
        s = _schema()
        n = len(self.data)
        builder.StartVector(1, n, _BUFFER_ALIGNMENT)
        builder.head = builder.head - n
        builder.Bytes[builder.head : builder.head + n] = self.data
        vector = builder.EndVector()
        s.BufferStart(builder)
        s.BufferAddData(builder, vector)
        return s.BufferEnd(builder)


_FUSABLE = (None, "relu", "relu6")


def _fused(s: Any, activation: Optional[str]) -> int:
    return {
        None: s.ActivationFunctionType.NONE,
        "relu": s.ActivationFunctionType.RELU,
        "relu6": s.ActivationFunctionType.RELU6,
    }[activation]


def _target(g: TfliteGraph, out: int, name: str, shape: Sequence[int], activation: Optional[str]) -> Tuple[int, int]:
    """``(tensor the main op writes, its fused activation)``: ``out`` itself when
    the activation fuses, else a fresh ``<name>/pre_act`` tensor that
    :func:`_activation` then maps into ``out``."""
    if activation in _FUSABLE:
        return out, _fused(g.schema, activation)
    return g.tensor(f"{name}/pre_act", shape), g.schema.ActivationFunctionType.NONE


def _binary(g: TfliteGraph, code: int, a: int, b: int, out: int, fused: int = 0) -> int:
    s = g.schema
    options_type, options = {
        s.BuiltinOperator.ADD: (s.BuiltinOptions.AddOptions, s.AddOptionsT),
        s.BuiltinOperator.SUB: (s.BuiltinOptions.SubOptions, s.SubOptionsT),
        s.BuiltinOperator.MUL: (s.BuiltinOptions.MulOptions, s.MulOptionsT),
    }[code]
    opts = options()
    opts.fusedActivationFunction = fused
    g.op(code, [a, b], [out], options_type, opts)
    return out


def _scalar(g: TfliteGraph, value: float) -> int:
    return g.const(f"const/{value!r}", np.array(value, dtype=np.float32))


def _activation(g: TfliteGraph, kind: str, x: int, out: int, name: str, shape: Sequence[int]) -> None:
    s = g.schema
    ops = s.BuiltinOperator
    if kind in ("relu", "relu6"):
        g.op(ops.RELU if kind == "relu" else ops.RELU6, [x], [out])
    elif kind == "sigmoid":
        g.op(ops.LOGISTIC, [x], [out])
    elif kind == "hardswish":
        g.op(ops.HARD_SWISH, [x], [out])
    elif kind == "hardsigmoid":  # relu6(x + 3) / 6
        shifted = _binary(g, ops.ADD, x, _scalar(g, 3.0), g.tensor(f"{name}/plus3", shape),
                          s.ActivationFunctionType.RELU6)
        _binary(g, ops.MUL, shifted, _scalar(g, 1.0 / 6.0), out)
    elif kind == "swish":
        gate = g.tensor(f"{name}/sigmoid", shape)
        g.op(ops.LOGISTIC, [x], [gate])
        _binary(g, ops.MUL, x, gate, out)
    elif kind == "gelu":
        options = s.GeluOptionsT()
        options.approximate = True
        g.op(ops.GELU, [x], [out], s.BuiltinOptions.GeluOptions, options)
    else:
        raise UnsupportedLayerError(f"activation {kind!r}")


def _int32(g: TfliteGraph, name: str, values: Sequence[int]) -> int:
    """A new constant int32 vector tensor (shapes, axes, sizes)."""
    return g.tensor(name, [len(values)], np.array(values, dtype=np.int32), dtype="int32")


def _reshape(g: TfliteGraph, x: int, shape: Sequence[int], out: int, name: str) -> int:
    s = g.schema
    target = _int32(g, f"{name}/shape", shape)
    options = s.ReshapeOptionsT()
    options.newShape = list(shape)
    g.op(s.BuiltinOperator.RESHAPE, [x, target], [out], s.BuiltinOptions.ReshapeOptions, options)
    return out


def _transpose(g: TfliteGraph, x: int, perm: Sequence[int], out: int, name: str) -> int:
    s = g.schema
    perm_t = _int32(g, f"{name}/perm", perm)
    g.op(s.BuiltinOperator.TRANSPOSE, [x, perm_t], [out], s.BuiltinOptions.TransposeOptions, s.TransposeOptionsT())
    return out


def _mean(g: TfliteGraph, x: int, axes: Sequence[int], keepdims: bool, out: int, name: str) -> int:
    s = g.schema
    axes_t = _int32(g, f"{name}/axes", axes)
    options = s.ReducerOptionsT()
    options.keepDims = keepdims
    g.op(s.BuiltinOperator.MEAN, [x, axes_t], [out], s.BuiltinOptions.ReducerOptions, options)
    return out


def _padding(s: Any, padding: str) -> int:
    return s.Padding.SAME if padding == "same" else s.Padding.VALID


def _out_shape(arch: Architecture, layer: Any) -> List[int]:
    return tflite_shape(arch.shapes[layer.name])


def _zero_or_bias(g: TfliteGraph, layer: Any, weights: Weights) -> int:
    """The bias tensor; TFLite's float conv kernels require one, so bias=False gets zeros (as the converter does)."""
    data = weights[layer.name]["bias"] if layer.bias else np.zeros(layer.out_ch, dtype=np.float32)
    return g.tensor(f"{layer.name}/bias", [layer.out_ch], data)


@functools.singledispatch
def _emit_op(layer: Any, g: TfliteGraph, arch: Architecture, weights: Weights, x: List[int], out: int) -> None:
    """Add the ops of ``layer`` to ``g``, reading tensors ``x`` and writing ``out`` (already created; see
    :func:`_target` for activations that do not fuse): one function registered per layer kind (Input has none)."""
    raise UnsupportedLayerError(f"the TFLite emitter has no rule for {type(layer).__name__}")


@_emit_op.register(Conv2D)
def _emit_conv(layer: Conv2D, g: TfliteGraph, arch: Architecture, weights: Weights, x: List[int], out: int) -> None:
    s, name = g.schema, layer.name
    kernel = weights[name]["kernel"]  # OIHW
    in_ch = arch.in_shapes(layer)[0][2]
    depthwise = layer.groups == in_ch and layer.groups > 1
    if depthwise:
        filt = g.tensor(f"{name}/kernel", [1, *layer.kernel, layer.out_ch], np.transpose(kernel, (1, 2, 3, 0)))
        options = s.DepthwiseConv2DOptionsT()
        options.depthMultiplier = layer.out_ch // in_ch
        code, kind = s.BuiltinOperator.DEPTHWISE_CONV_2D, s.BuiltinOptions.DepthwiseConv2DOptions
    else:
        filt = g.tensor(f"{name}/kernel", [layer.out_ch, *layer.kernel, in_ch // layer.groups],
                        np.transpose(kernel, (0, 2, 3, 1)))
        options = s.Conv2DOptionsT()
        code, kind = s.BuiltinOperator.CONV_2D, s.BuiltinOptions.Conv2DOptions
    bias = _zero_or_bias(g, layer, weights)
    target, options.fusedActivationFunction = _target(g, out, name, _out_shape(arch, layer), layer.activation)
    options.padding = _padding(s, layer.padding)
    options.strideH, options.strideW = layer.stride
    options.dilationHFactor, options.dilationWFactor = layer.dilation
    g.op(code, [x[0], filt, bias], [target], kind, options)


@_emit_op.register(MaxPool)
@_emit_op.register(AvgPool)
def _emit_pool(layer: Union[MaxPool, AvgPool], g: TfliteGraph, arch: Architecture, weights: Weights,
               x: List[int], out: int) -> None:
    s = g.schema
    options = s.Pool2DOptionsT()
    options.padding = _padding(s, layer.padding)
    options.strideH, options.strideW = layer.stride
    options.filterHeight, options.filterWidth = layer.kernel
    code = s.BuiltinOperator.MAX_POOL_2D if isinstance(layer, MaxPool) else s.BuiltinOperator.AVERAGE_POOL_2D
    g.op(code, x, [out], s.BuiltinOptions.Pool2DOptions, options)


@_emit_op.register(GlobalAvgPool)
def _emit_global_pool(layer: GlobalAvgPool, g: TfliteGraph, arch: Architecture, weights: Weights,
                      x: List[int], out: int) -> None:
    axes = [1] if len(arch.in_shapes(layer)[0]) == 2 else [1, 2]  # tokens of [1, seq, dim] / h, w of NHWC
    _mean(g, x[0], axes, bool(layer.keepdims), out, layer.name)


@_emit_op.register(Dense)
def _emit_dense(layer: Dense, g: TfliteGraph, arch: Architecture, weights: Weights, x: List[int], out: int) -> None:
    s, name, w = g.schema, layer.name, weights[layer.name]
    kernel = g.tensor(f"{name}/kernel", list(w["kernel"].shape), w["kernel"])
    bias = g.tensor(f"{name}/bias", [layer.units], w["bias"]) if layer.bias else -1
    options = s.FullyConnectedOptionsT()
    target, options.fusedActivationFunction = _target(g, out, name, _out_shape(arch, layer), layer.activation)
    sequence = len(arch.in_shapes(layer)[0]) == 2
    options.keepNumDims = sequence
    g.op(s.BuiltinOperator.FULLY_CONNECTED, [x[0], kernel, bias], [target], s.BuiltinOptions.FullyConnectedOptions,
         options, version=5 if sequence else 1)


@_emit_op.register(Add)
def _emit_add(layer: Add, g: TfliteGraph, arch: Architecture, weights: Weights, x: List[int], out: int) -> None:
    target, fused = _target(g, out, layer.name, _out_shape(arch, layer), layer.activation)
    _binary(g, g.schema.BuiltinOperator.ADD, x[0], x[1], target, fused)


@_emit_op.register(Concat)
def _emit_concat(layer: Concat, g: TfliteGraph, arch: Architecture, weights: Weights, x: List[int], out: int) -> None:
    s = g.schema
    options = s.ConcatenationOptionsT()
    options.axis = len(arch.shapes[layer.name])  # last axis of [1, ...]
    g.op(s.BuiltinOperator.CONCATENATION, x, [out], s.BuiltinOptions.ConcatenationOptions, options)


@_emit_op.register(Flatten)
@_emit_op.register(Reshape)
def _emit_reshape(layer: Union[Flatten, Reshape], g: TfliteGraph, arch: Architecture, weights: Weights,
                  x: List[int], out: int) -> None:
    _reshape(g, x[0], _out_shape(arch, layer), out, layer.name)


@_emit_op.register(Softmax)
def _emit_softmax(layer: Softmax, g: TfliteGraph, arch: Architecture, weights: Weights, x: List[int], out: int) -> None:
    s = g.schema
    options = s.SoftmaxOptionsT()
    options.beta = 1.0
    g.op(s.BuiltinOperator.SOFTMAX, x, [out], s.BuiltinOptions.SoftmaxOptions, options)


@_emit_op.register(Activation)
def _emit_activation(layer: Activation, g: TfliteGraph, arch: Architecture, weights: Weights,
                     x: List[int], out: int) -> None:
    _activation(g, layer.kind, x[0], out, layer.name, _out_shape(arch, layer))


@_emit_op.register(BatchNorm)
def _emit_batchnorm(layer: BatchNorm, g: TfliteGraph, arch: Architecture, weights: Weights,
                    x: List[int], out: int) -> None:
    ops, name, shape = g.schema.BuiltinOperator, layer.name, _out_shape(arch, layer)
    scale, shift = batchnorm_scale_shift(weights[name], layer.epsilon)
    scaled = _binary(g, ops.MUL, x[0], g.tensor(f"{name}/scale", [len(scale)], scale.astype(np.float32)),
                     g.tensor(f"{name}/scaled", shape))
    target, fused = _target(g, out, name, shape, layer.activation)
    _binary(g, ops.ADD, scaled, g.tensor(f"{name}/shift", [len(shift)], shift.astype(np.float32)), target, fused)


@_emit_op.register(Mul)
def _emit_mul(layer: Mul, g: TfliteGraph, arch: Architecture, weights: Weights, x: List[int], out: int) -> None:
    _binary(g, g.schema.BuiltinOperator.MUL, x[0], x[1], out)


@_emit_op.register(Scale)
def _emit_scale(layer: Scale, g: TfliteGraph, arch: Architecture, weights: Weights, x: List[int], out: int) -> None:
    _binary(g, g.schema.BuiltinOperator.MUL, x[0], _scalar(g, layer.factor), out)


@_emit_op.register(Slice)
def _emit_slice(layer: Slice, g: TfliteGraph, arch: Architecture, weights: Weights, x: List[int], out: int) -> None:
    s, name = g.schema, layer.name
    shape = tflite_shape(arch.in_shapes(layer)[0])
    begin_t = _int32(g, f"{name}/begin", [0] * (len(shape) - 1) + [layer.start])
    size_t = _int32(g, f"{name}/size", shape[:-1] + [layer.size])
    g.op(s.BuiltinOperator.SLICE, [x[0], begin_t, size_t], [out], s.BuiltinOptions.SliceOptions, s.SliceOptionsT())


@_emit_op.register(ChannelShuffle)
def _emit_shuffle(layer: ChannelShuffle, g: TfliteGraph, arch: Architecture, weights: Weights,
                  x: List[int], out: int) -> None:
    name, (h, w, c), groups = layer.name, arch.in_shapes(layer)[0], layer.groups
    grouped = _reshape(g, x[0], [1, h * w, groups, c // groups],
                       g.tensor(f"{name}/grouped", [1, h * w, groups, c // groups]), f"{name}/group")
    swapped = _transpose(g, grouped, [0, 1, 3, 2], g.tensor(f"{name}/swapped", [1, h * w, c // groups, groups]),
                         f"{name}/transpose")
    _reshape(g, swapped, tflite_shape(arch.in_shapes(layer)[0]), out, name)


@_emit_op.register(Resize)
def _emit_resize(layer: Resize, g: TfliteGraph, arch: Architecture, weights: Weights, x: List[int], out: int) -> None:
    s = g.schema
    out_h, out_w, _ = arch.shapes[layer.name]
    size = _int32(g, f"{layer.name}/size", [out_h, out_w])
    if layer.mode == "nearest":
        options = s.ResizeNearestNeighborOptionsT()
        options.alignCorners, options.halfPixelCenters = False, False
        g.op(s.BuiltinOperator.RESIZE_NEAREST_NEIGHBOR, [x[0], size], [out],
             s.BuiltinOptions.ResizeNearestNeighborOptions, options)
    else:
        options = s.ResizeBilinearOptionsT()
        options.alignCorners, options.halfPixelCenters = False, True
        g.op(s.BuiltinOperator.RESIZE_BILINEAR, [x[0], size], [out], s.BuiltinOptions.ResizeBilinearOptions, options,
             version=3)


@_emit_op.register(ConvTranspose2D)
def _emit_conv_transpose(layer: ConvTranspose2D, g: TfliteGraph, arch: Architecture, weights: Weights,
                         x: List[int], out: int) -> None:
    s, name = g.schema, layer.name
    shape_t = _int32(g, f"{name}/output_shape", _out_shape(arch, layer))
    filt = g.tensor(f"{name}/kernel", [layer.out_ch, *layer.kernel, arch.in_shapes(layer)[0][2]],
                    np.transpose(weights[name]["kernel"], (1, 2, 3, 0)))  # IOHW -> OHWI
    bias = _zero_or_bias(g, layer, weights)
    options = s.TransposeConvOptionsT()
    options.padding = _padding(s, layer.padding)
    options.strideH, options.strideW = layer.stride
    g.op(s.BuiltinOperator.TRANSPOSE_CONV, [shape_t, filt, x[0], bias], [out], s.BuiltinOptions.TransposeConvOptions,
         options, version=3)


@_emit_op.register(PReLU)
def _emit_prelu(layer: PReLU, g: TfliteGraph, arch: Architecture, weights: Weights, x: List[int], out: int) -> None:
    alpha = weights[layer.name]["alpha"]
    shape = [1, 1, len(alpha)] if len(arch.in_shapes(layer)[0]) == 3 else [len(alpha)]
    g.op(g.schema.BuiltinOperator.PRELU, [x[0], g.tensor(f"{layer.name}/alpha", shape, alpha.reshape(shape))], [out])


@_emit_op.register(Pad)
def _emit_pad(layer: Pad, g: TfliteGraph, arch: Architecture, weights: Weights, x: List[int], out: int) -> None:
    s = g.schema
    paddings = np.array([[0, 0], [layer.top, layer.bottom], [layer.left, layer.right], [0, 0]], dtype=np.int32)
    pad_t = g.tensor(f"{layer.name}/paddings", [4, 2], paddings, dtype="int32")
    g.op(s.BuiltinOperator.PAD, [x[0], pad_t], [out], s.BuiltinOptions.PadOptions, s.PadOptionsT())


@_emit_op.register(LayerNorm)
def _emit_layer_norm(layer: LayerNorm, g: TfliteGraph, arch: Architecture, weights: Weights,
                     inputs: List[int], out: int) -> None:
    ops, name, w = g.schema.BuiltinOperator, layer.name, weights[layer.name]
    x, shape = inputs[0], tflite_shape(arch.in_shapes(layer)[0])
    reduced = shape[:-1] + [1]
    axis = [len(shape) - 1]
    mean = _mean(g, x, axis, True, g.tensor(f"{name}/mean", reduced), f"{name}/mean")
    centered = _binary(g, ops.SUB, x, mean, g.tensor(f"{name}/centered", shape))
    squared = _binary(g, ops.MUL, centered, centered, g.tensor(f"{name}/squared", shape))
    variance = _mean(g, squared, axis, True, g.tensor(f"{name}/variance", reduced), f"{name}/variance")
    shifted = _binary(g, ops.ADD, variance, _scalar(g, layer.epsilon), g.tensor(f"{name}/variance_eps", reduced))
    inv_std = g.tensor(f"{name}/inv_std", reduced)
    g.op(ops.RSQRT, [shifted], [inv_std])
    normed = _binary(g, ops.MUL, centered, inv_std, g.tensor(f"{name}/normed", shape))
    scaled = _binary(g, ops.MUL, normed, g.tensor(f"{name}/gamma", [shape[-1]], w["gamma"]),
                     g.tensor(f"{name}/scaled", shape))
    _binary(g, ops.ADD, scaled, g.tensor(f"{name}/beta", [shape[-1]], w["beta"]), out)


@_emit_op.register(Attention)
def _emit_attention(layer: Attention, g: TfliteGraph, arch: Architecture, weights: Weights,
                    x: List[int], out: int) -> None:
    s = g.schema
    ops = s.BuiltinOperator
    name = layer.name
    seq, dim = arch.in_shapes(layer)[0]
    heads, head_dim = layer.heads, dim // layer.heads
    split, per_head = [1, seq, heads, head_dim], [1, heads, seq, head_dim]
    heads_first = []
    for role, tensor in zip("qkv", x):
        x4 = _reshape(g, tensor, split, g.tensor(f"{name}/{role}_split", split), f"{name}/{role}_split")
        heads_first.append(_transpose(g, x4, [0, 2, 1, 3], g.tensor(f"{name}/{role}_heads", per_head),
                                      f"{name}/{role}_heads"))
    q, k, v = heads_first
    q_scaled = _binary(g, ops.MUL, q, _scalar(g, 1.0 / float(np.sqrt(head_dim))),
                       g.tensor(f"{name}/q_scaled", per_head))

    def batch_matmul(a: int, b: int, out_name: str, out_shape: List[int], adj_y: bool) -> int:
        options = s.BatchMatMulOptionsT()
        options.adjY = adj_y
        result = g.tensor(out_name, out_shape)
        g.op(ops.BATCH_MATMUL, [a, b], [result], s.BuiltinOptions.BatchMatMulOptions, options)
        return result

    scores = batch_matmul(q_scaled, k, f"{name}/scores", [1, heads, seq, seq], adj_y=True)
    softmax = s.SoftmaxOptionsT()
    softmax.beta = 1.0
    probs = g.tensor(f"{name}/probs", [1, heads, seq, seq])
    g.op(ops.SOFTMAX, [scores], [probs], s.BuiltinOptions.SoftmaxOptions, softmax)
    context = batch_matmul(probs, v, f"{name}/context", per_head, adj_y=False)
    merged = _transpose(g, context, [0, 2, 1, 3], g.tensor(f"{name}/merged", split), f"{name}/merge")
    _reshape(g, merged, [1, seq, dim], out, name)


def _emit_layer(g: TfliteGraph, arch: Architecture, layer: Any, weights: Weights) -> None:
    """The output tensor of ``layer``, its ops (:func:`_emit_op`), then its activation when that did not fuse."""
    out = g.tensor(layer.name, _out_shape(arch, layer))
    _emit_op(layer, g, arch, weights, [g.index(i) for i in layer.inputs], out)
    if getattr(layer, "activation", None) not in _FUSABLE:  # _target wrote <name>/pre_act
        _activation(g, layer.activation, g.index(f"{layer.name}/pre_act"), out, layer.name, _out_shape(arch, layer))


def build_tflite(arch: Architecture, *, seed: int = 0, weights: Optional[Weights] = None) -> bytes:
    """Return the ``.tflite`` bytes for ``arch``.

    Weights come from ``weights`` when given (canonical layout, see
    :mod:`.arch`), else from :func:`.arch.init_weights` with ``seed``.
    """
    g, inputs, outputs = float_graph(arch, resolve_weights(arch, weights, seed))
    return g.to_bytes(
        inputs,
        outputs,
        description=f"fleetmeter.zoo generator {GENERATOR_VERSION}: {arch.name} ({arch.family})",
        metadata=metadata_entries(arch, None if weights is not None else seed),
    )


def float_graph(arch: Architecture, weights: Weights) -> Tuple[TfliteGraph, List[int], List[int]]:
    """``(graph, input indices, output indices)`` of the float32 model of ``arch``
    with resolved ``weights``, before serialization (:mod:`.tflite_quant`
    rewrites it into the int8 model)."""
    arch, weights = fold_batchnorm(arch, weights)
    g = TfliteGraph()
    for layer in arch.layers:
        if isinstance(layer, Input):
            g.tensor(layer.name, tflite_shape(layer.shape))
        else:
            _emit_layer(g, arch, layer, weights)
    return g, [g.index(i.name) for i in arch.input_layers], [g.index(o) for o in arch.outputs]


def write_tflite(
    arch: Architecture, path: Union[str, "os.PathLike[str]"], *, seed: int = 0, weights: Optional[Weights] = None
) -> int:
    """Build and write ``arch`` to ``path`` atomically; return the file size in bytes."""
    data = build_tflite(arch, seed=seed, weights=weights)
    atomic_write(path, data)
    return len(data)
