"""Helpers shared by tests/unit and tests/integration (``tests/`` is on ``sys.path`` via pytest's
``pythonpath`` setting in pyproject.toml, so both import this as ``_support``)."""
from __future__ import annotations

import contextlib
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from fleetmeter.local_fleet import LocalFleet

__all__ = ["FakeClock", "e2e_fleet"]


class FakeClock:
    """A clock (seconds; unix or monotonic, whatever the code under test expects) that moves only when a
    test says so: :meth:`advance` / :meth:`advance_ms`, and, when ``step_s`` is set, by ``step_s`` on every
    read (the first read returns ``start_s + step_s``), so code that reads the clock repeatedly sees time
    pass without a sleep. Safe to read from a background thread (a sampling sensor)."""

    def __init__(self, start_s: float = 100.0, step_s: float = 0.0) -> None:
        self.now_s = start_s
        self.step_s = step_s
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.now_s += self.step_s
            return self.now_s

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; returns the new time."""
        with self._lock:
            self.now_s += seconds
            return self.now_s

    def advance_ms(self, ms: float) -> float:
        return self.advance(ms / 1000.0)


@contextlib.contextmanager
def e2e_fleet(root: Path) -> Iterator[LocalFleet]:
    """A real controller (local Ray, SQLite) under ``root`` with two real agents, one thread each:
    onnxruntime (``"ort"``) and LiteRT (``"lite"``), both labelled ``role=e2e``; stopped on exit."""
    from fleetmeter.local_fleet import LocalFleet  # here: the unit tests that import this module start no fleet

    fleet = LocalFleet(root, agent_token=secrets.token_hex(8), api_token=secrets.token_hex(8),
                       lease_timeout_s=6.0, heartbeat_s=1.0)
    try:
        fleet.start_controller()
        fleet.start_agent("ort", "--runtime", "onnxruntime", "--threads", "1", "--label", "role=e2e")
        fleet.start_agent("lite", "--runtime", "litert", "--threads", "1", "--label", "role=e2e")
        fleet.wait_agents_connected(["ort", "lite"])
        yield fleet
    finally:
        fleet.close()


def assert_sweep_file_problems(path: Path, content: str, expected: tuple[str, ...]) -> str:
    """Write ``content`` to the sweep file ``path``; loading it must fail with InvalidArgument naming every
    ``expected`` problem (each as ``f"{path}:LINE: FIELD: ..."``). Returns the error's text."""
    import pytest

    from fleetmeter.errors import InvalidArgument
    from fleetmeter.sweepspec import load_sweep_file

    path.write_text(content)
    with pytest.raises(InvalidArgument) as err:
        load_sweep_file(path)
    text = str(err.value)
    for problem in expected:
        assert problem in text, f"missing {problem!r} in:\n{text}"
    return text


__all__ += ["assert_sweep_file_problems"]


# -- the model zoo: its files read back, and run in onnxruntime / LiteRT (imported when called) --------------


def small_zoo_sample(family: str, seed: int = 1):
    """A quick, small ``Architecture`` of ``family``: its ``SMALL_FIXED`` hyper-parameters, the rest drawn from
    ``seed``; named ``FAMILY-small``."""
    from fleetmeter.modeler.zoo.families import SMALL_FIXED, get_family

    return get_family(family).sample(seed, name=f"{family}-small", **SMALL_FIXED[family])


def run_zoo_cli(argv: list[str]) -> int:
    """Run ``fleetmeter zoo ...`` (``argv`` starts with ``"zoo"``) in this process; its exit status."""
    import argparse

    from fleetmeter import zoo_cli

    parser = argparse.ArgumentParser(prog="fleetmeter")
    zoo_cli.add_zoo_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def tflite_model(data: bytes):
    """The object-API ``ModelT`` of a TFLite file's bytes."""
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(data, 0)


def tflite_op_name(builtin_code: int) -> str:
    """``"CONV_2D"`` for ``BuiltinOperator.CONV_2D``."""
    from ai_edge_litert import schema_py_generated as schema

    return next(k for k, v in vars(schema.BuiltinOperator).items() if v == builtin_code and not k.startswith("_"))


def tflite_ops(model) -> list[str]:
    """The builtin op names of the first subgraph, in order; ``model`` is file bytes or a ``ModelT``."""
    if isinstance(model, (bytes, bytearray)):
        model = tflite_model(model)
    return [tflite_op_name(model.operatorCodes[op.opcodeIndex].builtinCode) for op in model.subgraphs[0].operators]


def tflite_metadata(data: bytes) -> dict[str, str]:
    """A TFLite file's ``Model.metadata`` entries, decoded."""
    model = tflite_model(data)
    return {m.name.decode(): bytes(model.buffers[m.buffer].data).decode() for m in model.metadata}


