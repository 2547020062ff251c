"""The measurement worker on real runtimes: sessions in forked processes, guarded, robust to a lost worker."""
from __future__ import annotations

import os
import signal

import pytest

from fleetmeter.agent.worker import MeasurementWorker
from fleetmeter.modeler.builtin import get_builtin_model

pytestmark = pytest.mark.integration

FAST = {"warmup_runs": 2, "min_runs": 5, "min_duration_ms": 30.0, "max_duration_ms": 1000.0}


@pytest.fixture
def worker():
    w = MeasurementWorker(runtimes=["onnxruntime", "litert"], use_power_sensor=False)
    try:
        yield w
    finally:
        w.close()


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_a_session_runs_in_the_worker_with_the_guards(worker, fmt):
    """LiteRT prints to stdout when it makes its delegate: the protocol must survive it."""
    path = get_builtin_model("tiny_convnet", fmt).path
    result = worker.run({"model_path": str(path), "threads": 1, "settings": FAST,
                         "limits": {"max_probe_slowdown": 0.1, "max_speed_wait_s": 0.0}})
    assert result["failure_kind"] is None, result["failure_message"]
    assert len(result["samples_ms"]) >= 5 and result["load_ms"] > 0
    figures = result["interference"]
    assert figures["window_s"] > 0 and len(figures["probe_us"]) == 2, "guard and probe must cover the window"
    assert figures["probe_slowdown"] is not None, "the worker warms its probe baseline at start"


def test_a_corrupt_model_is_a_failed_session_not_an_error(worker, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    result = worker.run({"model_path": str(bad), "runtime": "onnxruntime", "threads": 1, "settings": FAST})
    assert result["failure_kind"] == "load_error"


def test_a_killed_worker_is_restarted(worker):
    path = str(get_builtin_model("tiny_depthwise", "onnx").path)
    worker.run({"model_path": path, "threads": 1, "settings": FAST})
    first = worker._proc.pid
    os.kill(first, signal.SIGKILL)
    worker._proc.wait()
    result = worker.run({"model_path": path, "threads": 1, "settings": FAST})
    assert result["failure_kind"] is None and worker._proc.pid != first
