"""Inspect an uploaded model file: format, hash, inputs/outputs, metadata.

Runs as a Ray task (CPU work off the gRPC loop). A file that is neither a
parsable ONNX model nor a TFLite flatbuffer raises :class:`InvalidArgument`
with the reason, and nothing is stored. The format is the content's (the
TFLite file identifier), else the name's: a damaged ``.tflite`` file is
reported as not a valid TFLite model, not as a failed ONNX parse.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any

from fleetmeter.errors import InvalidArgument
from fleetmeter.modelfile import detect_format, is_tflite, not_tflite_reason, sha256_file


def inspect_model_bytes(args: tuple[bytes, str]) -> dict[str, Any]:
    """``(data, name)`` → the model row (sha256, name, format, size_bytes, info)."""
    data, name = args
    if not data:
        raise InvalidArgument(f"{name}: empty file")
    fmt = detect_format(data, name)
    info = _inspect_tflite(data, name) if fmt == "tflite" else _inspect_onnx(data, name)
    return {"sha256": hashlib.sha256(data).hexdigest(), "name": name, "format": fmt,
            "size_bytes": len(data), "info": info}


def inspect_model_file(args: tuple[str, ...]) -> dict[str, Any]:
    """``(path, name)`` or ``(path, name, sha256)`` → the model row of the file at ``path``, as
    :func:`inspect_model_bytes` makes it for its bytes.

    The format comes from the file's first 8 bytes and the model is parsed from the path, so the caller
    (the controller, streaming an upload to disk) never holds the model in memory; this process does, for
    as long as the parse takes. ``sha256``, when the caller already hashed the bytes it wrote, saves reading
    the file a second time. ONNX external data is never followed (a model file names no other file).
    """
    path, name = args[0], args[1]
    sha256 = args[2] if len(args) > 2 else None
    size = os.path.getsize(path)
    if not size:
        raise InvalidArgument(f"{name}: empty file")
    fmt = detect_format(path, name=name)  # the content decides, else a .tflite name, as for bytes
    if fmt == "tflite":
        with open(path, "rb") as f:
            info = _inspect_tflite(f.read(), name)
    else:
        info = _inspect_onnx_file(path, name)
    return {"sha256": sha256 or sha256_file(path), "name": name, "format": fmt, "size_bytes": size, "info": info}


_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
                10: "float16", 11: "float64", 16: "bfloat16"}


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - controller extra installs it
        raise InvalidArgument("the controller cannot inspect ONNX models: pip install 'fleetmeter[controller]'") from exc
    return onnx


def _inspect_onnx(data: bytes, name: str) -> dict[str, Any]:
    onnx = _import_onnx()
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a model"
        raise InvalidArgument(f"{name}: not a valid ONNX or TFLite model ({type(exc).__name__}: {exc})") from None
    return _onnx_info(onnx, model, name)


def _inspect_onnx_file(path: str, name: str) -> dict[str, Any]:
    onnx = _import_onnx()
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a model"
        raise InvalidArgument(f"{name}: not a valid ONNX or TFLite model ({type(exc).__name__}: {exc})") from None
    return _onnx_info(onnx, model, name)


def _onnx_info(onnx, model, name: str) -> dict[str, Any]:
    if not model.graph.node or not model.opset_import:
        raise InvalidArgument(f"{name}: not a valid ONNX or TFLite model (no graph nodes or opset; "
                              "is the file truncated or of another format?)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001
        raise InvalidArgument(f"{name}: invalid ONNX model: {str(exc).splitlines()[0]}") from None
    initializers = {i.name for i in model.graph.initializer}

    def spec(v) -> dict:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return {"name": v.name, "dtype": _ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), "shape": shape}

    metadata = {p.key: p.value for p in model.metadata_props}
    return {
        "inputs": [spec(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [spec(v) for v in model.graph.output],
        "node_count": len(model.graph.node),
        "op_types": sorted({n.op_type for n in model.graph.node}),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "metadata": metadata,
        "family": metadata.get("fleetmeter.family", ""),
    }


def _inspect_tflite(data: bytes, name: str) -> dict[str, Any]:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover
        raise InvalidArgument("the controller cannot inspect TFLite models: pip install 'fleetmeter[controller]'") from exc
    if not is_tflite(data):
        raise InvalidArgument(f"{name}: {not_tflite_reason(data)}")
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        graph = model.subgraphs[0]
    except Exception as exc:  # noqa: BLE001
        raise InvalidArgument(f"{name}: not a valid TFLite model ({type(exc).__name__}: {exc})") from None
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}

    def spec(index: int) -> dict:
        t = graph.tensors[index]
        sig = list(t.shapeSignature) if t.shapeSignature is not None else None
        shape = sig if sig else (list(t.shape) if t.shape is not None else [])
        tname = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        return {"name": tname, "dtype": type_names.get(t.type, str(t.type)), "shape": [int(d) for d in shape]}

    metadata = {}
    for m in model.metadata or []:
        key = m.name.decode() if isinstance(m.name, bytes) else str(m.name)
        buf = model.buffers[m.buffer].data if m.buffer < len(model.buffers) else None
        if buf is not None:
            try:
                metadata[key] = bytes(buf).decode("utf-8")
            except UnicodeDecodeError:
                metadata[key] = f"<{len(buf)} bytes>"
    builtin_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = set()
    for op in graph.operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        b = max(code.builtinCode, code.deprecatedBuiltinCode)
        ops.add(code.customCode.decode() if code.customCode else builtin_names.get(b, str(b)))
    family = metadata.get("fleetmeter.family", "")
    return {
        "inputs": [spec(i) for i in graph.inputs],
        "outputs": [spec(i) for i in graph.outputs],
        "node_count": len(graph.operators or []),
        "op_types": sorted(ops),
        "metadata": {k: v for k, v in metadata.items() if not v.startswith("<")},
        "family": family,
    }

