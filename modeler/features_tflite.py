"""TFLite flatbuffer -> raw per-node records for :mod:`fleetmeter.modeler.features`.

Conventions are documented in :mod:`fleetmeter.modeler.features`; this
module maps TFLite builtin ops onto them. The first subgraph is the model;
the others are read as the bodies of its IF and WHILE ops. MediaPipe's
custom ``Convolution2DTransposeBias`` is a ``conv_transpose2d``; DENSIFY of a
constant (sparse weights) is a weight op like DEQUANTIZE (see below).
Shapes are those stored in the file, or at ``input_shapes`` those LiteRT
computes after resizing the inputs (:meth:`_Graph.set_input_shapes`).

Every rank-4 activation tensor is taken as NHWC and reported as NCHW; filter
shapes are read in TFLite's own layouts (CONV_2D ``[O, kh, kw, I/groups]``,
DEPTHWISE_CONV_2D ``[1, kh, kw, O]``, FULLY_CONNECTED ``[units, in]``). A fused
activation becomes ``fused_activation`` and adds one MAC per output element.
The output of a DEQUANTIZE (or DENSIFY) whose input is a constant (fp16,
int8 or sparse weights) counts as a constant, so the conv reading it gets the parameters (at the
dequantized item size); the DEQUANTIZE itself stays a record.

Reading: the generated Python accessors of ``ai_edge_litert.schema_py_generated``
cost a few microseconds per field (~45 ms for a 200-operator model) and
``ModelT`` copies every weight into a Python list, so the few tables read
here go through :class:`_Reader`, a minimal flatbuffer reader (~10x
faster). Its vtable slots (:data:`_SLOTS`, :data:`_OPTIONS`) are those of
TFLite's ``schema.fbs``, which only ever appends fields; the unit tests check
them against the installed generated code. The generated module still
supplies the enum tables (op names, tensor types).
"""

from __future__ import annotations

import copy
import functools
import math
import struct
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from fleetmeter.modelfile import TFLITE_IDENTIFIER, is_tflite

from .graph import (NodeFeatures, ParsedGraph, Shape, _invalid_model, _is_invalid_model, check_input_shapes,
                       place_in_graph)
from .geometry import same_padding

__all__ = ["parse_tflite"]

_ITEMSIZE = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2, "COMPLEX64": 8,
             "INT8": 1, "FLOAT64": 8, "COMPLEX128": 16, "UINT64": 8, "UINT32": 4, "UINT16": 2, "INT4": 1,
             "BFLOAT16": 2, "INT2": 1, "UINT4": 1, "FLOAT8_E4M3FN": 1, "FLOAT8_E5M2": 1}
