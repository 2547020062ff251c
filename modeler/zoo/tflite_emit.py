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
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._files import atomic_write
from .arch import (
    GENERATOR_VERSION,
    Activation,
    Add,
    Architecture,
    AvgPool,
    Concat,
    Conv2D,
    Dense,
    Flatten,
    GlobalAvgPool,
    Input,
    MaxPool,
    Reshape,
    Shape,
    Softmax,
    UnsupportedLayerError,
    Weights,
    metadata_entries,
    resolve_weights,
)

__all__ = ["FILE_IDENTIFIER", "SCHEMA_VERSION", "tflite_shape", "build_tflite", "write_tflite", "TfliteGraph"]

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
_BUFFER_ALIGNMENT = 16


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("TFLite emission needs ai-edge-litert: pip install 'fleetmeter[modeler]'") from exc
    return schema


def tflite_shape(shape: Shape) -> List[int]:
    """Logical shape -> the TFLite tensor shape (batch 1, NHWC)."""
    return [1, *shape]


class TfliteGraph:
    """Accumulates tensors, buffers, operator codes and operators of one subgraph.

    Also used by :mod:`.special` to write hand-made fixtures.
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
            array = np.ascontiguousarray(data, dtype=dtype)
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

    def add_buffer(self, raw: bytes) -> int:
        self.buffers.append(_AlignedBuffer(raw))
        return len(self.buffers) - 1

    # -- operators --------------------------------------------------------
    def opcode(self, builtin: int, custom: Optional[str] = None, version: int = 1) -> int:
        key = (builtin, custom)
        if key not in self._opcode_index:
            code = self.schema.OperatorCodeT(
                deprecatedBuiltinCode=min(builtin, 127), customCode=custom, version=version, builtinCode=builtin
            )
            self.operator_codes.append(code)
            self._opcode_index[key] = len(self.operator_codes) - 1
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
    ) -> None:
        op = self.schema.OperatorT(
            opcodeIndex=self.opcode(builtin, custom),
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


def _fused(s: Any, activation: Optional[str]) -> int:
    return {
        None: s.ActivationFunctionType.NONE,
        "relu": s.ActivationFunctionType.RELU,
        "relu6": s.ActivationFunctionType.RELU6,
    }[activation]


def _padding(s: Any, padding: str) -> int:
    return s.Padding.SAME if padding == "same" else s.Padding.VALID


def _emit_layer(g: TfliteGraph, arch: Architecture, layer: Any, weights: Weights) -> None:
    s = g.schema
    op_codes = s.BuiltinOperator
    opts = s.BuiltinOptions
    name = layer.name
    x = [g.index(i) for i in layer.inputs]
    in_shapes = arch.in_shapes(layer)
    out = g.tensor(name, tflite_shape(arch.shapes[name]))

    if isinstance(layer, Conv2D):
        kernel = weights[name]["kernel"]  # OIHW
        in_ch = in_shapes[0][2]
        depthwise = layer.groups == in_ch and layer.groups > 1
        if depthwise:
            filt = g.tensor(f"{name}/kernel", [1, *layer.kernel, layer.out_ch], np.transpose(kernel, (1, 2, 3, 0)))
        else:
            filt = g.tensor(f"{name}/kernel", [layer.out_ch, *layer.kernel, in_ch // layer.groups],
                            np.transpose(kernel, (0, 2, 3, 1)))
        # TFLite's float conv kernels require a bias; bias=False gets zeros (as the converter does).
        bias_data = weights[name]["bias"] if layer.bias else np.zeros(layer.out_ch, dtype=np.float32)
        bias = g.tensor(f"{name}/bias", [layer.out_ch], bias_data)
        common = dict(
            padding=_padding(s, layer.padding),
            strideH=layer.stride[0],
            strideW=layer.stride[1],
            dilationHFactor=layer.dilation[0],
            dilationWFactor=layer.dilation[1],
            fusedActivationFunction=_fused(s, layer.activation),
        )
        if depthwise:
            options = s.DepthwiseConv2DOptionsT()
            options.depthMultiplier = layer.out_ch // in_ch
            code, kind = op_codes.DEPTHWISE_CONV_2D, opts.DepthwiseConv2DOptions
        else:
            options = s.Conv2DOptionsT()
            code, kind = op_codes.CONV_2D, opts.Conv2DOptions
        for key, value in common.items():
            setattr(options, key, value)
        g.op(code, [x[0], filt, bias], [out], kind, options)
    elif isinstance(layer, (MaxPool, AvgPool)):
        options = s.Pool2DOptionsT()
        options.padding = _padding(s, layer.padding)
        options.strideH, options.strideW = layer.stride
        options.filterHeight, options.filterWidth = layer.kernel
        code = op_codes.MAX_POOL_2D if isinstance(layer, MaxPool) else op_codes.AVERAGE_POOL_2D
        g.op(code, x, [out], opts.Pool2DOptions, options)
    elif isinstance(layer, GlobalAvgPool):
        axes = g.tensor(f"{name}/axes", [2], np.array([1, 2], dtype=np.int32), dtype="int32")
        options = s.ReducerOptionsT()
        options.keepDims = bool(layer.keepdims)
        g.op(op_codes.MEAN, [x[0], axes], [out], opts.ReducerOptions, options)
    elif isinstance(layer, Dense):
        w = weights[name]
        kernel = g.tensor(f"{name}/kernel", list(w["kernel"].shape), w["kernel"])
        bias = g.tensor(f"{name}/bias", [layer.units], w["bias"]) if layer.bias else -1
        options = s.FullyConnectedOptionsT()
        options.fusedActivationFunction = _fused(s, layer.activation)
        g.op(op_codes.FULLY_CONNECTED, [x[0], kernel, bias], [out], opts.FullyConnectedOptions, options)
    elif isinstance(layer, Add):
        options = s.AddOptionsT()
        options.fusedActivationFunction = _fused(s, layer.activation)
        g.op(op_codes.ADD, x, [out], opts.AddOptions, options)
    elif isinstance(layer, Concat):
        options = s.ConcatenationOptionsT()
        options.axis = len(arch.shapes[name])  # last axis of [1, ...]
        g.op(op_codes.CONCATENATION, x, [out], opts.ConcatenationOptions, options)
    elif isinstance(layer, (Flatten, Reshape)):
        target = tflite_shape(arch.shapes[name])
        shape = g.tensor(f"{name}/shape", [len(target)], np.array(target, dtype=np.int32), dtype="int32")
        options = s.ReshapeOptionsT()
        options.newShape = target
        g.op(op_codes.RESHAPE, [x[0], shape], [out], opts.ReshapeOptions, options)
    elif isinstance(layer, Softmax):
        options = s.SoftmaxOptionsT()
        options.beta = 1.0
        g.op(op_codes.SOFTMAX, x, [out], opts.SoftmaxOptions, options)
    elif isinstance(layer, Activation):
        g.op({"relu": op_codes.RELU, "relu6": op_codes.RELU6}[layer.kind], x, [out])
    else:
        raise UnsupportedLayerError(f"the TFLite emitter has no rule for {type(layer).__name__}")


def build_tflite(arch: Architecture, *, seed: int = 0, weights: Optional[Weights] = None) -> bytes:
    """Return the ``.tflite`` bytes for ``arch``.

    Weights come from ``weights`` when given (canonical layout, see
    :mod:`.arch`), else from :func:`.arch.init_weights` with ``seed``.
    """
    resolved = resolve_weights(arch, weights, seed)
    g = TfliteGraph()
    for layer in arch.layers:
        if isinstance(layer, Input):
            g.tensor(layer.name, tflite_shape(layer.shape))
        else:
            _emit_layer(g, arch, layer, resolved)
    return g.to_bytes(
        [g.index(i.name) for i in arch.input_layers],
        [g.index(o) for o in arch.outputs],
        description=f"fleetmeter.zoo generator {GENERATOR_VERSION}: {arch.name} ({arch.family})",
        metadata=metadata_entries(arch, None if weights is not None else seed),
    )


def write_tflite(
    arch: Architecture, path: Union[str, "os.PathLike[str]"], *, seed: int = 0, weights: Optional[Weights] = None
) -> int:
    """Build and write ``arch`` to ``path`` atomically; return the file size in bytes."""
    data = build_tflite(arch, seed=seed, weights=weights)
    atomic_write(path, data)
    return len(data)