def ort_session(model: bytes | str | Path):
    """A one-thread onnxruntime CPU session of model bytes or a model file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


def litert_interpreter(model: bytes | str | Path):
    """A one-thread LiteRT interpreter (its default XNNPACK delegate) of model bytes or a model file, allocated."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, bytes):
        interpreter = Interpreter(model_content=model, num_threads=1)
    else:
        interpreter = Interpreter(model_path=str(model), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def normal_input(shape, seed: int = 0):
    """Seeded float32 standard-normal values of ``shape`` (batch axis included)."""
    import numpy as np

    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)


def zoo_input(arch, seed: int = 0):
    """A seeded standard-normal input for ``arch``'s (first) input, in the logical layout with a batch axis."""
    return normal_input((1, *arch.input_layers[0].shape), seed)


def run_onnx(session, x):
    """The first output of an ONNX ``session`` for ``x``; both in the zoo's logical layout (NHWC for feature
    maps; sequences and vectors as stored), transposed from and to the file's NCHW."""
    y = session.run(None, {session.get_inputs()[0].name: x.transpose(0, 3, 1, 2) if x.ndim == 4 else x})[0]
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y


def run_tflite(interpreter, x):
    """The first output of a LiteRT ``interpreter`` for its first input ``x``."""
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def zoo_outputs(arch, x, seed: int = 0):
    """``(onnx output, tflite output)`` of ``arch``'s two float files (weights from ``seed``) for ``x``,
    both in the logical layout (see :func:`run_onnx`)."""
    from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes
    from fleetmeter.modeler.zoo.tflite_emit import build_tflite

    y_onnx = run_onnx(ort_session(onnx_bytes(build_onnx(arch, seed=seed))), x)
    return y_onnx, run_tflite(litert_interpreter(build_tflite(arch, seed=seed)), x)


def int8_relative_error(arch, seed: int, samples: int = 4):
    """``(error, float outputs, int8 outputs)`` of ``arch``'s float and int8 TFLite files (weights from ``seed``)
    on ``samples`` seeded standard-normal inputs (not the calibration ones); ``error`` is the relative L2 error
    ``||y_int8 - y_float|| / ||y_float||`` over all of them."""
    import numpy as np

    from fleetmeter.modeler.zoo.tflite_emit import build_tflite
    from fleetmeter.modeler.zoo.tflite_quant import build_tflite_int8

    rng = np.random.default_rng(12345)
    xs = [rng.standard_normal((1, *arch.input_layers[0].shape)).astype(np.float32) for _ in range(samples)]

    def outputs(data: bytes):
        interpreter = litert_interpreter(data)
        return np.stack([run_tflite(interpreter, x).copy() for x in xs])

    y_float, y_int8 = outputs(build_tflite(arch, seed=seed)), outputs(build_tflite_int8(arch, seed=seed))
    return float(np.linalg.norm(y_int8 - y_float) / np.linalg.norm(y_float)), y_float, y_int8


__all__ += ["small_zoo_sample", "run_zoo_cli", "tflite_model", "tflite_op_name", "tflite_ops", "tflite_metadata",
            "ort_session", "litert_interpreter", "normal_input", "zoo_input", "run_onnx", "run_tflite", "zoo_outputs",
            "int8_relative_error"]


def json_cell(value):
    """A DataFrame cell as ``--json`` has it: NaN -> None, numpy arrays and scalars -> lists and Python numbers,
    dicts (a parquet struct) converted deep; for comparing frames and parquet files with the JSON rows."""
    import math

    if isinstance(value, dict):
        return {k: json_cell(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return json_cell(value.tolist())
    if isinstance(value, list):
        return [json_cell(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


__all__ += ["json_cell"]


def open_guard_reading():
    """Reading settings with the interference guard's limits wide open, for tests of something else (training,
    the report): on a busy test host every window would be flagged "disturbed" (re-run, and kept out of
    training). The guard itself is tested with its real limits (test_interference_e2e, test_readings_e2e)."""
    from fleetmeter.v1 import common_pb2

    return common_pb2.ReadingSettings(sessions=2, max_other_cpu_cores=1e6, max_steal_share=1.0,
                                      max_probe_slowdown=1e6, max_speed_wait_s=0.0, max_session_spread=1e6)


__all__ += ["open_guard_reading"]


def ctrl_c_reaches_it() -> None:
    """``preexec_fn`` for a child that a test sends SIGINT: the default disposition, so Python turns it into
    KeyboardInterrupt even when the test run itself was started with SIGINT ignored (a shell's background job
    without job control, ``nohup``: the child would inherit the ignore and never see the Ctrl-C)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