_FUSED = {1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh", 5: "sign_bit"}
_PADDING_SAME = 0  # tflite.Padding.SAME (the schema default)
_FOLDED = -1  # _Tensor.buffer of a DEQUANTIZE output computed from a constant

#: (generated class, accessor) -> (vtable slot, struct format, default) of the tables read here.
_SLOTS: Dict[Tuple[str, str], Tuple[int, str, Any]] = {
    ("Model", "OperatorCodes"): (1, "", None), ("Model", "Subgraphs"): (2, "", None),
    ("Model", "Buffers"): (4, "", None),
    ("SubGraph", "Tensors"): (0, "", None), ("SubGraph", "Inputs"): (1, "", None),
    ("SubGraph", "Outputs"): (2, "", None), ("SubGraph", "Operators"): (3, "", None),
    ("Tensor", "Shape"): (0, "", None), ("Tensor", "Type"): (1, "b", 0), ("Tensor", "Buffer"): (2, "I", 0),
    ("Tensor", "Name"): (3, "", None), ("Tensor", "ShapeSignature"): (7, "", None),
    ("Buffer", "Data"): (0, "", None), ("Buffer", "Offset"): (1, "Q", 0),
    ("OperatorCode", "DeprecatedBuiltinCode"): (0, "b", 0), ("OperatorCode", "CustomCode"): (1, "", None),
    ("OperatorCode", "BuiltinCode"): (3, "i", 0),
    ("Operator", "OpcodeIndex"): (0, "I", 0), ("Operator", "Inputs"): (1, "", None),
    ("Operator", "Outputs"): (2, "", None), ("Operator", "BuiltinOptionsType"): (3, "B", 0),
    ("Operator", "BuiltinOptions"): (4, "", None),
}

def _slot(table: str, field: str) -> int:
    return _SLOTS[(table, field)][0]


_MODEL_OPCODES, _MODEL_SUBGRAPHS, _MODEL_BUFFERS = (
    _slot("Model", f) for f in ("OperatorCodes", "Subgraphs", "Buffers"))
_SG_TENSORS, _SG_INPUTS, _SG_OUTPUTS, _SG_OPERATORS = (
    _slot("SubGraph", f) for f in ("Tensors", "Inputs", "Outputs", "Operators"))
_TENSOR_SHAPE, _TENSOR_NAME = _slot("Tensor", "Shape"), _slot("Tensor", "Name")
_TENSOR_SIGNATURE = _slot("Tensor", "ShapeSignature")
_BUFFER_DATA = _slot("Buffer", "Data")
_CODE_CUSTOM = _slot("OperatorCode", "CustomCode")
_OP_INPUTS, _OP_OUTPUTS, _OP_OPTIONS = (_slot("Operator", f) for f in ("Inputs", "Outputs", "BuiltinOptions"))

_CONV = {"Padding": (0, "b", 0), "StrideW": (1, "i", 0), "StrideH": (2, "i", 0), "FusedActivationFunction": (3, "b", 0),
         "DilationWFactor": (4, "i", 1), "DilationHFactor": (5, "i", 1)}
_FUSED_ONLY = {"FusedActivationFunction": (0, "b", 0)}
#: Options table -> accessor -> (vtable slot, struct format, default).
_OPTIONS: Dict[str, Dict[str, Tuple[int, str, Any]]] = {
    "Conv2DOptions": _CONV,
    "DepthwiseConv2DOptions": {"Padding": (0, "b", 0), "StrideW": (1, "i", 0), "StrideH": (2, "i", 0),
                               "DepthMultiplier": (3, "i", 0), "FusedActivationFunction": (4, "b", 0),
                               "DilationWFactor": (5, "i", 1), "DilationHFactor": (6, "i", 1)},
    "Pool2DOptions": {"Padding": (0, "b", 0), "StrideW": (1, "i", 0), "StrideH": (2, "i", 0),
                      "FilterWidth": (3, "i", 0), "FilterHeight": (4, "i", 0), "FusedActivationFunction": (5, "b", 0)},
    "TransposeConvOptions": {"Padding": (0, "b", 0), "StrideW": (1, "i", 0), "StrideH": (2, "i", 0),
                             "FusedActivationFunction": (3, "b", 0)},
    "FullyConnectedOptions": _FUSED_ONLY, "AddOptions": _FUSED_ONLY, "SubOptions": _FUSED_ONLY,
    "MulOptions": _FUSED_ONLY, "DivOptions": _FUSED_ONLY,
    "ConcatenationOptions": {"Axis": (0, "i", 0), "FusedActivationFunction": (1, "b", 0)},
    "BatchMatMulOptions": {"AdjX": (0, "?", False), "AdjY": (1, "?", False)},
    "IfOptions": {"ThenSubgraphIndex": (0, "i", 0), "ElseSubgraphIndex": (1, "i", 0)},
    "WhileOptions": {"CondSubgraphIndex": (0, "i", 0), "BodySubgraphIndex": (1, "i", 0)},
}
_STRUCTS = {f: struct.Struct("<" + f).unpack_from for f in "bBhHiIqQ?"}
_U16 = _STRUCTS["H"]
_U32 = _STRUCTS["I"]
_I32 = _STRUCTS["i"]

_BINARY = {"ADD": ("add", "AddOptions"), "SUB": ("sub", "SubOptions"), "MUL": ("mul", "MulOptions"),
           "DIV": ("div", "DivOptions")}
_ACTIVATIONS = {"RELU": "relu", "RELU6": "relu6", "RELU_N1_TO_1": "relu_n1_to_1", "LOGISTIC": "sigmoid",
                "TANH": "tanh", "HARD_SWISH": "hardswish", "LEAKY_RELU": "leaky_relu", "PRELU": "prelu",
                "ELU": "elu", "GELU": "gelu"}
_LAYOUT = {"RESHAPE": "reshape", "SQUEEZE": "reshape", "EXPAND_DIMS": "reshape", "TRANSPOSE": "transpose"}
_MOVES = {"PAD": "pad", "PADV2": "pad", "MIRROR_PAD": "pad", "SLICE": "slice", "STRIDED_SLICE": "slice",
          "SPLIT": "split", "SPLIT_V": "split", "GATHER": "gather", "DEPTH_TO_SPACE": "depth_to_space",
          "SPACE_TO_DEPTH": "space_to_depth"}
_ELEMENTWISE = {"SOFTMAX": "softmax", "LOG_SOFTMAX": "log_softmax", "RESIZE_BILINEAR": "resize",
                "RESIZE_NEAREST_NEIGHBOR": "resize", "CAST": "cast", "QUANTIZE": "quantize",
                "DEQUANTIZE": "dequantize"}
_POOLS = {"MAX_POOL_2D": "pool_max", "AVERAGE_POOL_2D": "pool_avg", "L2_POOL_2D": "other:l2_pool_2d"}
_REDUCE = {"MEAN": ("reduce_mean", "global_pool"), "REDUCE_MAX": ("reduce_max", "global_pool_max"),
           "SUM": ("reduce_sum", None)}
_RECURRENT = {"UNIDIRECTIONAL_SEQUENCE_LSTM": "lstm", "BIDIRECTIONAL_SEQUENCE_LSTM": "lstm", "LSTM": "lstm",
              "UNIDIRECTIONAL_SEQUENCE_RNN": "rnn", "BIDIRECTIONAL_SEQUENCE_RNN": "rnn", "RNN": "rnn"}
#: Control-flow ops -> (options table, the option naming each body subgraph); IF costs the larger branch.
_CONTROL_FLOW = {"IF": ("IfOptions", ("ThenSubgraphIndex", "ElseSubgraphIndex")),
                 "WHILE": ("WhileOptions", ("BodySubgraphIndex",))}
#: Ops computing constants from constants (their outputs are weights to the op reading them).
_WEIGHT_OPS = frozenset({"DEQUANTIZE", "DENSIFY"})
_INTEGER_TYPES = frozenset({"INT8", "UINT8", "INT16"})


@functools.lru_cache(maxsize=1)
def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("TFLite features need ai-edge-litert: pip install 'fleetmeter[modeler]'") from exc
    return schema


@functools.lru_cache(maxsize=1)
def _tables() -> Tuple[Dict[int, str], Dict[int, int], Dict[str, int], Dict[str, int]]:
    """(op code -> name, tensor type -> item size, tensor type name -> code, options name -> union tag)."""
    schema = _schema()

    def enum(cls: Any) -> Dict[str, int]:
        return {k: v for k, v in vars(cls).items() if not k.startswith("_")}

    types = enum(schema.TensorType)
    return ({v: k for k, v in enum(schema.BuiltinOperator).items()},
            {v: _ITEMSIZE.get(k, 4) for k, v in types.items()}, types, enum(schema.BuiltinOptions))


class _Reader:
    """Read-only access to a little-endian flatbuffer: tables are absolute byte positions.

    Out-of-range offsets raise ``struct.error`` or ``ValueError``, which the
    caller reports as a corrupt file.
    """

    def __init__(self, data: bytes) -> None:
        self.buf = data
        self.size = len(data)
        self._vtables: Dict[int, Tuple[int, ...]] = {}

    def root(self) -> int:
        return _U32(self.buf, 0)[0]

    def slots(self, table: int) -> Tuple[int, ...]:
        """The table's field offsets by slot (0: absent); vtables are shared, so they are cached."""
        vtable = table - _I32(self.buf, table)[0]
        offsets = self._vtables.get(vtable)
        if offsets is None:
            n = (_U16(self.buf, vtable)[0] - 4) // 2
            offsets = struct.unpack_from(f"<{n}H", self.buf, vtable + 4) if n > 0 else ()
            self._vtables[vtable] = offsets
        return offsets

    def field(self, table: int, slot: int) -> int:
        offsets = self.slots(table)
        return table + offsets[slot] if slot < len(offsets) and offsets[slot] else 0

    def scalar(self, table: int, slot: int, fmt: str, default: Any) -> Any:
        pos = self.field(table, slot)
        return _STRUCTS[fmt](self.buf, pos)[0] if pos else default

    def get(self, table: int, key: Tuple[str, str]) -> Any:
        slot, fmt, default = _SLOTS[key]
        return self.scalar(table, slot, fmt, default)

    def table(self, table: int, slot: int) -> int:
        pos = self.field(table, slot)
        return pos + _U32(self.buf, pos)[0] if pos else 0

    def vector(self, table: int, slot: int, item_size: int) -> Tuple[int, int]:
        """(start, length) of a vector field; (0, 0) when absent."""
        pos = self.field(table, slot)
        if not pos:
            return 0, 0
        vec = pos + _U32(self.buf, pos)[0]
        n = _U32(self.buf, vec)[0]
        if vec + 4 + n * item_size > self.size:
            raise ValueError(f"vector at byte {vec} runs past the end of the file")
        return vec + 4, n

    def tables(self, table: int, slot: int) -> List[int]:
        start, n = self.vector(table, slot, 4)
        offsets = struct.unpack_from(f"<{n}I", self.buf, start)
        return [start + 4 * i + off for i, off in enumerate(offsets)]

    def ints(self, table: int, slot: int) -> Tuple[int, ...]:
        start, n = self.vector(table, slot, 4)
        return struct.unpack_from(f"<{n}i", self.buf, start) if n else ()

    def bytes(self, table: int, slot: int) -> bytes:
        start, n = self.vector(table, slot, 1)
        return self.buf[start:start + n]


def parse_tflite(data: bytes, source: str, input_shapes: Optional[Mapping[str, Shape]] = None) -> ParsedGraph:
    """Raw records of the TFLite model ``data`` (read from ``source``, used in messages), at ``input_shapes``
    (input tensor name -> dims, NHWC as stored) where given: see :meth:`_Graph.set_input_shapes`."""
    if not is_tflite(data):
        raise _invalid_model(f"{source}: not a valid TFLite model (no {TFLITE_IDENTIFIER.decode()!r} file identifier)")
    try:
        return _Graph(data, source, input_shapes).parse()
    except (IndexError, struct.error, ValueError, OverflowError, MemoryError) as exc:
        if _is_invalid_model(exc):
            raise
        raise _invalid_model(f"{source}: corrupt TFLite model ({type(exc).__name__}: {exc})") from exc


def _nchw(shape: Shape) -> Shape:
    return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape


def _channels(native: Shape) -> int:
    return native[-1] if native else 0


class _Tensor:
    __slots__ = ("key", "shape", "itemsize", "buffer", "type")

    def __init__(self, key: str, shape: Shape, itemsize: int, buffer: int, type_: int) -> None:
        self.key, self.shape, self.itemsize, self.buffer, self.type = key, shape, itemsize, buffer, type_

    @property
    def const(self) -> bool:
        return self.buffer != 0

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.elements * self.itemsize


class _Graph:
    def __init__(self, data: bytes, source: str, input_shapes: Optional[Mapping[str, Shape]] = None) -> None:
        self.r = _Reader(data)
        self.input_shapes = dict(input_shapes or {})
        self.resized: Dict[int, Shape] = {}  # tensor index -> its shape at input_shapes (from LiteRT)
        self.dynamic_inputs: List[str] = []
        self.source = source
        self.op_names, self.sizes, self.type_codes, self.option_tags = _tables()
        root = self.r.root()
        subgraphs = self.r.tables(root, _MODEL_SUBGRAPHS)
        if not subgraphs:
            raise _invalid_model(f"{source}: not a valid TFLite model (no subgraph)")
        self.root, self.g, self.subgraphs = root, subgraphs[0], subgraphs
        self.buffers = self.r.tables(root, _MODEL_BUFFERS)
        self.tensor_tables = self.r.tables(self.g, _SG_TENSORS)
        self._tensors: Dict[int, _Tensor] = {}
        self._key_owner: Dict[str, int] = {}

    def _key(self, index: int) -> str:
        """The tensor's name; ``#<index>`` when it has none, ``name#<index>`` when another tensor has it."""
        name = self.r.bytes(self.tensor_tables[index], _TENSOR_NAME).decode("utf-8", "replace")
        if not name:
            return f"#{index}"
        owner = self._key_owner.setdefault(name, index)
        return name if owner == index else f"{name}#{index}"

    def tensor(self, index: int) -> _Tensor:
        t = self._tensors.get(index)
        if t is None:
            if not 0 <= index < len(self.tensor_tables):
                raise _invalid_model(f"{self.source}: an operator reads tensor {index}, which does not exist")
            r, table = self.r, self.tensor_tables[index]
            shape = self.resized.get(index) or tuple(d if d > 0 else 1 for d in r.ints(table, _TENSOR_SHAPE))
            type_ = r.get(table, ("Tensor", "Type"))
            b = r.get(table, ("Tensor", "Buffer"))
            const = 0
            if 0 < b < len(self.buffers):
                buf = self.buffers[b]
                if r.vector(buf, _BUFFER_DATA, 1)[1] > 0 or r.get(buf, ("Buffer", "Offset")) > 1:
                    const = b
            t = _Tensor(self._key(index), shape, self.sizes.get(type_, 4), const, type_)
            self._tensors[index] = t
        return t

    def data(self, t: _Tensor) -> bytes:
        """The bytes of a constant stored inside the file (empty when outside or absent)."""
        return self.r.bytes(self.buffers[t.buffer], _BUFFER_DATA) if t.buffer > 0 else b""

    def values(self, t: _Tensor) -> Optional[Tuple[int, ...]]:
        """A small integer constant's values (axes), or None."""
        fmt = {self.type_codes["INT32"]: "i", self.type_codes["INT64"]: "q"}.get(t.type)
        raw = self.data(t)
        if fmt is None or not raw:
            return None
        return struct.unpack(f"<{len(raw) // struct.calcsize(fmt)}{fmt}", raw)

    def is_zero(self, t: _Tensor) -> bool:
        raw = self.data(t)
        return bool(raw) and not raw.strip(b"\x00")

    def options(self, op: int, name: str) -> Dict[str, Any]:
        """The op's ``name`` options (schema defaults when absent or of another type)."""
        fields = _OPTIONS[name]
        table = 0
        if self.r.get(op, ("Operator", "BuiltinOptionsType")) == self.option_tags.get(name):
            table = self.r.table(op, _OP_OPTIONS)
        if not table:
            return {k: default for k, (_, _, default) in fields.items()}
        return {k: self.r.scalar(table, slot, fmt, default) for k, (slot, fmt, default) in fields.items()}

    # -- input shapes -------------------------------------------------------
    def set_input_shapes(self) -> None:
        """Shapes at ``input_shapes``; notes the inputs left dynamic (``-1`` in their shape signature).

        TFLite stores every tensor's shape for one input size, so a different
        size is LiteRT's business: the model is loaded in its interpreter
        (builtin kernels, no delegate), the inputs resized, the tensors
        allocated, and every tensor's shape read back. An override equal to
        the stored shape changes nothing (and loads nothing). A model LiteRT
        cannot load or resize (a custom op, a reshape fixed to the old size)
        is :class:`~fleetmeter.errors.InvalidArgument` saying so.
        """
        r = self.r
        inputs = {r.bytes(self.tensor_tables[i], _TENSOR_NAME).decode("utf-8", "replace") or f"#{i}": i
                  for i in r.ints(self.g, _SG_INPUTS)}  # the names the runtime (and a sweep) use
        declared = {}
        for name, i in inputs.items():
            table = self.tensor_tables[i]
            signature = r.ints(table, _TENSOR_SIGNATURE)
            declared[name] = tuple("?" if d < 0 else d for d in signature) if signature else r.ints(
                table, _TENSOR_SHAPE)
            if name not in self.input_shapes and any(d < 0 for d in signature):
                self.dynamic_inputs.append(name)
        check_input_shapes(self.source, self.input_shapes, declared)
        changed = {inputs[n]: s for n, s in self.input_shapes.items()
                   if tuple(s) != tuple(r.ints(self.tensor_tables[inputs[n]], _TENSOR_SHAPE))}
        if not changed:
            return
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("TFLite input shapes need ai-edge-litert: pip install 'fleetmeter[modeler]'") from exc
        try:
            interpreter = Interpreter(model_content=bytes(r.buf), num_threads=1,
                                      experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            for index, shape in changed.items():
                interpreter.resize_tensor_input(index, list(shape), strict=False)
            interpreter.allocate_tensors()
            details = interpreter.get_tensor_details()
        except (ValueError, RuntimeError) as exc:
            given = ", ".join(f"{n}={'x'.join(map(str, s))}" for n, s in self.input_shapes.items())
            raise _invalid_model(f"{self.source}: cannot predict at {given}: LiteRT cannot resize this model "
                                 f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
                                 ) from exc
        self.resized = {int(d["index"]): tuple(int(x) if x > 0 else 1 for x in d["shape"]) for d in details
                        if 0 <= int(d["index"]) < len(self.tensor_tables)}

    # -- records ------------------------------------------------------------
    def parse(self) -> ParsedGraph:
        r = self.r
        self.set_input_shapes()
        codes = []
        for code in r.tables(self.root, _MODEL_OPCODES):
            builtin = max(r.get(code, ("OperatorCode", "BuiltinCode")),
                          r.get(code, ("OperatorCode", "DeprecatedBuiltinCode")))
            name = self.op_names.get(builtin, f"BUILTIN_{builtin}")
            if name == "CUSTOM":
                name = "CUSTOM:" + (r.bytes(code, _CODE_CUSTOM).decode("utf-8", "replace") or "?")
            codes.append(name)
        self.codes = codes
        nodes = self._operators()
        inputs = [self.tensor(i) for i in r.ints(self.g, _SG_INPUTS)]
        outputs = [self.tensor(i) for i in r.ints(self.g, _SG_OUTPUTS)]
        return ParsedGraph(
            nodes=nodes,
            input_shapes=[_nchw(t.shape) for t in inputs],
            input_bytes=sum(t.nbytes for t in inputs),
            output_names=tuple(t.key for t in outputs),
            output_shapes=[_nchw(t.shape) for t in outputs],
            dynamic_inputs=list(self.dynamic_inputs),
        )

    # -- control flow -------------------------------------------------------
    def _operators(self, subgraph: str = "", rename: Optional[Callable[[str], str]] = None,
                   depth: int = 0) -> List[NodeFeatures]:
        """Records of this subgraph's operators; a control-flow op is followed by its body's (see _body)."""
        r, codes = self.r, self.codes
        out: List[NodeFeatures] = []
        for i, op in enumerate(r.tables(self.g, _SG_OPERATORS)):
            index = r.get(op, ("Operator", "OpcodeIndex"))
            if not 0 <= index < len(codes):
                raise _invalid_model(f"{self.source}: operator {i} uses opcode {index}, which does not exist")
            record = self._record(op, codes[index])
            body = self._body(op, codes[index], subgraph, rename, depth) if codes[index] in _CONTROL_FLOW else None
            out.extend(place_in_graph(record, body, subgraph, rename))
        return out

    def _body(self, op: int, name: str, subgraph: str, rename: Optional[Callable[[str], str]],
              depth: int) -> List[NodeFeatures]:
        """IF: the records of its larger branch (by MACs); WHILE: its body's, once (the trip count is unknown).

        A body's tensors are renamed: its inputs and outputs to the op's, the rest prefixed with the path.
        """
        table, keys = _CONTROL_FLOW[name]
        options = self.options(op, table)
        op_ins = [self.tensor(i).key if i >= 0 else "" for i in self.r.ints(op, _OP_INPUTS)]
        op_outs = [self.tensor(i).key for i in self.r.ints(op, _OP_OUTPUTS) if i >= 0]
        if name == "IF":
            op_ins = op_ins[1:]  # the condition
        outer = rename or (lambda t: t)
        path = f"{subgraph}/" if subgraph else ""
        candidates = []
        for key in keys:
            index = options[key]
            if not 0 < index < len(self.subgraphs) or depth > 16:
                continue
            sub = self._subgraph(index)
            mapping = {sub.tensor(i).key: outer(t) for i, t in zip(sub.r.ints(sub.g, _SG_INPUTS), op_ins) if t}
            mapping.update({sub.tensor(i).key: outer(t) for i, t in zip(sub.r.ints(sub.g, _SG_OUTPUTS), op_outs)})
            prefix = f"{path}{op_outs[0] if op_outs else name.lower()}/{key[:-len('SubgraphIndex')].lower()}"
            records = sub._operators(prefix, lambda t, m=mapping, p=prefix: m.get(t, f"{p}/{t}"), depth + 1)
            candidates.append((sum(rec.macs for rec in records), len(records), records))
        return max(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else []

    def _subgraph(self, index: int) -> "_Graph":
        """A reader of subgraph ``index`` sharing this one's file, buffers and tables."""
        sub = copy.copy(self)
        sub.g = self.subgraphs[index]
        sub.tensor_tables = self.r.tables(sub.g, _SG_TENSORS)
        sub._tensors, sub._key_owner, sub.resized = {}, {}, {}
        return sub

    def _record(self, op: int, name: str) -> NodeFeatures:
        ins = [self.tensor(i) if i >= 0 else None for i in self.r.ints(op, _OP_INPUTS)]
        outs = [self.tensor(i) for i in self.r.ints(op, _OP_OUTPUTS) if i >= 0]
        act_in = [t for t in ins if t is not None and not t.const]
        if name in _WEIGHT_OPS and not act_in:
            for t in outs:  # dequantized weights (fp16/int8 files) are weights to the op reading them
                t.buffer = _FOLDED
        fields = self._op_fields(op, name, ins, outs)
        if fields is None:
            consts = [t for t in ins if t is not None and t.const]
            fields = {"op_type": "other:" + (name[7:] if name.startswith("CUSTOM:") else name.lower()),
                      "macs": outs[0].elements if outs else 0, "params": sum(t.elements for t in consts),
                      "param_bytes": sum(t.nbytes for t in consts),
                      "out_channels": _channels(outs[0].shape) if outs else 0}
        fused = fields.pop("fused", 0)
        if fused:
            fields["fused_activation"] = _FUSED.get(fused, f"fused_{fused}")
            fields["macs"] = fields.get("macs", 0) + (outs[0].elements if outs else 0)
        integer = {self.type_codes.get(t) for t in _INTEGER_TYPES}
        fields["quantized"] = bool(act_in) and (act_in[0].type in integer or (
            name == "QUANTIZE" and bool(outs) and outs[0].type in integer))
        return NodeFeatures(
            name=outs[0].key if outs else name.lower(),
            raw_op=name,
            input_shapes=tuple(_nchw(t.shape) for t in act_in),
            output_shapes=tuple(_nchw(t.shape) for t in outs),
            act_read_bytes=sum(t.nbytes for t in act_in),
            act_write_bytes=sum(t.nbytes for t in outs),
            inputs=tuple(t.key for t in act_in),
            outputs=tuple(t.key for t in outs),
            **fields,
        )

    def _op_fields(self, op: int, name: str, ins: List[Optional[_Tensor]], outs: List[_Tensor]
                   ) -> Optional[Dict[str, Any]]:
        out = outs[0] if outs else None
        out_elems = out.elements if out else 0
        x = ins[0] if ins else None
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            return self._conv(op, name, ins, out)
        if name == "TRANSPOSE_CONV":
            return self._transpose_conv(op, ins, out)
        if name in ("FULLY_CONNECTED", "BATCH_MATMUL"):
            return self._dense(op, name, ins, out)
        if name == "CUSTOM:Convolution2DTransposeBias" and x is not None and len(ins) > 1 and ins[1] is not None:
            return self._custom_transpose_conv(ins, x, out)
        if name in _CONTROL_FLOW:  # its body follows as records of its own (see _body)
            return {"op_type": f"other:{name.lower()}", "macs": 0}
        if name in _RECURRENT and x is not None:
            # sequence x batch x (input + recurrent weight elements), plus one per output element
            weights = sum(t.elements for t in ins[1:] if t is not None and t.const and len(t.shape) == 2)
            consts = [t for t in ins[1:] if t is not None and t.const]
            return {"op_type": _RECURRENT[name], "in_channels": _channels(x.shape),
                    "out_channels": _channels(out.shape) if out else 0,
                    "macs": x.elements // max(_channels(x.shape), 1) * weights + out_elems,
                    "params": sum(t.elements for t in consts), "param_bytes": sum(t.nbytes for t in consts)}
        if name in _POOLS and x is not None:
            o = self.options(op, "Pool2DOptions")
            kernel = (o["FilterHeight"], o["FilterWidth"])
            stride = (o["StrideH"], o["StrideW"])
            c = _channels(x.shape)
            return {"op_type": _POOLS[name], "kernel": kernel, "stride": stride, "dilation": (1, 1),
                    "padding": self._padding(o["Padding"], x.shape, kernel, stride, (1, 1)),
                    "in_channels": c, "out_channels": c, "macs": out_elems * kernel[0] * kernel[1],
                    "fused": o["FusedActivationFunction"]}
        if name in _REDUCE and x is not None:
            axes_t = ins[1] if len(ins) > 1 else None
            axes = self.values(axes_t) if axes_t is not None else None
            kind, global_kind = _REDUCE[name]
            if global_kind and len(x.shape) == 4 and axes is not None and sorted(int(a) % 4 for a in axes) == [1, 2]:
                kind = global_kind
            c = _channels(x.shape)
            return {"op_type": kind, "in_channels": c, "out_channels": c if kind.startswith("global") else 0,
                    "macs": x.elements}
        if name in _BINARY:
            kind, cls = _BINARY[name]
            o = self.options(op, cls)
            consts = [t for t in ins if t is not None and t.const]
            return {"op_type": kind, "macs": out_elems, "params": sum(t.elements for t in consts),
                    "param_bytes": sum(t.nbytes for t in consts), "out_channels": _channels(out.shape) if out else 0,
                    "fused": o["FusedActivationFunction"]}
        if name in _ACTIVATIONS:
            consts = [t for t in ins if t is not None and t.const] if name == "PRELU" else []
            return {"op_type": f"activation:{_ACTIVATIONS[name]}", "macs": out_elems,
                    "params": sum(t.elements for t in consts), "param_bytes": sum(t.nbytes for t in consts),
                    "out_channels": _channels(out.shape) if out else 0}
        if name == "CONCATENATION":
            o = self.options(op, "ConcatenationOptions")
            return {"op_type": "concat", "out_channels": _channels(out.shape) if out else 0,
                    "fused": o["FusedActivationFunction"]}
        if name in _ELEMENTWISE:
            return {"op_type": _ELEMENTWISE[name], "macs": out_elems,
                    "out_channels": _channels(out.shape) if out else 0}
        if name in _LAYOUT:
            return {"op_type": _LAYOUT[name]}
        if name in _MOVES:
            return {"op_type": _MOVES[name], "out_channels": _channels(out.shape) if out else 0}
        return None

    def _padding(self, padding: int, native_in: Shape, kernel: Tuple[int, int], stride: Tuple[int, int],
                 dilation: Tuple[int, int]) -> Tuple[int, int, int, int]:
        if padding != _PADDING_SAME or len(native_in) != 4:
            return (0, 0, 0, 0)
        top, bottom = same_padding(native_in[1], kernel[0], max(stride[0], 1), max(dilation[0], 1))
        left, right = same_padding(native_in[2], kernel[1], max(stride[1], 1), max(dilation[1], 1))
        return (top, left, bottom, right)

    def _weights(self, ins: List[Optional[_Tensor]], weight: int, bias: Optional[int]) -> Tuple[int, int]:
        params = nbytes = 0
        for i in (weight, bias):
            if i is None or i >= len(ins):
                continue
            t = ins[i]
            if t is None or not t.const or (i == bias and self.is_zero(t)):
                continue
            params += t.elements
            nbytes += t.nbytes
        return params, nbytes

    def _conv(self, op: int, name: str, ins: List[Optional[_Tensor]], out: Optional[_Tensor]) -> Dict[str, Any]:
        x, f = ins[0], ins[1]
        if x is None or f is None:
            raise ValueError(f"{name} without an input or a filter")
        depthwise = name == "DEPTHWISE_CONV_2D"
        o = self.options(op, "DepthwiseConv2DOptions" if depthwise else "Conv2DOptions")
        in_c = _channels(x.shape)
        kernel = (f.shape[1], f.shape[2]) if len(f.shape) == 4 else (1, 1)
        if depthwise:
            groups, per_group, out_c = in_c, 1, f.shape[-1]
        else:
            per_group = f.shape[-1] if f.shape else in_c
            groups, out_c = max(in_c // max(per_group, 1), 1), f.shape[0]
        stride = (o["StrideH"], o["StrideW"])
        dilation = (o["DilationHFactor"], o["DilationWFactor"])
        params, pbytes = self._weights(ins, 1, 2)
        kind = "depthwise_conv2d" if groups == in_c and in_c > 1 else "conv2d"
        return {"op_type": kind, "kernel": kernel, "stride": stride, "dilation": dilation,
                "padding": self._padding(o["Padding"], x.shape, kernel, stride, dilation),
                "groups": groups, "in_channels": in_c, "out_channels": out_c,
                "macs": (out.elements if out else 0) * kernel[0] * kernel[1] * per_group,
                "params": params, "param_bytes": pbytes, "fused": o["FusedActivationFunction"]}

    def _transpose_conv(self, op: int, ins: List[Optional[_Tensor]], out: Optional[_Tensor]) -> Dict[str, Any]:
        f, x = ins[1], ins[2]
        if x is None or f is None:
            raise ValueError("TRANSPOSE_CONV without an input or a filter")
        o = self.options(op, "TransposeConvOptions")
        kernel = (f.shape[1], f.shape[2]) if len(f.shape) == 4 else (1, 1)
        stride = (o["StrideH"], o["StrideW"])
        params, pbytes = self._weights(ins, 1, 3)
        padding = self._padding(o["Padding"], out.shape if out else (), kernel, stride, (1, 1))
        return {"op_type": "conv_transpose2d", "kernel": kernel, "stride": stride, "dilation": (1, 1),
                "padding": padding, "groups": 1, "in_channels": _channels(x.shape), "out_channels": f.shape[0],
                "macs": x.elements * kernel[0] * kernel[1] * f.shape[0], "params": params, "param_bytes": pbytes,
                "fused": o["FusedActivationFunction"]}

    def _custom_transpose_conv(self, ins: List[Optional[_Tensor]], x: _Tensor, out: Optional[_Tensor]
                               ) -> Dict[str, Any]:
        """MediaPipe's custom ``Convolution2DTransposeBias`` (input, weights ``[O, kh, kw, I]``, bias):
        a transposed convolution; its options are a custom blob, so the stride is read off the shapes."""
        f = ins[1]
        kernel = (f.shape[1], f.shape[2]) if len(f.shape) == 4 else (1, 1)
        stride = (1, 1)
        if out is not None and len(out.shape) == 4 and len(x.shape) == 4:
            stride = (max(out.shape[1] // max(x.shape[1], 1), 1), max(out.shape[2] // max(x.shape[2], 1), 1))
        params, pbytes = self._weights(ins, 1, 2)
        return {"op_type": "conv_transpose2d", "kernel": kernel, "stride": stride, "dilation": (1, 1), "groups": 1,
                "in_channels": _channels(x.shape), "out_channels": f.shape[0] if f.shape else 0,
                "macs": x.elements * kernel[0] * kernel[1] * (f.shape[0] if f.shape else 0),
                "params": params, "param_bytes": pbytes}

    def _dense(self, op: int, name: str, ins: List[Optional[_Tensor]], out: Optional[_Tensor]) -> Dict[str, Any]:
        x, w = ins[0], ins[1]
        if x is None or w is None:
            raise ValueError(f"{name} without an input or weights")
        fused = 0
        if name == "FULLY_CONNECTED":
            o = self.options(op, "FullyConnectedOptions")
            fused = o["FusedActivationFunction"]
            k = w.shape[-1] if w.shape else 0
            dense = w.const
            params, pbytes = self._weights(ins, 1, 2)
        else:
            o = self.options(op, "BatchMatMulOptions")
            adj_x, adj_y = bool(o["AdjX"]), bool(o["AdjY"])
            dense = w.const and len(w.shape) == 2
            if dense:
                k = w.shape[1] if adj_y else w.shape[0]
            else:
                k = (x.shape[-2] if adj_x else x.shape[-1]) if x.shape else 0
            params, pbytes = self._weights(ins, 1, None)
        return {"op_type": "dense" if dense else "matmul", "in_channels": k,
                "out_channels": out.shape[-1] if out and out.shape else 0,
                "macs": (out.elements if out else 0) * k, "params": params, "param_bytes": pbytes, "fused": fused}
