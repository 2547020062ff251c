"""Odd model files for tests: very large, unloadable, or not a model at all.

All outputs are deterministic (fixed seeds), so two calls write the same
bytes and content-addressed stores see the same sha256.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np

from ._files import atomic_write
from .onnx_emit import IR_VERSION, OPSET

__all__ = [
    "LARGE_MODEL_INPUT_FEATURES",
    "UNSUPPORTED_OP_TYPE",
    "UNSUPPORTED_OP_DOMAIN",
    "write_large_onnx",
    "write_unsupported_op_onnx",
    "write_unsupported_op_tflite",
    "write_corrupt_model",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Input width of the large model: input ``x`` is ``[1, 256]`` float32.
LARGE_MODEL_INPUT_FEATURES = 256
UNSUPPORTED_OP_TYPE = "NoSuchOp"
UNSUPPORTED_OP_DOMAIN = "com.example"
_ONNX_OVERHEAD_BYTES = 200  # graph, names and metadata around the weight
_MAX_PROTO_BYTES = 2_000_000_000  # protobuf's hard 2 GiB limit, with margin


def write_large_onnx(path: PathLike, size_bytes: int, *, seed: int = 0) -> int:
    """Write a runnable ONNX model of about ``size_bytes`` bytes; return its exact size.

    The graph is ``y = MatMul(x, W)`` with ``x: [1, 256]`` and a random
    float32 ``W: [256, n]`` sized to fill the file (so the file does not
    compress away); ``y`` is ``[1, n]``. The size is met within 1 KiB once
    ``size_bytes`` exceeds a few KiB.
    """
    from onnx import TensorProto, helper, numpy_helper

    if size_bytes > _MAX_PROTO_BYTES:
        raise ValueError(f"ONNX protobufs cannot exceed 2 GiB; asked for {size_bytes} bytes")
    k = LARGE_MODEL_INPUT_FEATURES
    n = max(1, round((size_bytes - _ONNX_OVERHEAD_BYTES) / (4 * k)))
    rng = np.random.Generator(np.random.PCG64(seed))
    weight = (rng.random((k, n), dtype=np.float32) - np.float32(0.5)) * np.float32(0.1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul")],
        "large",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        initializer=[numpy_helper.from_array(weight, name="W")],
    )
    model = helper.make_model(
        graph, producer_name="fleetmeter.zoo.odd_files", opset_imports=[helper.make_opsetid("", OPSET)]
    )
    model.ir_version = IR_VERSION
    model.metadata_props.add(key="fleetmeter.family", value="special.large")
    data = model.SerializeToString(deterministic=True)
    atomic_write(path, data)
    return len(data)


def write_unsupported_op_onnx(path: PathLike) -> int:
    """Write a well-formed ONNX model (``onnx.checker`` passes) whose only node
    is ``com.example:NoSuchOp``; onnxruntime refuses to load it, naming the op."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node(UNSUPPORTED_OP_TYPE, ["x"], ["y"], name="custom", domain=UNSUPPORTED_OP_DOMAIN)],
        "unsupported_op",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph,
        producer_name="fleetmeter.zoo.odd_files",
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(UNSUPPORTED_OP_DOMAIN, 1)],
    )
    model.ir_version = IR_VERSION
    model.metadata_props.add(key="fleetmeter.family", value="special.unsupported_op")
    onnx.checker.check_model(model)
    data = model.SerializeToString(deterministic=True)
    atomic_write(path, data)
    return len(data)


def write_unsupported_op_tflite(path: PathLike) -> int:
    """Write a well-formed TFLite model whose only op is the custom op
    ``NoSuchOp``; LiteRT fails to prepare it ("unresolved custom op")."""
    from .tflite_emit import TfliteGraph

    g = TfliteGraph()
    x = g.tensor("x", [1, 4])
    y = g.tensor("y", [1, 4])
    g.op(g.schema.BuiltinOperator.CUSTOM, [x], [y], custom=UNSUPPORTED_OP_TYPE, custom_options=b"")
    data = g.to_bytes([x], [y], description="fleetmeter.zoo.odd_files: unsupported custom op",
                      metadata=(("fleetmeter.family", "special.unsupported_op"),))
    atomic_write(path, data)
    return len(data)


def write_corrupt_model(path: PathLike, size_bytes: int = 4096, *, seed: int = 0) -> int:
    """Write ``size_bytes`` of deterministic garbage (name it ``.onnx`` or
    ``.tflite``): neither runtime can parse it. Returns the size."""
    header = b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"  # an ONNX-looking field 1 with an overlong varint
    body = np.random.Generator(np.random.PCG64(seed)).bytes(max(0, size_bytes - len(header)))
    data = (header + body)[:size_bytes]
    atomic_write(path, data)
    return len(data)
