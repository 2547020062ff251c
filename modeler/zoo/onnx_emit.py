"""Architecture -> ONNX (NCHW, float32, batch 1).

The file is deterministic: the same description and weights give the same
bytes (fixed producer, no timestamps, deterministic protobuf serialization).
``onnx`` is imported lazily so that importing the zoo stays cheap.

Layout: ONNX tensors are NCHW (``[1, seq, dim]`` for sequences, ``[1, n]``
for vectors). Where the logical element order (h, w, c; see :mod:`.arch`)
differs from NCHW — flattening or reshaping a feature map with both
``h*w > 1`` and ``c > 1`` — a ``Transpose`` node is inserted, exactly as
TF→ONNX converters do.

Op mapping beyond the obvious: foldable ``BatchNorm`` goes into its conv
(:mod:`.fold`), the rest become ``BatchNormalization``; ``Dense`` on a
sequence is ``MatMul`` + ``Add``; ``LayerNorm`` is ``LayerNormalization``
(opset 17); "hardsigmoid" is ``HardSigmoid(alpha=1/6, beta=0.5)``, "swish"
``Sigmoid`` + ``Mul``, and "gelu" the tanh approximation spelled out in
``Mul``/``Add``/``Tanh`` (``Gelu`` needs opset 20); ``ChannelShuffle`` is
Reshape/Transpose/Reshape; ``Attention`` is Reshape/Transpose per input,
``Mul`` by ``1/sqrt(head_dim)``, ``MatMul``, ``Softmax``, ``MatMul``,
Transpose/Reshape; ``Resize`` is ``Resize`` with constant ``scales``
(nearest: ``asymmetric`` coordinates, ``floor``; bilinear: ``linear``,
``half_pixel``); ``ConvTranspose2D`` is ``ConvTranspose`` with explicit
``pads``; ``PReLU`` is ``PRelu`` with a ``[C, 1, 1]`` slope (``[C]`` for
sequences and vectors); ``Pad`` is ``Pad`` (constant zero).
"""

from __future__ import annotations

import functools
import os
from typing import Any, List, Optional, Sequence, Union

import numpy as np

from ._files import atomic_write
from .arch import GENERATOR_VERSION, Architecture, Shape, Weights, metadata_entries, resolve_weights, same_padding
from .fold import fold_batchnorm
from .layers import (Activation, Add, Attention, AvgPool, BatchNorm, ChannelShuffle, Concat, Conv2D, ConvTranspose2D,
                     Dense, Flatten, GlobalAvgPool, Input, LayerNorm, MaxPool, Mul, Pad, PReLU, Reshape, Resize, Scale,
                     Slice, Softmax, UnsupportedLayerError)

__all__ = ["OPSET", "IR_VERSION", "PRODUCER_NAME", "onnx_shape", "build_onnx", "onnx_bytes", "write_onnx"]

#: Default-domain opset. 17 has everything a CNN/transformer zoo needs
#: (LayerNormalization) and runs on onnxruntime >= 1.13.
OPSET = 17
#: IR 8 (not the onnx package's newest) so older device runtimes load the files.
IR_VERSION = 8
PRODUCER_NAME = "fleetmeter.zoo"


def onnx_shape(shape: Shape) -> List[int]:
    """Logical shape -> the ONNX tensor shape (batch 1, NCHW)."""
    if len(shape) == 3:
        h, w, c = shape
        return [1, c, h, w]
    return [1, *shape]


def _layout_free(shape: Shape) -> bool:
    """True when NCHW and NHWC store this tensor's elements in the same order."""
    return len(shape) < 3 or shape[0] * shape[1] == 1 or shape[2] == 1


def _last_axis(shape: Shape) -> int:
    """The ONNX axis of the logical last (channel / feature) axis."""
    return 1 if len(shape) != 2 else 2


_GELU_C = 0.7978845608028654  # sqrt(2 / pi)


