"""An ONNX model without its weight bytes, by walking the protobuf wire format (standard library only).

Graph features never read weights, and a network's file is mostly weights
(ResNet-50: ~100 MB), so both sides of ``Predict`` strip them here: the
feature parser (:mod:`fleetmeter.modeler.features_onnx`), to avoid parsing
them, and the caller (:mod:`fleetmeter.client`), to avoid sending them
(``PredictRequest.model_graph``). :func:`light_model_bytes` rewrites the
model with every initializer larger than :data:`KEEP_BYTES` stripped to its
name, type and dims (small constants that carry values, such as Reshape
targets, stay whole). Only this module knows the wire layout; it needs no
``onnx`` package, so a caller without the modeler can strip too.

What stripping loses and the features need: whether a bias was all zeros
(an all-zero bias counts as no bias). The parser keeps the data's byte
ranges (``spans``); a caller that sends the light bytes marks each stripped
tensor instead (``mark=True``): its ``doc_string`` becomes
:data:`STRIPPED` or, for all-zero data, :data:`STRIPPED_ZERO`.

Malformed input raises ``ValueError`` or ``IndexError``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

__all__ = ["KEEP_BYTES", "STRIPPED", "STRIPPED_ZERO", "light_model_bytes"]

#: Initializers whose TensorProto is at most this many bytes stay whole in the light model.
KEEP_BYTES = 4096
#: ``doc_string`` of a tensor whose data a caller stripped (:func:`light_model_bytes` with ``mark``).
STRIPPED = "fleetmeter:stripped"
#: Same, for data that was all zeros.
STRIPPED_ZERO = "fleetmeter:stripped-zero"

#: TensorProto fields that hold data: float, int32, string, int64, raw, double, uint64.
_DATA_FIELDS = frozenset({4, 5, 6, 7, 9, 10, 11})
_GRAPH_FIELD, _INITIALIZER_FIELD, _NAME_FIELD = 7, 5, 8
_DOC_STRING_TAG = b"\x62"  # TensorProto.doc_string: field 12, wire type 2

Spans = Dict[str, List[Tuple[int, int]]]


def varint(buf: Any, pos: int) -> Tuple[int, int]:
    """The varint at ``buf[pos]``: ``(value, position after it)``."""
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError(f"malformed varint before byte {pos}")


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def fields(buf: Any, start: int, end: int) -> List[Tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, value start, value end) of each field in ``buf[start:end]``."""
    out = []
    pos = start
    while pos < end:
        first = pos
        key, pos = varint(buf, pos)
        wire = key & 7
        if wire == 2:
            n, pos = varint(buf, pos)
            value_start, pos = pos, pos + n
        elif wire == 0:
            value_start = pos
            _, pos = varint(buf, pos)
        elif wire == 5:
            value_start, pos = pos, pos + 4
        elif wire == 1:
            value_start, pos = pos, pos + 8
        else:
            raise ValueError(f"unsupported wire type {wire} at byte {first}")
        if pos > end:
            raise ValueError(f"field at byte {first} runs past the end of its message")
        out.append((key >> 3, wire, first, value_start, pos))
    return out


def light_model_bytes(buf: Any, spans: Optional[Spans] = None, *, mark: bool = False) -> bytes:
    """The model in ``buf`` with large initializers' data dropped.

    ``spans`` (when given) is filled with each stripped tensor's name -> the
    byte ranges its data had in ``buf``; ``mark`` tags each stripped tensor
    (see the module docstring) so that the light bytes alone still tell an
    all-zero tensor.
    """
    spans = spans if spans is not None else {}
    out = bytearray()
    for field, wire, first, start, end in fields(buf, 0, len(buf)):
        if field == _GRAPH_FIELD and wire == 2:
            graph = bytearray()
            for g_field, g_wire, g_first, g_start, g_end in fields(buf, start, end):
                if g_field == _INITIALIZER_FIELD and g_wire == 2 and g_end - g_start > KEEP_BYTES:
                    tensor = _strip_tensor(buf, g_start, g_end, spans, mark)
                    graph += b"\x2a" + encode_varint(len(tensor)) + tensor  # field 5, wire type 2
                else:
                    graph += buf[g_first:g_end]
            out += b"\x3a" + encode_varint(len(graph)) + graph  # field 7, wire type 2
        else:
            out += buf[first:end]
    return bytes(out)


def _all_zero(buf: Any, ranges: List[Tuple[int, int]]) -> bool:
    # Weights are rarely zero: a look at the first bytes settles almost every tensor without a copy of it.
    if any(bytes(buf[a:min(b, a + 64)]).strip(b"\x00") for a, b in ranges):
        return False
    return bool(ranges) and all(not bytes(buf[a:b]).strip(b"\x00") for a, b in ranges)


def _strip_tensor(buf: Any, start: int, end: int, spans: Spans, mark: bool) -> bytes:
    kept = bytearray()
    data: List[Tuple[int, int]] = []
    name = ""
    for field, _, first, v_start, v_end in fields(buf, start, end):
        if field in _DATA_FIELDS:
            data.append((v_start, v_end))
            continue
        if field == _NAME_FIELD:
            name = bytes(buf[v_start:v_end]).decode("utf-8", "replace")
        kept += buf[first:v_end]
    spans[name] = data
    if mark:  # a later doc_string wins over an earlier one (protobuf's rule for a singular field)
        tag = (STRIPPED_ZERO if _all_zero(buf, data) else STRIPPED).encode()
        kept += _DOC_STRING_TAG + encode_varint(len(tag)) + tag
    return bytes(kept)
