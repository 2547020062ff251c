"""The parsed-graph vocabulary both format parsers (:mod:`.features_onnx`, :mod:`.features_tflite`) and
:mod:`.features` share: one operator record (:class:`NodeFeatures`), what a parser hands back
(:class:`ParsedGraph`), and the parsers' common checks and helpers.

Its own module so that ``features`` (which calls the parsers) and the parsers (which build these records)
do not import each other. Units and layouts: the :mod:`.features` module docstring.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from fleetmeter.errors import InvalidArgument

__all__ = ["LAYOUT_OPS", "KERNEL_FEATURE_KEYS", "Shape", "NodeFeatures", "ParsedGraph", "check_input_shapes",
           "place_in_graph"]

#: Ops that only move or relabel data and differ between NCHW and NHWC graphs.
LAYOUT_OPS = frozenset({"reshape", "transpose", "identity"})

#: The numeric per-node features :meth:`NodeFeatures.numeric` returns, in this order.
KERNEL_FEATURE_KEYS = (
    "in_h", "in_w", "out_h", "out_w", "in_channels", "out_channels",
    "kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w",
    "pad_top", "pad_left", "pad_bottom", "pad_right", "groups", "num_inputs",
    "macs", "params", "param_bytes", "act_read_bytes", "act_write_bytes", "arithmetic_intensity",
)

Shape = Tuple[int, ...]


@dataclass
class NodeFeatures:
    """One operator (or, after fusion, one kernel) of a model.

    Dict-like for reading (``node["macs"]``, ``node.keys()``,
    :meth:`to_dict`); see the module docstring for units and layouts.
    ``inputs``/``outputs`` name the activation tensors read and written
    (constants are not listed; TFLite tensors without a unique name are
    ``#<index>``); they link records into a graph. ``name`` is the ONNX node
    name, or for TFLite the name of the first output tensor. Records are
    shared between lists (see :func:`fuse_activations`): do not modify them.
    """

    name: str
    op_type: str
    raw_op: str
    input_shapes: Tuple[Shape, ...] = ()
    output_shapes: Tuple[Shape, ...] = ()
    kernel: Tuple[int, int] = (0, 0)
    stride: Tuple[int, int] = (0, 0)
    dilation: Tuple[int, int] = (0, 0)
    padding: Tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: int = 0
    in_channels: int = 0
    out_channels: int = 0
    macs: int = 0
    params: int = 0
    param_bytes: int = 0
    act_read_bytes: int = 0
    act_write_bytes: int = 0
    fused_activation: Optional[str] = None
    folded_bn: bool = False
    inputs: Tuple[str, ...] = ()
    outputs: Tuple[str, ...] = ()
    #: The control-flow bodies this record sits in (``""``: the main graph), e.g. ``If_0/else_branch``.
    subgraph: str = ""
    #: A quantized kernel (integer arithmetic: QLinearConv, ConvInteger, int8 TFLite ops ...).
    quantized: bool = False
    #: An output shape could not be inferred: ``macs`` is estimated from what is known (weights, inputs).
    shape_unresolved: bool = False

    @property
    def arithmetic_intensity(self) -> float:
        moved = self.param_bytes + self.act_read_bytes + self.act_write_bytes
        return self.macs / moved if moved else 0.0

    @property
    def is_layout(self) -> bool:
        return self.op_type in LAYOUT_OPS

    @property
    def kernel_type(self) -> str:
        """The fused kernel's type: ``op_type`` + ``+bn`` + ``+<activation>``, e.g. ``conv2d+relu``."""
        kind = self.op_type
        if self.folded_bn:
            kind += "+bn"
        if self.fused_activation:
            kind += "+" + self.fused_activation
        return kind

    def keys(self) -> List[str]:
        return [f.name for f in dataclasses.fields(self)] + ["arithmetic_intensity", "kernel_type", "is_layout"]

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: tuples become lists."""
        return {k: _jsonable(getattr(self, k)) for k in self.keys()}

    def numeric(self) -> Dict[str, float]:
        """Flat kernel features (:data:`KERNEL_FEATURE_KEYS`) for kernel-level predictors.

        ``in_h``/``in_w`` come from the first input, ``out_h``/``out_w`` from the
        first output (NCHW: dims 2 and 3.. of a rank >= 4 shape, else 1).
        """
        in_h, in_w = _hw(self.input_shapes[0]) if self.input_shapes else (0, 0)
        out_h, out_w = _hw(self.output_shapes[0]) if self.output_shapes else (0, 0)
        values = (
            in_h, in_w, out_h, out_w, self.in_channels, self.out_channels,
            *self.kernel, *self.stride, *self.dilation, *self.padding, self.groups, len(self.inputs),
            self.macs, self.params, self.param_bytes, self.act_read_bytes, self.act_write_bytes,
            self.arithmetic_intensity,
        )
        return {k: float(v) for k, v in zip(KERNEL_FEATURE_KEYS, values)}


def _hw(shape: Shape) -> Tuple[int, int]:
    if len(shape) >= 4:
        return shape[2], math.prod(shape[3:])
    return 1, 1


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass
class ParsedGraph:
    """What a format parser hands back: raw records plus the graph's inputs and outputs."""

    nodes: List[NodeFeatures]
    input_shapes: List[Shape]  # graph inputs (not constants), NCHW
    input_bytes: int
    output_names: Tuple[str, ...]
    output_shapes: List[Shape]
    #: Graph inputs with a dynamic dimension that no ``input_shapes`` entry set (counted as 1).
    dynamic_inputs: List[str] = field(default_factory=list)


# --------------------------------------------------------------------------
# Parser helpers
# --------------------------------------------------------------------------


def _invalid_model(message: str) -> ValueError:
    """:class:`fleetmeter.errors.InvalidArgument` for ``message``."""
    return InvalidArgument(message)


def _is_invalid_model(exc: BaseException) -> bool:
    return isinstance(exc, InvalidArgument)


def check_input_shapes(source: str, shapes: Mapping[str, Shape], declared: Mapping[str, Optional[Sequence[Any]]]
                       ) -> None:
    """For the parsers: every name in ``shapes`` is a graph input of ``declared`` (name -> its declared
    dims, ``None`` when unknown) and has its rank, else :class:`~fleetmeter.errors.InvalidArgument` naming
    the model's inputs."""
    have = ", ".join(f"{n} ({'?' if d is None else 'x'.join(map(str, d)) or 'scalar'})"
                     for n, d in declared.items()) or "(none)"
    for name, shape in shapes.items():
        if name not in declared:
            raise _invalid_model(f"{source}: no input named {name!r}; the model's inputs are: {have}")
        if declared[name] is not None and len(shape) != len(declared[name]):
            raise _invalid_model(f"{source}: input {name!r} has rank {len(declared[name])}, the shape given "
                                 f"({'x'.join(map(str, shape))}) has rank {len(shape)}; the model's inputs are: "
                                 f"{have}")


def place_in_graph(record: NodeFeatures, body: Optional[List[NodeFeatures]], subgraph: str,
                   rename: Optional[Any] = None) -> List[NodeFeatures]:
    """``record`` as it sits in the flattened graph, followed by its control-flow ``body`` (if any).

    Both parsers flatten control-flow bodies into the main list: a record inside one is named
    ``<subgraph>/<name>`` with ``subgraph`` set, its tensors renamed by ``rename`` (a mapping or a
    callable) into the outer graph's names; a control-flow op with a body writes nothing itself (the
    body's records write its outputs).
    """
    if subgraph or rename or body is not None:
        fn = rename.get if isinstance(rename, Mapping) else rename
        name_of = (lambda t: fn(t, t)) if isinstance(rename, Mapping) else (fn or (lambda t: t))
        changes: Dict[str, Any] = {"inputs": tuple(name_of(t) for t in record.inputs),
                                   "outputs": () if body is not None else tuple(name_of(t) for t in record.outputs)}
        if subgraph:
            changes.update(subgraph=subgraph, name=f"{subgraph}/{record.name}")
        record = dataclasses.replace(record, **changes)
    return [record, *(body or ())]