class _GraphWriter:
    def __init__(self) -> None:
        import onnx  # noqa: F401  (fail early with the real ImportError)

        self.nodes: List[Any] = []
        self.initializers: List[Any] = []
        self._names: set = set()

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        if name not in self._names:
            self._names.add(name)
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name=name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, name: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, list(inputs), [output], name=name, **attrs))
        return output

    def scalar(self, value: float) -> str:
        return self.const(f"const/{value!r}", np.array(value, dtype=np.float32))

    def activation(self, kind: Optional[str], x: str, out: str, name: str) -> str:
        if kind is None:
            return self.node("Identity", [x], out, name=name)
        if kind == "relu":
            return self.node("Relu", [x], out, name=name)
        if kind == "relu6":
            lo = self.const("const/relu6_min", np.array(0.0, dtype=np.float32))
            hi = self.const("const/relu6_max", np.array(6.0, dtype=np.float32))
            return self.node("Clip", [x, lo, hi], out, name=name)
        if kind == "sigmoid":
            return self.node("Sigmoid", [x], out, name=name)
        if kind == "hardswish":
            return self.node("HardSwish", [x], out, name=name)
        if kind == "hardsigmoid":
            return self.node("HardSigmoid", [x], out, name=name, alpha=1.0 / 6.0, beta=0.5)
        if kind == "swish":
            gate = self.node("Sigmoid", [x], f"{out}/sigmoid", name=f"{name}/sigmoid")
            return self.node("Mul", [x, gate], out, name=name)
        if kind == "gelu":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            x2 = self.node("Mul", [x, x], f"{out}/x2", name=f"{name}/x2")
            x3 = self.node("Mul", [x2, x], f"{out}/x3", name=f"{name}/x3")
            cubic = self.node("Mul", [x3, self.scalar(0.044715)], f"{out}/cubic", name=f"{name}/cubic")
            inner = self.node("Add", [x, cubic], f"{out}/inner", name=f"{name}/inner")
            scaled = self.node("Mul", [inner, self.scalar(_GELU_C)], f"{out}/scaled", name=f"{name}/scaled")
            tanh = self.node("Tanh", [scaled], f"{out}/tanh", name=f"{name}/tanh")
            one_plus = self.node("Add", [tanh, self.scalar(1.0)], f"{out}/one_plus", name=f"{name}/one_plus")
            half_x = self.node("Mul", [x, self.scalar(0.5)], f"{out}/half_x", name=f"{name}/half_x")
            return self.node("Mul", [half_x, one_plus], out, name=name)
        raise UnsupportedLayerError(f"activation {kind!r}")

    def reshape(self, x: str, shape: Sequence[int], out: str, name: str) -> str:
        target = self.const(f"{name}/shape", np.array(list(shape), dtype=np.int64))
        return self.node("Reshape", [x, target], out, name=name)

    def maybe_activation(self, kind: Optional[str], op: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        """Emit ``op`` writing tensor ``name``, followed by ``kind`` when set."""
        if kind is None:
            return self.node(op, inputs, name, name=name, **attrs)
        pre = self.node(op, inputs, f"{name}/pre_act", name=name, **attrs)
        return self.activation(kind, pre, name, name=f"{name}/{kind}")

    def to_nhwc(self, x: str, shape: Shape, name: str) -> str:
        if _layout_free(shape):
            return x
        return self.node("Transpose", [x], f"{name}/nhwc", name=f"{name}/to_nhwc", perm=[0, 2, 3, 1])


def _pool_pads(layer: Any, in_shape: Shape) -> List[int]:
    if layer.padding == "valid":
        return [0, 0, 0, 0]
    ph = same_padding(in_shape[0], layer.kernel[0], layer.stride[0], getattr(layer, "dilation", (1, 1))[0])
    pw = same_padding(in_shape[1], layer.kernel[1], layer.stride[1], getattr(layer, "dilation", (1, 1))[1])
    return [ph[0], pw[0], ph[1], pw[1]]


def _param_inputs(g: _GraphWriter, layer: Any, weights: Weights) -> List[str]:
    """``[input, kernel]`` plus the bias when the layer has one."""
    name, w = layer.name, weights[layer.name]
    inputs = [layer.inputs[0], g.const(f"{name}/kernel", w["kernel"])]
    if layer.bias:
        inputs.append(g.const(f"{name}/bias", w["bias"]))
    return inputs


@functools.singledispatch
def _emit_layer(layer: Any, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    """Add the nodes of ``layer`` to ``g``: one function registered per layer kind (Input has none)."""
    raise UnsupportedLayerError(f"the ONNX emitter has no rule for {type(layer).__name__}")


@_emit_layer.register(Conv2D)
def _emit_conv(layer: Conv2D, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    g.maybe_activation(
        layer.activation, "Conv", _param_inputs(g, layer, weights), layer.name,
        kernel_shape=list(layer.kernel), strides=list(layer.stride), dilations=list(layer.dilation),
        pads=_pool_pads(layer, arch.in_shapes(layer)[0]), group=layer.groups,
    )


@_emit_layer.register(MaxPool)
@_emit_layer.register(AvgPool)
def _emit_pool(layer: Union[MaxPool, AvgPool], g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    op, attrs = ("MaxPool", {}) if isinstance(layer, MaxPool) else ("AveragePool", {"count_include_pad": 0})
    g.node(op, layer.inputs, layer.name, name=layer.name, kernel_shape=list(layer.kernel),
           strides=list(layer.stride), pads=_pool_pads(layer, arch.in_shapes(layer)[0]), **attrs)


@_emit_layer.register(GlobalAvgPool)
def _emit_global_pool(layer: GlobalAvgPool, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    name, ins = layer.name, layer.inputs
    if len(arch.in_shapes(layer)[0]) == 2:  # mean over the tokens of [1, seq, dim]
        g.node("ReduceMean", ins, name, name=name, axes=[1], keepdims=0)
    elif layer.keepdims:
        g.node("GlobalAveragePool", ins, name, name=name)
    else:
        pooled = g.node("GlobalAveragePool", ins, f"{name}/pooled", name=name)
        g.node("Flatten", [pooled], name, name=f"{name}/flatten", axis=1)


@_emit_layer.register(Dense)
def _emit_dense(layer: Dense, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    name = layer.name
    if len(arch.in_shapes(layer)[0]) != 2:
        g.maybe_activation(layer.activation, "Gemm", _param_inputs(g, layer, weights), name, transB=1)
        return
    w = weights[name]  # a sequence: MatMul (+ Add)
    kernel = g.const(f"{name}/kernel_t", np.ascontiguousarray(w["kernel"].T))
    if not layer.bias:
        g.maybe_activation(layer.activation, "MatMul", [layer.inputs[0], kernel], name)
    else:
        product = g.node("MatMul", [layer.inputs[0], kernel], f"{name}/matmul", name=f"{name}/matmul")
        g.maybe_activation(layer.activation, "Add", [product, g.const(f"{name}/bias", w["bias"])], name)


@_emit_layer.register(Add)
def _emit_add(layer: Add, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    g.maybe_activation(layer.activation, "Add", layer.inputs, layer.name)


@_emit_layer.register(Concat)
def _emit_concat(layer: Concat, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    axis = _last_axis(arch.in_shapes(layer)[0])  # NCHW channels, or the feature axis of [1, n] / [1, seq, dim]
    g.node("Concat", layer.inputs, layer.name, name=layer.name, axis=axis)


@_emit_layer.register(Flatten)
def _emit_flatten(layer: Flatten, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    x = g.to_nhwc(layer.inputs[0], arch.in_shapes(layer)[0], layer.name)
    g.node("Flatten", [x], layer.name, name=layer.name, axis=1)


@_emit_layer.register(Reshape)
def _emit_reshape(layer: Reshape, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    name, dst = layer.name, layer.shape
    x = g.to_nhwc(layer.inputs[0], arch.in_shapes(layer)[0], name)
    if len(dst) == 1 or _layout_free(dst):
        g.node("Reshape", [x, g.const(f"{name}/shape", np.array(onnx_shape(dst), dtype=np.int64))], name, name=name)
    else:
        h, w, c = dst
        nhwc = g.node("Reshape", [x, g.const(f"{name}/shape", np.array([1, h, w, c], dtype=np.int64))],
                      f"{name}/reshaped", name=name)
        g.node("Transpose", [nhwc], name, name=f"{name}/to_nchw", perm=[0, 3, 1, 2])


@_emit_layer.register(Softmax)
def _emit_softmax(layer: Softmax, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    axis = 1 if len(arch.in_shapes(layer)[0]) == 3 else -1
    g.node("Softmax", layer.inputs, layer.name, name=layer.name, axis=axis)


@_emit_layer.register(Activation)
def _emit_activation(layer: Activation, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    g.activation(layer.kind, layer.inputs[0], layer.name, name=layer.name)


@_emit_layer.register(BatchNorm)
def _emit_batchnorm(layer: BatchNorm, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    name, w = layer.name, weights[layer.name]
    inputs = [layer.inputs[0]] + [g.const(f"{name}/{key}", w[key]) for key in ("gamma", "beta", "mean", "variance")]
    g.maybe_activation(layer.activation, "BatchNormalization", inputs, name, epsilon=layer.epsilon)


@_emit_layer.register(Mul)
def _emit_mul(layer: Mul, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    g.node("Mul", layer.inputs, layer.name, name=layer.name)


@_emit_layer.register(Scale)
def _emit_scale(layer: Scale, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    g.node("Mul", [layer.inputs[0], g.scalar(layer.factor)], layer.name, name=layer.name)


@_emit_layer.register(Slice)
def _emit_slice(layer: Slice, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    name, axis = layer.name, _last_axis(arch.in_shapes(layer)[0])
    consts = [g.const(f"{name}/{key}", np.array([value], dtype=np.int64))
              for key, value in (("starts", layer.start), ("ends", layer.start + layer.size), ("axes", axis))]
    g.node("Slice", [layer.inputs[0], *consts], name, name=name)


@_emit_layer.register(ChannelShuffle)
def _emit_shuffle(layer: ChannelShuffle, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    name, shape = layer.name, arch.in_shapes(layer)[0]
    h, w, c = shape
    grouped = g.reshape(layer.inputs[0], [1, layer.groups, c // layer.groups, h * w], f"{name}/grouped",
                        f"{name}/group")
    swapped = g.node("Transpose", [grouped], f"{name}/swapped", name=f"{name}/transpose", perm=[0, 2, 1, 3])
    g.reshape(swapped, onnx_shape(shape), name, name)


@_emit_layer.register(LayerNorm)
def _emit_layernorm(layer: LayerNorm, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    name, w = layer.name, weights[layer.name]
    g.node("LayerNormalization",
           [layer.inputs[0], g.const(f"{name}/gamma", w["gamma"]), g.const(f"{name}/beta", w["beta"])],
           name, name=name, axis=-1, epsilon=layer.epsilon)


@_emit_layer.register(Resize)
def _emit_resize(layer: Resize, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    name = layer.name
    scales = g.const(f"{name}/scales", np.array([1.0, 1.0, layer.scale, layer.scale], dtype=np.float32))
    if layer.mode == "nearest":
        attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    else:
        attrs = dict(mode="linear", coordinate_transformation_mode="half_pixel")
    g.node("Resize", [layer.inputs[0], "", scales], name, name=name, **attrs)


@_emit_layer.register(ConvTranspose2D)
def _emit_conv_transpose(layer: ConvTranspose2D, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    inputs = _param_inputs(g, layer, weights)
    out_h, out_w, _ = arch.shapes[layer.name]
    pads = [0, 0, 0, 0]
    if layer.padding == "same":
        (top, bottom), (left, right) = (same_padding(out_h, layer.kernel[0], layer.stride[0]),
                                        same_padding(out_w, layer.kernel[1], layer.stride[1]))
        pads = [top, left, bottom, right]
    g.node("ConvTranspose", inputs, layer.name, name=layer.name, kernel_shape=list(layer.kernel),
           strides=list(layer.stride), pads=pads)


@_emit_layer.register(PReLU)
def _emit_prelu(layer: PReLU, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    alpha = weights[layer.name]["alpha"]
    slope = alpha.reshape(-1, 1, 1) if len(arch.in_shapes(layer)[0]) == 3 else alpha
    g.node("PRelu", [layer.inputs[0], g.const(f"{layer.name}/alpha", slope)], layer.name, name=layer.name)


@_emit_layer.register(Pad)
def _emit_pad(layer: Pad, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    pads = np.array([0, 0, layer.top, layer.left, 0, 0, layer.bottom, layer.right], dtype=np.int64)
    g.node("Pad", [layer.inputs[0], g.const(f"{layer.name}/pads", pads)], layer.name, name=layer.name,
           mode="constant")


@_emit_layer.register(Attention)
def _emit_attention(layer: Attention, g: _GraphWriter, arch: Architecture, weights: Weights) -> None:
    name, (q, k, v) = layer.name, layer.inputs
    seq, dim = arch.in_shapes(layer)[0]
    heads, head_dim = layer.heads, dim // layer.heads
    split = [1, seq, heads, head_dim]
    heads_first = {}
    for role, x, perm in (("q", q, [0, 2, 1, 3]), ("k", k, [0, 2, 3, 1]), ("v", v, [0, 2, 1, 3])):
        x4 = g.reshape(x, split, f"{name}/{role}_split", f"{name}/{role}_split")
        heads_first[role] = g.node("Transpose", [x4], f"{name}/{role}_heads", name=f"{name}/{role}_heads", perm=perm)
    q_scaled = g.node("Mul", [heads_first["q"], g.scalar(1.0 / float(np.sqrt(head_dim)))], f"{name}/q_scaled",
                      name=f"{name}/q_scaled")
    scores = g.node("MatMul", [q_scaled, heads_first["k"]], f"{name}/scores", name=f"{name}/scores")
    probs = g.node("Softmax", [scores], f"{name}/probs", name=f"{name}/probs", axis=-1)
    context = g.node("MatMul", [probs, heads_first["v"]], f"{name}/context", name=f"{name}/context")
    merged = g.node("Transpose", [context], f"{name}/merged", name=f"{name}/merge", perm=[0, 2, 1, 3])
    g.reshape(merged, [1, seq, dim], name, name)


def build_onnx(arch: Architecture, *, seed: int = 0, weights: Optional[Weights] = None) -> Any:
    """Return an ``onnx.ModelProto`` for ``arch`` (checked by ``onnx.checker``).

    Weights come from ``weights`` when given (canonical layout, see
    :mod:`.arch`), else from :func:`.arch.init_weights` with ``seed``.
    """
    import onnx
    from onnx import TensorProto, helper

    resolved = resolve_weights(arch, weights, seed)
    arch, resolved = fold_batchnorm(arch, resolved)
    g = _GraphWriter()
    for layer in arch.layers:
        if not isinstance(layer, Input):
            _emit_layer(layer, g, arch, resolved)
    graph = helper.make_graph(
        g.nodes,
        arch.name,
        inputs=[
            helper.make_tensor_value_info(i.name, TensorProto.FLOAT, onnx_shape(i.shape)) for i in arch.input_layers
        ],
        outputs=[helper.make_tensor_value_info(o, TensorProto.FLOAT, onnx_shape(arch.shapes[o])) for o in arch.outputs],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        producer_name=PRODUCER_NAME,
        producer_version=GENERATOR_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    model.model_version = 1
    model.doc_string = f"fleetmeter zoo model {arch.name} ({arch.family})"
    for key, value in metadata_entries(arch, None if weights is not None else seed):
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model


def onnx_bytes(model: Any) -> bytes:
    """Deterministic serialization of a ModelProto."""
    return model.SerializeToString(deterministic=True)


def write_onnx(
    arch: Architecture, path: Union[str, os.PathLike], *, seed: int = 0, weights: Optional[Weights] = None
) -> int:
    """Build and write ``arch`` to ``path`` atomically; return the file size in bytes."""
    data = onnx_bytes(build_onnx(arch, seed=seed, weights=weights))
    atomic_write(path, data)
    return len(data)
