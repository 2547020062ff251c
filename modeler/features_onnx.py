"""ONNX graph -> raw per-node records for :mod:`fleetmeter.modeler.features`.

Conventions (normalized op types, NCHW shapes, MACs, parameter bytes) are
documented in :mod:`fleetmeter.modeler.features`; this module only maps ONNX
onto them.

Reading without the weights: a 200-node network's file is mostly weights
(ResNet-50: ~100 MB), and parsing them costs more than the whole budget.
:func:`fleetmeter._onnx_wire.light_model_bytes` walks the protobuf wire format
and rewrites the model with every initializer larger than :data:`_KEEP_BYTES`
stripped to its name, type and dims, remembering where its data lay in the
original bytes (for the all-zero-bias check). A model a caller stripped
already (``PredictRequest.model_graph``) says so in each stripped tensor's
``doc_string``, zero or not, and parses to the same features. Only that light model is parsed; with a
memory-mapped file the weight pages are never even read. Should the walk
fail, the file is parsed whole (which also yields protobuf's own error
message for a corrupt file).

Shapes come from ``onnx.shape_inference.infer_shapes`` on the light model
(inference needs initializer shapes, not values; the small constants that
carry values, such as Reshape targets, are kept whole). The graph inputs
named in ``input_shapes`` get those dims first (and the declared shapes of
outputs and intermediate values are dropped, to be inferred anew); other
symbolic or missing dimensions (a dynamic batch) are set to 1, and their
inputs are named in ``ParsedGraph.dynamic_inputs``. When inference fails the
declared shapes are used and unknown shapes are reported as ``()`` with 0
bytes.

The output of a DequantizeLinear whose inputs are all constants (QDQ
weights) counts as a constant, so the op reading it gets the parameters;
the DequantizeLinear itself stays a record.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from fleetmeter._onnx_wire import KEEP_BYTES, STRIPPED, STRIPPED_ZERO
from fleetmeter._onnx_wire import light_model_bytes as _light_model_bytes

from .graph import NodeFeatures, ParsedGraph, Shape, _invalid_model, check_input_shapes, place_in_graph

__all__ = ["parse_onnx"]

log = logging.getLogger(__name__)

# TensorProto.DataType -> bytes per element (sub-byte types rounded up to 1).
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 8: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16,
             16: 2, 17: 1, 18: 1, 19: 1, 20: 1, 21: 1, 22: 1, 23: 1}
_INT_TYPES = (6, 7)
# AttributeProto.AttributeType values.
_ATTR_FLOAT, _ATTR_INT, _ATTR_STRING, _ATTR_TENSOR, _ATTR_GRAPH, _ATTR_FLOATS, _ATTR_INTS = 1, 2, 3, 4, 5, 6, 7
#: How an attribute of each scalar or list kind reads (graphs and sparse tensors have none: skipped).
_ATTR_VALUE: Dict[int, Callable[[Any], Any]] = {
    _ATTR_INT: lambda a: a.i, _ATTR_INTS: lambda a: list(a.ints), _ATTR_FLOAT: lambda a: a.f,
    _ATTR_STRING: lambda a: a.s, _ATTR_FLOATS: lambda a: list(a.floats), _ATTR_TENSOR: lambda a: a.t,
}
#: Initializers whose TensorProto is at most this many bytes stay whole in the light model.
_KEEP_BYTES = KEEP_BYTES

_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}
_ACTIVATIONS = {
    "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hardswish", "HardSigmoid": "hardsigmoid",
    "LeakyRelu": "leaky_relu", "Elu": "elu", "Gelu": "gelu", "PRelu": "prelu",
}
_LAYOUT = {"Reshape": "reshape", "Flatten": "reshape", "Squeeze": "reshape", "Unsqueeze": "reshape",
           "Transpose": "transpose", "Identity": "identity", "Dropout": "identity"}
_MOVES = {"Concat": "concat", "Split": "split", "Slice": "slice", "Pad": "pad", "Gather": "gather",
          "DepthToSpace": "depth_to_space", "SpaceToDepth": "space_to_depth"}
_ELEMENTWISE = {"Softmax": "softmax", "LogSoftmax": "log_softmax", "Resize": "resize", "Upsample": "resize",
                "Cast": "cast", "QuantizeLinear": "quantize", "DequantizeLinear": "dequantize"}
# op -> indices of its inputs that are weights (param bytes); "bias" positions may be all-zero.
_NORMS = {"BatchNormalization": ("batchnorm", (1, 2, 3, 4)), "LayerNormalization": ("layernorm", (1, 2)),
          "InstanceNormalization": ("instancenorm", (1, 2))}
_REDUCE = {"ReduceMean": ("reduce_mean", "global_pool"), "ReduceMax": ("reduce_max", "global_pool_max"),
           "ReduceSum": ("reduce_sum", None)}
#: Integer-arithmetic ops mapped onto the float types (``quantized`` records); see the features docstring.
_QUANTIZED_CONV = {"QLinearConv": (3, 8), "ConvInteger": (1, None)}  # op -> (weight, bias) input positions
_QUANTIZED_DENSE = {"QLinearMatMul": 3, "MatMulInteger": 1, "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1}
_QUANTIZED_BINARY = {"QLinearAdd": ("add", (0, 3)), "QLinearMul": ("mul", (0, 3))}
_QUANTIZE_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
#: Recurrent ops -> (normalized type, W, R, B input positions).
_RECURRENT = {"LSTM": ("lstm", 1, 2, 3), "GRU": ("gru", 1, 2, 3), "RNN": ("rnn", 1, 2, 3),
              "DynamicQuantizeLSTM": ("lstm", 1, 2, 3)}
#: Control-flow ops and the attributes holding their bodies.
_CONTROL_FLOW = {"If": ("then_branch", "else_branch"), "Loop": ("body",), "Scan": ("body",)}
#: Domains whose ops are mapped (others are ``other:*``).
_KNOWN_DOMAINS = ("", "com.microsoft")
#: Ops computing shapes, whose output size says nothing about the work downstream.
_SHAPE_OPS = frozenset({"Shape", "Size"})


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("ONNX features need onnx: pip install 'fleetmeter[modeler]'") from exc
    return onnx


def parse_onnx(data: Any, source: str, input_shapes: Optional[Mapping[str, Shape]] = None) -> ParsedGraph:
    """Raw records of the ONNX model ``data`` (bytes or an mmap; ``source`` names it in messages), with the
    graph inputs named in ``input_shapes`` set to those dims before shape inference."""
    onnx = _onnx()
    from google.protobuf.message import DecodeError

    spans: Dict[str, List[Tuple[int, int]]] = {}
    try:
        model = onnx.ModelProto.FromString(_light_model_bytes(data, spans))
    except (ValueError, IndexError, DecodeError):
        spans = {}
        try:
            model = onnx.load_from_string(bytes(data))
        except (DecodeError, ValueError, TypeError, RuntimeError) as exc:
            raise _invalid_model(f"{source}: not a valid ONNX model ({type(exc).__name__}: {exc})") from exc
    if not model.graph.node or not model.opset_import:
        raise _invalid_model(f"{source}: not a valid ONNX model (no graph nodes or no opset; "
                              "is the file truncated or of another format?)")
    return _Graph(onnx, model, source, data, spans, input_shapes).parse()


def _dims(tensor_type: Any) -> Optional[Shape]:
    if not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.dim_value > 0 else 1 for d in tensor_type.shape.dim)


def _declared(value_info: Any) -> Optional[Tuple[Any, ...]]:
    """A graph input's declared dims for messages: numbers, symbolic names, ``?``; ``None`` without a shape."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.dim_value > 0 else (d.dim_param or "?") for d in t.shape.dim)


