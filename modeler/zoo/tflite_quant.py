"""Architecture -> full-integer (int8) TFLite flatbuffer, as TFLite's post-training quantizer writes it.

:func:`build_tflite_int8` emits the float32 graph of :mod:`.tflite_emit`,
calibrates it, and rewrites it in place into the layout the TFLite converter
produces with ``optimizations=[DEFAULT]``, a representative dataset and
``supported_ops=[TFLITE_BUILTINS_INT8]`` (float input and output kept):

* the graph input stays float32 and a QUANTIZE op feeds the int8 network;
  each graph output is an int8 tensor followed by a DEQUANTIZE to float32
  (the float tensors keep the original names, the int8 ones get ``/int8``);
* every activation tensor is int8, per-tensor *asymmetric*: ``scale =
  (max - min) / 255``, ``zero_point = round(-128 - min / scale)``, with the
  calibrated range widened to contain 0;
* CONV_2D / DEPTHWISE_CONV_2D / TRANSPOSE_CONV / FULLY_CONNECTED weights are
  int8, per-channel *symmetric* in [-127, 127] (``quantized_dimension`` 0 for
  OHWI and ``[units, in]``, 3 for the depthwise ``[1, kh, kw, out]``); their
  biases are int32 with ``scale = input_scale * weight_scale[c]`` and zero
  point 0;
* other float constants (BatchNorm scale/shift, LayerNorm gamma/beta, PReLU
  slopes, scalars such as hard-sigmoid's 3 and 1/6) are int8 per-tensor
  asymmetric over ``[min(0, v), max(0, v)]``;
* ops whose int8 kernels need one scale for input(s) and output (RESHAPE,
  TRANSPOSE, SLICE, MAX_POOL_2D, AVERAGE_POOL_2D, CONCATENATION, PAD,
  RESIZE_NEAREST_NEIGHBOR, RESIZE_BILINEAR) share one
  range: the union of the calibrated ranges of every tensor they tie
  together; LOGISTIC and SOFTMAX outputs get TFLite's fixed ``1/256, -128``;
* op versions are raised to the int8 ones of TFLite's op versioning.

Every family quantizes fully, the transformer included: LayerNorm's pieces
(MEAN, SUB, MUL, RSQRT), GELU, BATCH_MATMUL and SOFTMAX all have int8
kernels, and so do the dense-prediction ops (PAD, PRELU, the resizes,
TRANSPOSE_CONV), so no float islands are needed. LayerNorm done in int8 is the
least accurate part (see the zoo tests for the error bounds).

Calibration (:func:`calibration_ranges`): the float model runs in LiteRT's
builtin kernels (``experimental_preserve_all_tensors``, no delegate) on
:data:`CALIBRATION_SAMPLES` standard-normal inputs drawn from the model seed;
each tensor's range is the min / max over all of them. Ranges are rounded
outward to :data:`_RANGE_MANTISSA_BITS` significant bits, so the last-bit
differences of float kernels on different CPUs almost never change a byte:
the same description and seed give the same bytes (on one machine, always).

The file's metadata has everything of the float file plus
``fleetmeter.quantization = int8`` and ``fleetmeter.calibration`` (how the
ranges were obtained).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np

from ._files import atomic_write
from .arch import GENERATOR_VERSION, Architecture, Weights, metadata_entries, resolve_weights
from .tflite_emit import TfliteGraph, _AlignedBuffer, float_graph

__all__ = [
    "CALIBRATION_SAMPLES",
    "QuantizationError",
    "META_CALIBRATION",
    "META_QUANTIZATION",
    "build_tflite_int8",
    "calibration_inputs",
    "calibration_ranges",
    "quantize_graph",
    "write_tflite_int8",
]

META_QUANTIZATION = "fleetmeter.quantization"
META_CALIBRATION = "fleetmeter.calibration"

#: Seeded standard-normal inputs the float model is calibrated on.
CALIBRATION_SAMPLES = 8
_CALIBRATION_STREAM = 0x1A78  # keeps calibration inputs apart from any other use of the model seed
_RANGE_MANTISSA_BITS = 6

#: Ops whose int8 kernels require one (scale, zero point) on the listed inputs and the output.
_SAME_SCALE = {"RESHAPE": (0,), "TRANSPOSE": (0,), "SLICE": (0,), "MAX_POOL_2D": (0,), "AVERAGE_POOL_2D": (0,),
               "PAD": (0,), "RESIZE_NEAREST_NEIGHBOR": (0,), "RESIZE_BILINEAR": (0,),
               "CONCATENATION": None}  # None: every input
#: Ops with a fixed int8 output quantization in TFLite.
_FIXED_OUTPUT = {"LOGISTIC": (1.0 / 256.0, -128), "SOFTMAX": (1.0 / 256.0, -128)}
#: (weight input, per-channel axis of that weight, bias input, activation input) of the ops with
#: per-channel weights.
_WEIGHTED = {"CONV_2D": (1, 0, 2, 0), "DEPTHWISE_CONV_2D": (1, 3, 2, 0), "FULLY_CONNECTED": (1, 0, 2, 0),
             "TRANSPOSE_CONV": (1, 0, 3, 2)}
#: The lowest op versions with int8 kernels (TFLite's tools/versioning/op_version.cc).
_INT8_VERSION = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "ADD": 2, "SUB": 2, "MUL": 2,
                 "MEAN": 2, "MAX_POOL_2D": 2, "AVERAGE_POOL_2D": 2, "CONCATENATION": 2, "SOFTMAX": 2,
                 "LOGISTIC": 2, "RELU": 2, "RELU6": 2, "TRANSPOSE": 2, "SLICE": 2, "RSQRT": 2, "BATCH_MATMUL": 2,
                 "GELU": 2, "HARD_SWISH": 1, "RESHAPE": 1, "QUANTIZE": 1, "DEQUANTIZE": 2, "PAD": 2, "PRELU": 1,
                 "RESIZE_NEAREST_NEIGHBOR": 2, "RESIZE_BILINEAR": 2, "TRANSPOSE_CONV": 2}

Range = Tuple[float, float]


class QuantizationError(ValueError):
    """The graph has an op or a tensor constraint this quantizer cannot meet."""


def _interpreter_module() -> Any:
    try:
        from ai_edge_litert import interpreter
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("int8 TFLite emission calibrates with LiteRT: pip install 'fleetmeter[zoo]'") from exc
    return interpreter


# --------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------


def calibration_inputs(shapes: Sequence[Sequence[int]], seed: int, samples: int = CALIBRATION_SAMPLES
                       ) -> List[List[np.ndarray]]:
    """``samples`` lists of float32 standard-normal inputs (one per shape), from ``seed`` only."""
    rng = np.random.Generator(np.random.PCG64([int(seed), _CALIBRATION_STREAM]))
    return [[rng.standard_normal(tuple(shape)).astype(np.float32) for shape in shapes] for _ in range(samples)]


def calibration_ranges(float_model: bytes, inputs: Sequence[Sequence[np.ndarray]],
                       tensors: Optional[Sequence[int]] = None) -> Dict[int, Range]:
    """``{tensor index: (min, max)}`` over ``inputs`` of the float32 tensors of ``float_model``
    (of those listed in ``tensors``, when given).

    Runs LiteRT's builtin kernels (no delegate) with all intermediates kept.
    """
    with warnings.catch_warnings():  # "intended for debugging": calibrating is what it is for
        warnings.simplefilter("ignore", UserWarning)
        interpreter = _interpreter_module().Interpreter(model_content=bytes(float_model), num_threads=1,
                                                        experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    wanted = None if tensors is None else set(tensors)
    details = [d for d in interpreter.get_tensor_details()
               if d["dtype"] == np.float32 and (wanted is None or d["index"] in wanted)]
    feeds = [d["index"] for d in interpreter.get_input_details()]
    ranges: Dict[int, Range] = {}
    for sample in inputs:
        for index, value in zip(feeds, sample):
            interpreter.set_tensor(index, value)
        interpreter.invoke()
        for d in details:
            try:
                value = interpreter.get_tensor(d["index"])
            except ValueError:  # a tensor without data (never allocated)
                continue
            if value.size == 0:
                continue
            lo, hi = float(value.min()), float(value.max())
            old = ranges.get(d["index"])
            ranges[d["index"]] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return ranges


def _round_out(value: float, up: bool) -> float:
    """``value`` rounded away from zero (``up``: towards +inf) to a few significant bits."""
    if value == 0.0 or not math.isfinite(value):
        return 0.0 if value == 0.0 else value
    mantissa, exponent = math.frexp(value)
    steps = mantissa * (1 << _RANGE_MANTISSA_BITS)
    steps = math.ceil(steps) if up else math.floor(steps)
    return math.ldexp(steps / (1 << _RANGE_MANTISSA_BITS), exponent)


def _activation_params(lo: float, hi: float) -> Tuple[float, int]:
    """Asymmetric int8 ``(scale, zero_point)`` for the range ``[lo, hi]`` widened to hold 0."""
    lo, hi = min(_round_out(lo, up=False), 0.0), max(_round_out(hi, up=True), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise QuantizationError(f"calibration gave a non-finite range [{lo}, {hi}]")
    if hi - lo <= 0.0:
        return 1.0, -128
    scale = float(np.float32((hi - lo) / 255.0))
    zero_point = int(np.clip(round(-128.0 - lo / scale), -128, 127))
    return scale, zero_point


# --------------------------------------------------------------------------
# Rewriting the float graph
# --------------------------------------------------------------------------


class _UnionFind:
    def __init__(self) -> None:
        self.parent: Dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # the smallest index leads: order-independent


def _op_names(g: TfliteGraph) -> List[str]:
    names = {v: k for k, v in vars(g.schema.BuiltinOperator).items() if not k.startswith("_")}
    return [names[g.operator_codes[op.opcodeIndex].builtinCode] for op in g.operators]


def _quant(g: TfliteGraph, scale: Sequence[float], zero_point: Sequence[int], axis: int = 0) -> Any:
    q = g.schema.QuantizationParametersT()
    q.scale = [float(np.float32(s)) for s in scale]
    q.zeroPoint = [int(z) for z in zero_point]
    q.quantizedDimension = axis
    return q


def _float_data(g: TfliteGraph, tensor: Any) -> np.ndarray:
    raw = g.buffers[tensor.buffer].data
    return np.frombuffer(bytes(raw), dtype="<f4").reshape(list(tensor.shape))


def _set_data(g: TfliteGraph, tensor: Any, array: np.ndarray, tensor_type: int, quantization: Any) -> None:
    g.buffers[tensor.buffer] = _AlignedBuffer(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    tensor.type = tensor_type
    tensor.quantization = quantization


def _per_channel_weights(g: TfliteGraph, tensor: Any, axis: int) -> np.ndarray:
    """Quantize a float weight tensor in place, symmetric per channel; return its scales."""
    w = _float_data(g, tensor).astype(np.float64)
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    absmax = np.abs(moved).max(axis=1) if moved.size else np.zeros(w.shape[axis])
    scales = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32).astype(np.float64)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scales.reshape(shape)), -127, 127).astype(np.int8)
    _set_data(g, tensor, q, g.schema.TensorType.INT8, _quant(g, scales, [0] * len(scales), axis))
    return scales


def _per_tensor_constant(g: TfliteGraph, tensor: Any) -> None:
    """Quantize a float constant in place, asymmetric per tensor over its values and 0."""
    v = _float_data(g, tensor).astype(np.float64)
    lo, hi = min(float(v.min()), 0.0) if v.size else 0.0, max(float(v.max()), 0.0) if v.size else 0.0
    scale = float(np.float32((hi - lo) / 255.0)) if hi > lo else 1.0
    zero_point = int(np.clip(round(-128.0 - lo / scale), -128, 127))
    q = np.clip(np.round(v / scale) + zero_point, -128, 127).astype(np.int8)
    _set_data(g, tensor, q, g.schema.TensorType.INT8, _quant(g, [scale], [zero_point]))


def _new_tensor(g: TfliteGraph, name: str, like: Any, tensor_type: int, quantization: Any = None) -> int:
    g.tensors.append(g.schema.TensorT(shape=list(like.shape), type=tensor_type, buffer=0, name=name,
                                      quantization=quantization))
    return len(g.tensors) - 1


def _same_scale_classes(g: TfliteGraph, names: Sequence[str], activations: Set[int]) -> _UnionFind:
    """The activation tensors the same-scale ops tie together, as union-find classes."""
    classes = _UnionFind()
    for op, name in zip(g.operators, names):
        if name in _SAME_SCALE:
            slots = _SAME_SCALE[name]
            tied = [t for k, t in enumerate(op.inputs) if (slots is None or k in slots) and t in activations]
            for t in tied + [o for o in op.outputs if o in activations]:
                classes.union(tied[0], t)
    return classes


def _fixed_params(g: TfliteGraph, names: Sequence[str], activations: Set[int], classes: _UnionFind
                  ) -> Dict[int, Tuple[float, int]]:
    """``{class root: (scale, zero point)}`` of the classes TFLite fixes (LOGISTIC and SOFTMAX outputs)."""
    fixed: Dict[int, Tuple[float, int]] = {}
    for op, name in zip(g.operators, names):
        if name in _FIXED_OUTPUT:
            root = classes.find(op.outputs[0])
            if any(classes.find(t) == root for t in activations if t != op.outputs[0]):
                raise QuantizationError(f"{name} output {g.tensors[op.outputs[0]].name!r} must keep TFLite's fixed "
                                        f"int8 scale but a same-scale op ties it to other tensors")
            fixed[root] = _FIXED_OUTPUT[name]
    return fixed


def _quantize_activations(g: TfliteGraph, names: Sequence[str], activations: Set[int], ranges: Mapping[int, Range]
                          ) -> None:
    """Make every activation tensor int8 with one (scale, zero point) per same-scale class."""
    classes = _same_scale_classes(g, names, activations)
    fixed = _fixed_params(g, names, activations, classes)
    class_range: Dict[int, Range] = {}
    for t in sorted(activations):
        root = classes.find(t)
        lo, hi = ranges[t]
        old = class_range.get(root)
        class_range[root] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    params = {root: fixed.get(root) or _activation_params(*r) for root, r in class_range.items()}
    for t in sorted(activations):
        scale, zero_point = params[classes.find(t)]
        g.tensors[t].type = g.schema.TensorType.INT8
        g.tensors[t].quantization = _quant(g, [scale], [zero_point])


def _int32_bias(g: TfliteGraph, op: Any, weighted: Tuple[int, int, int, int], w_scales: np.ndarray) -> Optional[int]:
    """Quantize ``op``'s float bias (if any) to int32 at ``input scale * weight scale``; return its index."""
    bias = op.inputs[weighted[2]] if len(op.inputs) > weighted[2] else -1
    if bias < 0:
        return None
    in_scale = np.float64(g.tensors[op.inputs[weighted[3]]].quantization.scale[0])
    b_scales = (in_scale * w_scales).astype(np.float32).astype(np.float64)
    b = _float_data(g, g.tensors[bias]).astype(np.float64)
    q = np.clip(np.round(b / b_scales), -(2 ** 31 - 1), 2 ** 31 - 1).astype(np.int32)
    _set_data(g, g.tensors[bias], q, g.schema.TensorType.INT32, _quant(g, b_scales, [0] * len(b_scales)))
    return bias


