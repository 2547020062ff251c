"""``fleetmeter-agent bench`` as a real subprocess on real onnxruntime / LiteRT,
on tiny models built here."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pytest

pytestmark = pytest.mark.integration

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

QUICK = ["--warmup", "1", "--min-runs", "5", "--min-duration-ms", "20", "--max-duration-ms", "2000",
         "--max-runs", "2000", "--no-power", "--no-thermal"]

CONTRACT_KEYS = {
    "model_sha256", "runtime", "runtime_version", "threads", "latency_ms", "samples_ms", "load_ms",
    "first_run_ms", "peak_rss_bytes", "energy_mj_per_inference", "avg_power_w", "power_sensor",
    "temps_c_before", "temps_c_after", "failure_kind", "failure_message",
}


def agent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fleetmeter.agent.cli", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def bench_json(model: Path, *extra: str) -> "tuple[subprocess.CompletedProcess, Optional[dict]]":
    proc = agent("bench", str(model), "--json", *QUICK, *extra)
    data = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc, data


# --------------------------------------------------------------------------
# Models


def _save_onnx(graph, path: Path, extra_opsets: Sequence = ()) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), *extra_opsets])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("models")
    out = {}
    # x[N,4] -> Relu(x + bias): dynamic batch
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    bias = numpy_helper.from_array(np.full((4,), 0.5, np.float32), "bias")
    g = helper.make_graph([helper.make_node("Add", ["x", "bias"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
                          "dyn", [x], [y], initializer=[bias])
    out["dynamic"] = _save_onnx(g, d / "dynamic.onnx")
    # y = data[idx]: data has 3 rows, so an index >= 3 is out of bounds
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"])
    y2 = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    data = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "data")
    g = helper.make_graph([helper.make_node("Gather", ["data", "idx"], ["y"], axis=0)], "gather",
                          [idx], [y2], initializer=[data])
    out["gather"] = _save_onnx(g, d / "gather.onnx")
    # an operator nobody implements
    g = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example")], "unknown", [x], [y])
    out["unknown_op"] = _save_onnx(g, d / "unknown_op.onnx", [helper.make_opsetid("com.example", 1)])
    corrupt = d / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf model" * 20)
    out["corrupt"] = corrupt
    return out


# Minimal TFLite flatbuffers written field by field (schema.fbs field order),
# so the LiteRT tests do not depend on the model zoo.
def tflite_model(custom_op: Optional[str] = None) -> bytes:
    """y = x + x (ADD) or y = custom_op(x); x float32 [1,4] with signature [-1,4]."""
    flatbuffers = pytest.importorskip("flatbuffers")
    b = flatbuffers.Builder(1024)

    def ints(values: List[int]) -> int:
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependInt32(v)
        return b.EndVector()

    def tables(offsets: List[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    b.StartObject(3)  # Buffer 0: the empty sentinel buffer
    buffers = tables([b.EndObject()])
    tensors = []
    for name in ("x", "y"):
        name_off, shape, signature = b.CreateString(name), ints([1, 4]), ints([-1, 4])
        b.StartObject(10)  # Tensor
        b.PrependUOffsetTRelativeSlot(0, shape, 0)
        b.PrependInt8Slot(1, 0, 0)  # FLOAT32
        b.PrependUint32Slot(2, 0, 0)
        b.PrependUOffsetTRelativeSlot(3, name_off, 0)
        b.PrependUOffsetTRelativeSlot(7, signature, 0)
        tensors.append(b.EndObject())
    tensor_vec = tables(tensors)
    op_inputs, op_outputs = ints([0] if custom_op else [0, 0]), ints([1])
    b.StartObject(9)  # Operator
    b.PrependUint32Slot(0, 0, 0)
    b.PrependUOffsetTRelativeSlot(1, op_inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, op_outputs, 0)
    operators = tables([b.EndObject()])
    sg_inputs, sg_outputs, sg_name = ints([0]), ints([1]), b.CreateString("main")
    b.StartObject(5)  # SubGraph
    b.PrependUOffsetTRelativeSlot(0, tensor_vec, 0)
    b.PrependUOffsetTRelativeSlot(1, sg_inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, sg_outputs, 0)
    b.PrependUOffsetTRelativeSlot(3, operators, 0)
    b.PrependUOffsetTRelativeSlot(4, sg_name, 0)
    subgraphs = tables([b.EndObject()])
    custom_code = b.CreateString(custom_op) if custom_op else None
    builtin = 32 if custom_op else 0  # CUSTOM or ADD
    b.StartObject(4)  # OperatorCode
    b.PrependInt8Slot(0, builtin, 0)
    if custom_code is not None:
        b.PrependUOffsetTRelativeSlot(1, custom_code, 0)
    b.PrependInt32Slot(2, 1, 1)
    b.PrependInt32Slot(3, builtin, 0)
    op_codes = tables([b.EndObject()])
    description = b.CreateString("fleetmeter test model")
    b.StartObject(8)  # Model
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(1, op_codes, 0)
    b.PrependUOffsetTRelativeSlot(2, subgraphs, 0)
    b.PrependUOffsetTRelativeSlot(3, description, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers, 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory) -> dict:
    pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT (fleetmeter[tflite]) is not installed")
    d = tmp_path_factory.mktemp("tflite")
    add = d / "add.tflite"
    add.write_bytes(tflite_model())
    custom = d / "custom.tflite"
    custom.write_bytes(tflite_model(custom_op="NoSuchTfliteOp"))
    return {"add": add, "custom": custom}


# --------------------------------------------------------------------------
# Helpers


def assert_valid_reading(data: dict, model: Path) -> None:
    assert CONTRACT_KEYS <= set(data), f"missing keys: {CONTRACT_KEYS - set(data)}"
    assert data["failure_kind"] is None and data["failure_message"] is None
    lat = data["latency_ms"]
    assert {"median", "mean", "p90", "p99", "std", "min", "max", "n"} <= set(lat)
    assert lat["n"] == len(data["samples_ms"]) >= 5
    assert lat["min"] <= lat["median"] <= lat["max"]
    assert lat["min"] == min(data["samples_ms"]) and lat["max"] == max(data["samples_ms"])
    assert data["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert data["load_ms"] > 0 and data["first_run_ms"] > 0
    assert data["peak_rss_bytes"] > 1 << 20
    assert data["threads"] == 1
    # --no-power: energy is absent, not estimated
    assert data["energy_mj_per_inference"] is None and data["avg_power_w"] is None
    assert data["power_sensor"] is None


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fleetmeter-agent:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0]
    return errors[0]


# --------------------------------------------------------------------------
# ONNX


def test_onnx_bench_json_contract(models):
    import onnxruntime

    proc, data = bench_json(models["dynamic"])
    assert proc.returncode == 0, proc.stderr
    assert_valid_reading(data, models["dynamic"])
    assert data["runtime"] == "onnxruntime"
    assert data["runtime_version"] == onnxruntime.__version__
    assert data["provider"] == "CPUExecutionProvider"
    assert data["runtime_config"]["intra_op_num_threads"] == 1
    assert data["runtime_config"]["inter_op_num_threads"] == 1
    assert data["input_shapes"] == {"x": [1, 4]}, "a dynamic batch dim defaults to 1"


def test_shape_sets_a_dynamic_batch_dim(models):
    proc, data = bench_json(models["dynamic"], "--shape", "x=8x4", "--threads", "2")
    assert proc.returncode == 0, proc.stderr
    assert data["input_shapes"] == {"x": [8, 4]}
    assert data["threads"] == 2 and data["runtime_config"]["intra_op_num_threads"] == 2


def test_shape_that_contradicts_the_model_is_invalid_input(models):
    proc, data = bench_json(models["dynamic"], "--shape", "x=2x5")
    assert proc.returncode == 3
    assert data["failure_kind"] == "invalid_input"
    assert_one_line_error(proc, "dynamic.onnx")


def test_shape_for_an_unknown_input_names_the_real_ones(models):
    proc, data = bench_json(models["dynamic"], "--shape", "images=8x4")
    assert proc.returncode == 3
    assert data["failure_kind"] == "invalid_input"
    assert_one_line_error(proc, "images", "x")


def test_fill_controls_input_data(models):
    # Random indices lie in [0, 10) and overflow the 3-row table; a fill of 2 is in bounds,
    # a fill of 50 is not: the run's outcome proves the fill reached the model.
    proc, data = bench_json(models["gather"], "--fill", "idx=2", "--shape", "idx=16")
    assert proc.returncode == 0, proc.stderr
    assert data["input_shapes"] == {"idx": [16]}
    proc, data = bench_json(models["gather"], "--fill", "idx=50")
    assert proc.returncode != 0
    assert data["failure_kind"] in ("invalid_input", "runtime_error")
    assert "50" in data["failure_message"]


def test_unknown_op_is_an_unsupported_op_reading(models):
    proc, data = bench_json(models["unknown_op"])
    assert proc.returncode == 3
    assert data["failure_kind"] == "unsupported_op"
    assert "NoSuchOp" in data["failure_message"] and "com.example" in data["failure_message"]
    assert data["latency_ms"] is None and data["samples_ms"] == []
    assert data["model_sha256"] == hashlib.sha256(models["unknown_op"].read_bytes()).hexdigest()
    assert_one_line_error(proc, "unknown_op.onnx", "NoSuchOp")


def test_corrupt_model_fails_with_one_line(models):
    proc = agent("bench", str(models["corrupt"]), *QUICK)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert_one_line_error(proc, "corrupt.onnx")


def test_missing_model_file(tmp_path):
    proc = agent("bench", str(tmp_path / "nowhere.onnx"), *QUICK)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert_one_line_error(proc, "nowhere.onnx")


def test_human_output_by_default(models):
    proc = agent("bench", str(models["dynamic"]), *QUICK)
    assert proc.returncode == 0, proc.stderr
    assert "median" in proc.stdout and "ms" in proc.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(proc.stdout)


def test_help_for_every_command():
    for args in (["--help"], ["bench", "--help"], ["probe", "--help"], ["run", "--help"]):
        proc = agent(*args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "usage:" in proc.stdout
    assert "--min-duration-ms" in agent("bench", "--help").stdout


def test_bad_shape_syntax_is_a_usage_error(models):
    proc = agent("bench", str(models["dynamic"]), "--shape", "x=eight", *QUICK)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------
# LiteRT


def test_litert_bench_resizes_dynamic_input(tflite_models):
    proc, data = bench_json(tflite_models["add"], "--shape", "x=3x4")
    assert proc.returncode == 0, proc.stderr
    assert_valid_reading(data, tflite_models["add"])
    assert data["runtime"] == "litert"
    assert data["provider"] == "xnnpack"
    assert data["input_shapes"] == {"x": [3, 4]}


def test_litert_without_default_delegate(tflite_models):
    proc, data = bench_json(tflite_models["add"], "--provider", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert data["provider"] == "cpu" and data["input_shapes"] == {"x": [1, 4]}


def test_litert_unresolved_custom_op(tflite_models):
    proc, data = bench_json(tflite_models["custom"])
    assert proc.returncode == 3
    assert data["failure_kind"] == "unsupported_op"
    assert "NoSuchTfliteOp" in data["failure_message"]
    assert_one_line_error(proc, "NoSuchTfliteOp")


def test_litert_on_a_zoo_model(tmp_path):
    try:
        from fleetmeter.modeler.zoo.tflite_emit import write_tflite
        from fleetmeter.modeler.zoo.tiny import mlp
    except ImportError as exc:
        pytest.skip(f"model zoo TFLite emitter not importable: {exc}")
    path = tmp_path / "mlp.tflite"
    write_tflite(mlp(in_features=16, hidden=(16,), num_classes=4), path)
    proc, data = bench_json(path)
    assert proc.returncode == 0, proc.stderr
    assert_valid_reading(data, path)
    assert data["runtime"] == "litert"


# --------------------------------------------------------------------------
# The agent stays light


def test_agent_modules_import_no_heavy_packages():
    code = (
        "import sys\n"
        "import fleetmeter.agent.bench, fleetmeter.agent.runtimes, fleetmeter.agent.stats, fleetmeter.agent.cli\n"
        "fleetmeter.agent.cli.build_parser()\n"
        "heavy = {'onnxruntime', 'ai_edge_litert', 'tflite_runtime', 'onnx', 'ray', 'lightgbm', 'pandas',\n"
        "         'psutil'}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy\n"
        "                or m.startswith(('fleetmeter.controller', 'fleetmeter.modeler')))\n"
        "print(','.join(loaded))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"agent imported heavy modules at import time: {proc.stdout}"
