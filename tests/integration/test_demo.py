"""The README's main job: `fleetmeter demo` runs end to end and stops everything it started."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fleetmeter.modeler.builtin import list_builtin_models

pytestmark = pytest.mark.integration


def test_demo_json_measures_every_builtin_model_on_three_platforms(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fleetmeter.cli", "demo", "--json", "--min-duration-ms", "50",
                           "--data-dir", str(tmp_path / "demo")], capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if not k.startswith("FLEETMETER_")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    platforms = {r["platform"] for r in rows}
    assert len(platforms) == 3
    assert {(r["runtime"], r["threads"]) for r in rows} == {("onnxruntime", 1), ("onnxruntime", 2), ("litert", 1)}
    onnx = [m for m in list_builtin_models() if m.format == "onnx"]
    tflite = [m for m in list_builtin_models() if m.format == "tflite"]
    assert len(rows) == 2 * len(onnx) + len(tflite), "each ONNX model on both ORT platforms, each TFLite on LiteRT"
    for r in rows:
        lat = r["latency_ms"]
        assert r["failure_kind"] is None and lat["n"] >= 20 and lat["min"] <= lat["median"] <= lat["max"]
    # Everything the demo started is gone: no process still holds its data dir open.
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "demo")], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", f"demo left processes behind: {leftovers.stdout}"