def _quantize_constants(g: TfliteGraph, names: Sequence[str]) -> None:
    """Per-channel weights with int32 biases, every other float constant per tensor."""
    done = set()
    for op, name in zip(g.operators, names):
        weighted = _WEIGHTED.get(name)
        for k, t in enumerate(op.inputs):
            if t < 0 or t in done or g.tensors[t].buffer == 0 or g.tensors[t].type != g.schema.TensorType.FLOAT32:
                continue
            if weighted and k == weighted[0]:
                bias = _int32_bias(g, op, weighted, _per_channel_weights(g, g.tensors[t], weighted[1]))
                if bias is not None:
                    done.add(bias)
            elif weighted and k == weighted[2]:
                continue  # a bias: quantized with its weights (always listed before it)
            else:
                _per_tensor_constant(g, g.tensors[t])
            done.add(t)


def _float_twin(g: TfliteGraph, index: int) -> int:
    """A new float32 tensor that takes over the name of int8 tensor ``index`` (renamed ``NAME/int8``)."""
    tensor = g.tensors[index]
    float_index = _new_tensor(g, tensor.name, tensor, g.schema.TensorType.FLOAT32)
    tensor.name = f"{tensor.name}/int8"
    return float_index


def _float_edges(g: TfliteGraph, inputs: List[int], outputs: List[int]) -> Tuple[List[int], List[int]]:
    """QUANTIZE after each graph input, DEQUANTIZE before each output; the new float ``(inputs, outputs)``."""
    s = g.schema
    head, new_inputs = [], []
    for i in inputs:
        new_inputs.append(_float_twin(g, i))
        head.append(s.OperatorT(opcodeIndex=g.opcode(s.BuiltinOperator.QUANTIZE, version=_INT8_VERSION["QUANTIZE"]),
                                inputs=[new_inputs[-1]], outputs=[i]))
    new_outputs = []
    for o in outputs:
        new_outputs.append(_float_twin(g, o))
        code = g.opcode(s.BuiltinOperator.DEQUANTIZE, version=_INT8_VERSION["DEQUANTIZE"])
        g.operators.append(s.OperatorT(opcodeIndex=code, inputs=[o], outputs=[new_outputs[-1]]))
    g.operators[:0] = head
    return new_inputs, new_outputs