def _fix_symbolic(value_info: Any) -> None:
    t = value_info.type.tensor_type
    if t.HasField("shape"):
        for d in t.shape.dim:
            if d.dim_value <= 0:
                d.dim_value = 1  # clears dim_param (a oneof)


def _pair(values: Sequence[int], fill: int = 0) -> Tuple[int, int]:
    values = list(values)
    if not values:
        return (fill, fill)
    if len(values) == 1:
        return (int(values[0]), 1)
    return (int(values[-2]), int(values[-1]))


def _channels(shape: Optional[Shape]) -> int:
    if not shape:
        return 0
    return shape[1] if len(shape) >= 3 else shape[-1]


class _Node:
    """A NodeProto's fields as plain Python values (protobuf field access is slow in hot loops)."""

    __slots__ = ("proto", "op_type", "domain", "name", "input", "output")

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.op_type = proto.op_type
        domain = proto.domain
        self.domain = "" if domain == "ai.onnx" else domain
        self.name = proto.name
        self.input = list(proto.input)
        self.output = list(proto.output)


class _Graph:
    def __init__(self, onnx: Any, model: Any, source: str, data: Any = b"",
                 spans: Optional[Dict[str, List[Tuple[int, int]]]] = None,
                 input_shapes: Optional[Mapping[str, Shape]] = None) -> None:
        self.onnx = onnx
        self.input_shapes = dict(input_shapes or {})
        self.dynamic_inputs: List[str] = []
        self.model = model
        self.source = source
        self.data = data
        self.spans = spans or {}
        g = model.graph
        self.initializers = {i.name: i for i in g.initializer}
        self.constant_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant" and n.output}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.shapes: Dict[str, Optional[Shape]] = {}
        self.types: Dict[str, int] = {}
        self._values: Dict[str, Optional[np.ndarray]] = {}
        self.folded: set = set()  # DequantizeLinear outputs computed from constants (QDQ weights)

    # -- shapes -------------------------------------------------------------
    def _set_input_shapes(self) -> None:
        """Apply ``input_shapes`` to the graph inputs (checked against them) and note the inputs left dynamic.

        With any override, the declared shapes of outputs and intermediate values
        are dropped: they were written for another input size, and inference
        would stop at the first disagreement instead of recomputing them.
        """
        g = self.model.graph
        inputs = [vi for vi in g.input if vi.name not in self.initializers]
        check_input_shapes(self.source, self.input_shapes, {vi.name: _declared(vi) for vi in inputs})
        for vi in inputs:
            dims = self.input_shapes.get(vi.name)
            t = vi.type.tensor_type
            if dims is None:
                if t.HasField("shape") and any(d.dim_value <= 0 for d in t.shape.dim):
                    self.dynamic_inputs.append(vi.name)
                continue
            t.shape.ClearField("dim")
            for d in dims:
                t.shape.dim.add().dim_value = int(d)
        if self.input_shapes:
            del g.value_info[:]
            for vi in g.output:
                vi.type.tensor_type.ClearField("shape")

    def _infer(self) -> None:
        onnx, g = self.onnx, self.model.graph
        self._set_input_shapes()
        for group in (g.input, g.output, g.value_info):
            for vi in group:
                _fix_symbolic(vi)
        light = self.model  # already light: see _light_model_bytes
        try:
            inferred = onnx.shape_inference.infer_shapes(light)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError, ValueError) as exc:
            log.warning("%s: ONNX shape inference failed (%s); using declared shapes", self.source, exc)
            inferred = light
        ig = self.inferred_graph = inferred.graph  # subgraph shapes and unresolved dims: see _coverage_pass
        for group in (ig.value_info, ig.input, ig.output):
            for vi in group:
                t = vi.type.tensor_type
                self.shapes[vi.name] = _dims(t)
                self.types[vi.name] = t.elem_type
        for name, init in self.initializers.items():
            self.shapes[name] = tuple(int(d) for d in init.dims)
            self.types[name] = init.data_type

    def shape(self, name: str) -> Optional[Shape]:
        return self.shapes.get(name)

    def nbytes(self, name: str) -> int:
        shape = self.shapes.get(name)
        if shape is None:
            return 0
        return math.prod(shape) * _ITEMSIZE.get(self.types.get(name, 1), 4)

    def elements(self, name: str) -> int:
        shape = self.shapes.get(name)
        return math.prod(shape) if shape is not None else 0

    # -- constants ----------------------------------------------------------
    def is_const(self, name: str) -> bool:
        return name in self.initializers or name in self.constant_nodes or name in self.folded

    def _tensor(self, name: str) -> Any:
        if name in self.initializers:
            return self.initializers[name]
        node = self.constant_nodes.get(name)
        if node is not None:
            for attr in node.attribute:
                if attr.name == "value":
                    return attr.t
        return None

    def value(self, name: str) -> Optional[np.ndarray]:
        """The constant's value as a numpy array, or None (cached: small constants are shared)."""
        if name not in self._values:
            self._values[name] = self._read_value(name)
        return self._values[name]

    def _read_value(self, name: str) -> Optional[np.ndarray]:
        from onnx import numpy_helper

        if name in self.constant_nodes and self._tensor(name) is None:
            attrs = self.attrs(self.constant_nodes[name])
            for key in ("value_float", "value_floats", "value_int", "value_ints"):
                if key in attrs:
                    return np.asarray(attrs[key])
            return None
        tensor = self._tensor(name)
        if tensor is None:
            return None
        try:
            return numpy_helper.to_array(tensor)
        except (ValueError, TypeError, OSError):
            return None

    def is_zero(self, name: str) -> bool:
        if name in self.spans:
            ranges = self.spans[name]
            return bool(ranges) and all(not bytes(self.data[a:b]).strip(b"\x00") for a, b in ranges)
        t = self._tensor(name)
        if t is None or t.data_location == 1:  # EXTERNAL: not read
            return False
        if t.doc_string in (STRIPPED, STRIPPED_ZERO):  # stripped by the caller, who looked at the data
            return t.doc_string == STRIPPED_ZERO
        if t.raw_data:
            return not t.raw_data.strip(b"\x00")
        return not any(t.float_data) and not any(t.int32_data) and not any(t.int64_data) and not any(t.double_data)

    def weights(self, node: Any, positions: Optional[Sequence[int]], bias: Optional[int] = None) -> Tuple[int, int]:
        """(params, param_bytes) of the constant inputs at ``positions`` (all when None)."""
        params = nbytes = 0
        for i, name in enumerate(node.input):
            if not name or not self.is_const(name) or (positions is not None and i not in positions):
                continue
            if i == bias and self.is_zero(name):
                continue
            params += self.elements(name)
            nbytes += self.nbytes(name)
        return params, nbytes

    @staticmethod
    def attrs(node: Any) -> Dict[str, Any]:
        """Scalar and list attributes of a NodeProto or _Node (graphs and sparse tensors are skipped)."""
        return {a.name: _ATTR_VALUE[a.type](a) for a in getattr(node, "proto", node).attribute
                if a.type in _ATTR_VALUE}

    # -- records ------------------------------------------------------------
    def parse(self) -> ParsedGraph:
        self._infer()
        g = self.model.graph
        self._note_inferred(getattr(self, "inferred_graph", None), top=True)
        nodes = self._records(g.node)
        inputs = [vi.name for vi in g.input if vi.name not in self.initializers]
        return ParsedGraph(
            nodes=nodes,
            input_shapes=[self.shape(n) or () for n in inputs],
            input_bytes=sum(self.nbytes(n) for n in inputs),
            output_names=tuple(vi.name for vi in g.output),
            output_shapes=[self.shape(vi.name) or () for vi in g.output],
            dynamic_inputs=list(self.dynamic_inputs),
        )

    # -- control flow and unresolved shapes ------------------------------------
    def _note_inferred(self, graph: Any, top: bool = False) -> None:
        """Note the values inference left without a full shape, and the shapes inside control-flow bodies."""
        if top:
            self.unresolved: set = set()
            self.estimated: Dict[str, int] = {}  # unresolved value -> elements estimated from its inputs
        if graph is None:
            return
        for group in ((graph.value_info, graph.output) if top else (graph.value_info, graph.input, graph.output)):
            for vi in group:
                t = vi.type.tensor_type
                if not top and vi.name not in self.shapes:
                    self.shapes[vi.name] = _dims(t)
                    self.types[vi.name] = t.elem_type
                if not t.HasField("shape") or any(d.dim_value <= 0 for d in t.shape.dim):
                    self.unresolved.add(vi.name)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == _ATTR_GRAPH:
                    self._note_inferred(attr.g)

    def _records(self, protos: Sequence[Any], subgraph: str = "",
                 rename: Optional[Mapping[str, str]] = None) -> List[NodeFeatures]:
        """Records of ``protos`` (Constant nodes give none); a control-flow op is followed by its body's."""
        rename = rename or {}
        out: List[NodeFeatures] = []
        for proto in protos:
            if proto.op_type == "Constant":
                continue
            node = _Node(proto)
            record = self._record(node)
            body = self._body(node, subgraph, rename) if node.op_type in _CONTROL_FLOW and not node.domain else None
            out.extend(place_in_graph(record, body, subgraph, rename))
        return out

    def _body(self, node: _Node, subgraph: str, rename: Mapping[str, str]) -> List[NodeFeatures]:
        """The records of a control-flow op's body: If's larger branch (by MACs), Loop's or Scan's body once.

        Body outputs are renamed to the op's outputs (Loop/Scan body inputs to the op's inputs), so the
        records link up with the graph around them.
        """
        graphs = {a.name: a.g for a in node.proto.attribute if a.type == _ATTR_GRAPH}
        outs, ins = list(node.output), list(node.input)
        candidates = []
        for key in _CONTROL_FLOW[node.op_type]:
            graph = graphs.get(key)
            if graph is None:
                continue
            self._register_constants(graph)
            if node.op_type == "If":
                inner = {vi.name: y for vi, y in zip(graph.output, outs) if y}
            elif node.op_type == "Loop":
                inner = {vi.name: x for vi, x in zip(graph.input[2:], ins[2:]) if x}
                inner.update({vi.name: y for vi, y in zip(graph.output[1:], outs) if y})
            else:
                inner = {vi.name: x for vi, x in zip(graph.input, ins) if x}
                inner.update({vi.name: y for vi, y in zip(graph.output, outs) if y})
            combined = dict(rename)
            combined.update({k: rename.get(v, v) for k, v in inner.items()})
            path = f"{subgraph}/" if subgraph else ""
            records = self._records(graph.node, f"{path}{node.name or node.op_type}/{key}", combined)
            candidates.append((sum(r.macs for r in records), len(records), records))
        return max(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else []

    def _register_constants(self, graph: Any) -> None:
        """A body's initializers and Constant nodes are constants like the main graph's."""
        for init in graph.initializer:
            self.initializers.setdefault(init.name, init)
            self.shapes.setdefault(init.name, tuple(int(d) for d in init.dims))
            self.types.setdefault(init.name, init.data_type)
        for n in graph.node:
            if n.op_type == "Constant" and n.output:
                self.constant_nodes.setdefault(n.output[0], n)

    def _elements_est(self, name: str) -> int:
        return max(self.elements(name), self.estimated.get(name, 0))

    def _itemsize(self, name: str) -> int:
        return _ITEMSIZE.get(self.types.get(name, 1), 4)

    def _estimate(self, node: _Node, act_in: Tuple[str, ...], outs: Tuple[str, ...],
                  fields: Dict[str, Any]) -> int:
        """MACs of an op whose output shape was not inferred, from what it reads and its weights.

        Sets ``fields["macs"]`` (never below what the shapes gave) and notes its outputs' estimated
        elements for the ops downstream; returns the estimated bytes written.
        """
        kind = fields["op_type"]
        read = max((self._elements_est(x) for x in act_in), default=0)
        k = max(int(fields.get("in_channels") or 0), 1)
        macs = 0
        if node.op_type in _SHAPE_OPS:
            written = 0
        elif kind in ("dense", "matmul") and len(node.input) > 1:
            right = self._elements_est(node.input[_QUANTIZED_DENSE.get(node.op_type, 1)])
            if k <= 1:  # contraction length unknown too: take the right operand as square
                k = max(math.isqrt(right), 1)
            n = max(right // k, 1)
            macs, written = (read // k) * k * n, (read // k) * n
        elif kind.startswith("conv") or kind == "depthwise_conv2d":
            w = node.input[_QUANTIZED_CONV.get(node.op_type, (1, None))[0]]
            ws = self.shape(w) or ()
            in_c = ws[1] * max(int(fields.get("groups") or 1), 1) if len(ws) > 1 else int(fields.get("in_channels") or 0)
            positions = read // max(in_c, 1) // max(math.prod(fields["stride"]), 1)
            weights = self.elements(w)
            macs, written = positions * weights, positions * max(int(fields.get("out_channels") or 0), 1)
        elif kind == "concat":
            written = sum(self._elements_est(x) for x in act_in)
        elif kind in ("add", "sub", "mul", "div") and len(act_in) > 1:
            # two activations: the smaller estimate (estimates err large, e.g. after a Slice)
            written = macs = min(self._elements_est(x) for x in act_in)
        else:
            written = read
            macs = 0 if kind in ("reshape", "transpose", "identity", "split", "slice", "pad", "gather") else read
        fields["macs"] = max(int(fields.get("macs") or 0), macs)
        share = written // max(len(outs), 1)
        for y in outs:
            self.estimated[y] = max(self.elements(y), share)
        return sum(self._elements_est(y) * self._itemsize(y) for y in outs)

    def _record(self, node: _Node) -> NodeFeatures:
        act_in = tuple(x for x in node.input if x and not self.is_const(x))
        outs = tuple(y for y in node.output if y)
        if node.op_type == "DequantizeLinear" and not act_in:
            self.folded.update(outs)
        domain = node.domain
        raw = f"{domain}:{node.op_type}" if domain else node.op_type
        fields = self._op_fields(node, act_in, outs) if domain in _KNOWN_DOMAINS else None
        if fields is None:
            params, pbytes = self.weights(node, None)
            macs = self.elements(outs[0]) if outs and self.shape(outs[0]) is not None else (
                self.elements(act_in[0]) if act_in else 0)
            fields = {"op_type": f"other:{node.op_type}", "macs": macs, "params": params, "param_bytes": pbytes,
                      "out_channels": _channels(self.shape(outs[0])) if outs else 0}
        quantized = bool(fields.pop("quantized", False)) or (node.op_type in _QUANTIZE_OPS and bool(act_in))
        unresolved = any(y in self.unresolved or self.shape(y) is None for y in outs)
        written = self._estimate(node, act_in, outs, fields) if unresolved else sum(self.nbytes(y) for y in outs)
        return NodeFeatures(
            name=node.name or (outs[0] if outs else node.op_type),
            raw_op=raw,
            input_shapes=tuple(self.shape(x) or () for x in act_in),
            output_shapes=tuple(self.shape(y) or () for y in outs),
            act_read_bytes=sum(max(self.nbytes(x), self.estimated.get(x, 0) * self._itemsize(x)) for x in act_in),
            act_write_bytes=written,
            inputs=act_in,
            outputs=outs,
            quantized=quantized,
            shape_unresolved=unresolved,
            **fields,
        )

    def _op_fields(self, node: Any, act_in: Tuple[str, ...], outs: Tuple[str, ...]) -> Optional[Dict[str, Any]]:
        op = node.op_type
        out = outs[0] if outs else ""
        out_elems = self.elements(out)
        first = node.input[0] if node.input else ""
        if op in _CONTROL_FLOW or node.domain:
            return self._extended_fields(node, out_elems)
        if op in ("Conv", "ConvTranspose"):
            return self._conv(node, transpose=op == "ConvTranspose")
        if op in ("Gemm", "MatMul"):
            return self._dense(node)
        if op in ("MaxPool", "AveragePool", "LpPool"):
            a = self.attrs(node)
            kernel = list(a.get("kernel_shape", []))
            c = _channels(self.shape(first))
            return {"op_type": "pool_max" if op == "MaxPool" else "pool_avg" if op == "AveragePool" else "other:LpPool",
                    "kernel": _pair(kernel), "stride": _pair(a.get("strides", [1] * len(kernel))),
                    "dilation": _pair(a.get("dilations", [1] * len(kernel))),
                    "padding": self._pads(a, self.shape(first), kernel), "in_channels": c, "out_channels": c,
                    "macs": out_elems * math.prod(kernel)}
        if op in ("GlobalAveragePool", "GlobalMaxPool"):
            c = _channels(self.shape(first))
            return {"op_type": "global_pool" if op == "GlobalAveragePool" else "global_pool_max",
                    "in_channels": c, "out_channels": c, "macs": self.elements(first)}
        if op in _REDUCE:
            return self._reduce(node, first)
        if op in _BINARY:
            params, pbytes = self.weights(node, None)
            return {"op_type": _BINARY[op], "macs": out_elems, "params": params, "param_bytes": pbytes,
                    "out_channels": _channels(self.shape(out))}
        if op in _ACTIVATIONS or op == "Clip":
            kind = self._clip_kind(node) if op == "Clip" else _ACTIVATIONS[op]
            params, pbytes = self.weights(node, (1,)) if op == "PRelu" else (0, 0)
            return {"op_type": f"activation:{kind}", "macs": out_elems, "params": params, "param_bytes": pbytes,
                    "out_channels": _channels(self.shape(out))}
        if op in _NORMS:
            kind, positions = _NORMS[op]
            bias = 2 if op != "BatchNormalization" else None
            params, pbytes = self.weights(node, positions, bias=bias)
            c = _channels(self.shape(out))
            return {"op_type": kind, "macs": out_elems, "params": params, "param_bytes": pbytes,
                    "in_channels": c, "out_channels": c}
        if op in _ELEMENTWISE:
            return {"op_type": _ELEMENTWISE[op], "macs": out_elems, "out_channels": _channels(self.shape(out))}
        if op in _LAYOUT:
            return {"op_type": _LAYOUT[op]}
        if op in _MOVES:
            return {"op_type": _MOVES[op], "out_channels": _channels(self.shape(out))}
        return self._extended_fields(node, out_elems)

    def _extended_fields(self, node: Any, out_elems: int) -> Optional[Dict[str, Any]]:
        """Quantized, recurrent, Einsum and control-flow ops (and com.microsoft's); None: ``other:*``."""
        op = node.op_type
        if op in _CONTROL_FLOW:  # its body follows as records of its own (see _body)
            return {"op_type": f"other:{op}", "macs": 0}
        fields: Optional[Dict[str, Any]] = None
        if op in _QUANTIZED_CONV:
            fields = self._conv(node, transpose=False, w_at=_QUANTIZED_CONV[op][0], b_at=_QUANTIZED_CONV[op][1])
        elif op in _QUANTIZED_DENSE:
            fields = self._dense(node, b_at=_QUANTIZED_DENSE[op])
        elif op in _QUANTIZED_BINARY:
            kind, positions = _QUANTIZED_BINARY[op]
            params, pbytes = self.weights(node, positions)
            fields = {"op_type": kind, "macs": out_elems, "params": params, "param_bytes": pbytes}
        elif op == "DynamicQuantizeLinear":
            fields = {"op_type": "quantize", "macs": out_elems}
        elif op in _RECURRENT:
            fields = self._recurrent(node)
        elif op == "Einsum" and not node.domain:
            fields = self._einsum(node)
        if fields is not None and (op in _QUANTIZED_CONV or op in _QUANTIZED_DENSE or op in _QUANTIZED_BINARY
                                   or op.startswith("DynamicQuantize")):
            fields["quantized"] = True
        return fields

    def _recurrent(self, node: Any) -> Dict[str, Any]:
        """LSTM/GRU/RNN: ``sequence x batch x (W + R elements)`` plus one MAC per output element."""
        kind, w_at, r_at, b_at = _RECURRENT[node.op_type]
        a = self.attrs(node)
        xs = self.shape(node.input[0]) or ()
        steps = xs[0] * xs[1] if len(xs) >= 2 else 1  # [seq, batch, in] or [batch, seq, in]: same product
        inputs = list(node.input) + [""] * 4
        weight_elements = sum(self.elements(inputs[i]) for i in (w_at, r_at) if inputs[i])
        params, pbytes = self.weights(node, (w_at, r_at, b_at), bias=b_at)
        outs = [y for y in node.output if y]
        return {"op_type": kind, "in_channels": xs[-1] if xs else 0, "out_channels": int(a.get("hidden_size", 0)),
                "macs": steps * weight_elements + sum(self.elements(y) for y in outs[:1]),
                "params": params, "param_bytes": pbytes}

    def _einsum(self, node: Any) -> Optional[Dict[str, Any]]:
        """Einsum: the product of every index's extent (a contraction's multiply-accumulates)."""
        equation = self.attrs(node).get("equation", b"")
        equation = (equation.decode() if isinstance(equation, bytes) else str(equation)).replace(" ", "")
        terms = equation.split("->")[0].split(",")
        extents: Dict[str, int] = {}
        for term, name in zip(terms, node.input):
            shape = self.shape(name)
            if shape is None or "." in term or len(term) != len(shape):
                return None
            for letter, size in zip(term, shape):
                extents[letter] = max(extents.get(letter, 1), int(size))
        params, pbytes = self.weights(node, None)
        return {"op_type": "matmul", "macs": math.prod(extents.values()) if extents else 0,
                "params": params, "param_bytes": pbytes}

    def _pads(self, a: Dict[str, Any], in_shape: Optional[Shape], kernel: Sequence[int],
              strides: Optional[Sequence[int]] = None, dilations: Optional[Sequence[int]] = None
              ) -> Tuple[int, int, int, int]:
        n = len(kernel)
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if auto in ("SAME_UPPER", "SAME_LOWER") and in_shape and len(in_shape) == n + 2:
            strides = list(strides or a.get("strides", [1] * n))
            dilations = list(dilations or a.get("dilations", [1] * n))
            begin, end = [], []
            for size, k, s, d in zip(in_shape[2:], kernel, strides, dilations):
                out = -(-size // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
                small, large = total // 2, total - total // 2
                begin.append(small if auto == "SAME_UPPER" else large)
                end.append(large if auto == "SAME_UPPER" else small)
        elif auto == "VALID":
            begin = end = [0] * n
        else:
            pads = list(a.get("pads", [0] * (2 * n)))
            begin, end = pads[:n], pads[n:]
        if n == 1:
            return (int(begin[0]), 0, int(end[0]), 0)
        if n == 0:
            return (0, 0, 0, 0)
        return (int(begin[-2]), int(begin[-1]), int(end[-2]), int(end[-1]))

    def _conv(self, node: Any, transpose: bool, w_at: int = 1, b_at: Optional[int] = 2) -> Dict[str, Any]:
        """Conv/ConvTranspose; QLinearConv (weights at 3, bias at 8) and ConvInteger (weights at 1) too."""
        a = self.attrs(node)
        x, w = node.input[0], node.input[w_at]
        xs, ws, ys = self.shape(x), self.shape(w), self.shape(node.output[0])
        group = int(a.get("group", 1))
        kernel = list(a.get("kernel_shape") or (ws[2:] if ws else [1, 1]))
        spatial = len(kernel)
        in_c = xs[1] if xs and len(xs) > 1 else (ws[1] * group if ws and not transpose else 0)
        if transpose:
            out_c = ws[1] * group if ws else _channels(ys)
        else:
            out_c = ws[0] if ws else _channels(ys)
        kernel_size = math.prod(kernel)
        if transpose:
            macs = self.elements(x) * kernel_size * (out_c // max(group, 1))
            op_type = f"conv_transpose{spatial}d"
        else:
            macs = self.elements(node.output[0]) * kernel_size * (in_c // max(group, 1))
            op_type = f"conv{spatial}d"
            if spatial == 2 and group == in_c and in_c > 1:
                op_type = "depthwise_conv2d"
        params, pbytes = self.weights(node, (w_at, b_at), bias=b_at)
        strides = list(a.get("strides", [1] * spatial))
        dilations = list(a.get("dilations", [1] * spatial))
        return {"op_type": op_type, "kernel": _pair(kernel), "stride": _pair(strides), "dilation": _pair(dilations),
                "padding": self._pads(a, xs, kernel, strides, dilations), "groups": group,
                "in_channels": in_c, "out_channels": out_c, "macs": macs, "params": params, "param_bytes": pbytes}

    def _dense(self, node: Any, b_at: int = 1) -> Dict[str, Any]:
        """Gemm/MatMul; the integer matmuls too (right operand at ``b_at``: 3 for QLinearMatMul)."""
        a = self.attrs(node)
        first, second = node.input[0], node.input[b_at]
        xs, bs = self.shape(first), self.shape(second)
        if node.op_type == "Gemm":
            k = (xs[0] if a.get("transA", 0) else xs[1]) if xs and len(xs) == 2 else 0
            params, pbytes = self.weights(node, (1, 2), bias=2)
        else:
            k = xs[-1] if xs else 0
            params, pbytes = self.weights(node, (b_at,))
        dense = self.is_const(second) and bs is not None and len(bs) == 2
        if dense and node.op_type != "Gemm":
            k = bs[0]
        elif dense and not k:
            k = bs[1] if a.get("transB", 0) else bs[0]
        out = node.output[0]
        return {"op_type": "dense" if dense else "matmul", "in_channels": k,
                "out_channels": (self.shape(out) or (0,))[-1], "macs": self.elements(out) * k,
                "params": params, "param_bytes": pbytes}

    def _reduce(self, node: Any, first: str) -> Dict[str, Any]:
        a = self.attrs(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            value = self.value(node.input[1])
            axes = None if value is None else [int(v) for v in value.reshape(-1)]
        xs = self.shape(first)
        kind, global_kind = _REDUCE[node.op_type]
        if xs is not None and len(xs) == 4 and axes is not None and global_kind:
            if sorted(ax % 4 for ax in axes) == [2, 3]:
                kind = global_kind
        c = _channels(xs)
        return {"op_type": kind, "in_channels": c, "out_channels": c if kind.startswith("global") else 0,
                "macs": self.elements(first)}

    def _clip_kind(self, node: Any) -> str:
        if self.opset < 11:
            a = self.attrs(node)
            lo, hi = a.get("min"), a.get("max")
        else:
            lo = hi = None
            for i, target in ((1, "lo"), (2, "hi")):
                if len(node.input) > i and node.input[i]:
                    value = self.value(node.input[i])
                    if value is None or value.size != 1:
                        return "clip"
                    if target == "lo":
                        lo = float(value.reshape(-1)[0])
                    else:
                        hi = float(value.reshape(-1)[0])
        if lo == 0.0 and hi == 6.0:
            return "relu6"
        if lo == 0.0 and (hi is None or math.isinf(hi)):
            return "relu"
        if lo == -1.0 and hi == 1.0:
            return "relu_n1_to_1"
        return "clip"
