"""A TFLite input resized with ``--shape`` is resized before the interpreter's first allocation (issue 12),
on a model with dynamic dimensions written by the project's own TFLite emitter, under XNNPACK."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

litert = pytest.importorskip("ai_edge_litert.interpreter")

from fleetmeter.agent.runtimes import LiteRtRuntime, make_inputs  # noqa: E402
from fleetmeter.modeler.zoo.arch import init_weights  # noqa: E402
from fleetmeter.modeler.zoo.tflite_emit import float_graph  # noqa: E402
from fleetmeter.modeler.zoo.tiny import mobilenet_v1  # noqa: E402

pytestmark = pytest.mark.integration

QUICK = ["--warmup", "1", "--min-runs", "5", "--min-duration-ms", "20", "--max-duration-ms", "2000",
         "--max-runs", "200", "--no-power", "--no-thermal"]


@pytest.fixture(scope="module")
def dynamic_model(tmp_path_factory) -> Path:
    """A small MobileNet whose input is ``[-1, -1, -1, 3]`` (batch, height and width dynamic)."""
    arch = mobilenet_v1("dynamic_mobilenet", input_size=32)
    graph, inputs, outputs = float_graph(arch, init_weights(arch, 0))
    for index in inputs:
        tensor = graph.tensors[index]
        tensor.shapeSignature = [-1, -1, -1, int(tensor.shape[-1])]
    path = tmp_path_factory.mktemp("dynamic") / "dynamic.tflite"
    path.write_bytes(graph.to_bytes(inputs, outputs, description="dynamic batch and size"))
    return path


def test_bench_with_shape_runs_under_xnnpack(dynamic_model):
    proc = subprocess.run([sys.executable, "-m", "fleetmeter.agent.cli", "bench", str(dynamic_model), "--json",
                           "--shape", "input=2x48x40x3", "--provider", "xnnpack", *QUICK],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    reading = json.loads(proc.stdout)
    assert reading["failure_kind"] in (None, ""), reading["failure_message"]
    assert reading["input_shapes"] == {"input": [2, 48, 40, 3]}
    assert reading["provider"] == "xnnpack" and len(reading["samples_ms"]) >= 5


class _Recording:
    """``ai_edge_litert.interpreter`` whose interpreters log their resize / allocate / invoke calls."""

    def __init__(self) -> None:
        self.made: list = []
        log = self.made

        class Interpreter(litert.Interpreter):
            def __init__(self, **kwargs) -> None:
                super().__init__(**kwargs)
                self.calls: list = []
                log.append(self)

            def resize_tensor_input(self, *args, **kwargs):
                self.calls.append("resize")
                return super().resize_tensor_input(*args, **kwargs)

            def allocate_tensors(self):
                self.calls.append("allocate")
                return super().allocate_tensors()

            def invoke(self):
                self.calls.append("invoke")
                return super().invoke()

        self.module = SimpleNamespace(Interpreter=Interpreter, OpResolverType=litert.OpResolverType,
                                      load_delegate=litert.load_delegate)


def test_the_interpreter_that_runs_was_resized_before_it_allocated(dynamic_model):
    recording = _Recording()
    runtime = LiteRtRuntime()
    runtime._module = recording.module
    session = runtime.load(str(dynamic_model), threads=1, provider="xnnpack")
    assert session.inputs[0].shape == (None, None, None, 3)
    feeds = make_inputs(session.inputs, {"input": (3, 24, 40, 3)})
    run = session.bind(feeds)
    run()
    session.run(feeds)  # same shapes: no new interpreter
    ran = [i for i in recording.made if "invoke" in i.calls]
    assert len(ran) == 1, [i.calls for i in recording.made]
    calls = ran[0].calls
    assert calls.index("resize") < calls.index("allocate") and calls.count("allocate") == 1, calls
    assert calls.count("invoke") == 2
    out = ran[0].get_output_details()[0]
    assert list(ran[0].get_tensor(out["index"]).shape)[0] == 3  # the batch of 3 went through
    assert np.isfinite(ran[0].get_tensor(out["index"])).all()
    session.close()