def quantize_graph(g: TfliteGraph, inputs: List[int], outputs: List[int], ranges: Mapping[int, Range]
                   ) -> Tuple[List[int], List[int]]:
    """Rewrite the float graph ``g`` into its int8 form in place; return the new ``(inputs, outputs)``.

    ``ranges`` are the calibrated ``(min, max)`` of the activation tensors
    (:func:`calibration_ranges`). See the module docstring for the scheme.
    """
    names = _op_names(g)
    activations = {i for i, t in enumerate(g.tensors) if t.buffer == 0 and t.type == g.schema.TensorType.FLOAT32}
    missing = sorted(i for i in activations if i not in ranges)
    if missing:
        raise QuantizationError(f"no calibration range for tensors {[g.tensors[i].name for i in missing]}")
    _quantize_activations(g, names, activations, ranges)
    _quantize_constants(g, names)
    for name, code in zip(names, [g.operator_codes[op.opcodeIndex] for op in g.operators]):
        code.version = max(code.version, _INT8_VERSION.get(name, 1))
    return _float_edges(g, inputs, outputs)


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------


def build_tflite_int8(arch: Architecture, *, seed: int = 0, weights: Optional[Weights] = None,
                      samples: int = CALIBRATION_SAMPLES) -> bytes:
    """Return the full-integer ``.tflite`` bytes for ``arch`` (float input and output).

    Weights as for :func:`.tflite_emit.build_tflite` (``weights``, else
    :func:`.arch.init_weights` with ``seed``); the calibration inputs are
    drawn from ``seed`` either way.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    g, inputs, outputs = float_graph(arch, resolve_weights(arch, weights, seed))
    float_model = g.to_bytes(inputs, outputs, description="calibration")  # adds no buffers: no metadata
    shapes = [g.tensors[i].shape for i in inputs]
    activations = [i for i, t in enumerate(g.tensors) if t.buffer == 0]
    ranges = calibration_ranges(float_model, calibration_inputs(shapes, seed, samples), activations)
    new_inputs, new_outputs = quantize_graph(g, inputs, outputs, ranges)
    calibration = f"{samples} standard-normal inputs, seed {int(seed)}, min/max, LiteRT builtin kernels"
    metadata = metadata_entries(arch, None if weights is not None else seed) + (
        (META_QUANTIZATION, "int8"), (META_CALIBRATION, calibration))
    return g.to_bytes(
        new_inputs,
        new_outputs,
        description=f"fleetmeter.zoo generator {GENERATOR_VERSION}: {arch.name} ({arch.family}), int8",
        metadata=metadata,
    )


def write_tflite_int8(arch: Architecture, path: Union[str, "os.PathLike[str]"], *, seed: int = 0,
                      weights: Optional[Weights] = None) -> int:
    """Build and write the int8 model of ``arch`` to ``path`` atomically; return the file size in bytes."""
    data = build_tflite_int8(arch, seed=seed, weights=weights)
    atomic_write(path, data)
    return len(data)
