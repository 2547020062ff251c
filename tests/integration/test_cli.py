"""The operator CLI as a user runs it: real `fleetmeter` subprocesses against the session's real controller.

Checks parse `--json` / CSV output (never regexes over human tables).
"""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from fleetmeter.modeler.builtin import get_builtin_model
from fleetmeter.modeler.zoo.odd_files import write_corrupt_model

pytestmark = pytest.mark.integration


def fm(fleet, *args, token="api", timeout=180):
    env = dict(os.environ, FLEETMETER_CONTROLLER=fleet.address)
    env.pop("FLEETMETER_API_TOKEN", None)
    if token == "api":
        env["FLEETMETER_API_TOKEN"] = fleet.api_token
    elif token:
        env["FLEETMETER_API_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "fleetmeter.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_devices_and_platforms_json(fleet):
    devices = json.loads(fm(fleet, "devices", "--json").stdout)
    assert {d["name"] for d in devices} >= {"ort", "lite"}
    platforms = json.loads(fm(fleet, "platforms", "--json").stdout)
    assert {p["runtime"] for p in platforms} >= {"onnxruntime", "litert"}
    human = fm(fleet, "devices")
    assert human.returncode == 0 and "ort" in human.stdout


def test_sweep_file_submit_wait_and_results(fleet, tmp_path):
    model = get_builtin_model("tiny_resnet", "onnx").path
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(
        f"name: cli-test\nmodels: [{model}]\nplatforms: {{runtimes: [onnxruntime], labels: {{role: e2e}}}}\n"
        "repeats: 2\nrepeat_sample: -1\nsettings: {warmup_runs: 1, min_runs: 5, min_duration_ms: 30}\n")
    proc = fm(fleet, "sweep", "submit", str(sweep_file), "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    sweep = json.loads(proc.stdout)
    assert sweep["progress"]["state"] == "done" and sweep["progress"]["done"] == 2
    assert sweep["spec"]["repeats"] == 2 and sweep["name"] == "cli-test"

    status = json.loads(fm(fleet, "sweep", "status", sweep["sweep_id"], "--json").stdout)
    assert status["progress"]["done"] == 2
    rows = json.loads(fm(fleet, "results", "--sweep", sweep["sweep_id"], "--json").stdout)
    assert len(rows) == 2 and all(r["model"] == model.name and r["median_ms"] > 0 for r in rows)
    table = list(csv.DictReader(io.StringIO(fm(fleet, "results", "--sweep", sweep["sweep_id"],
                                               "--format", "csv").stdout)))
    assert sorted(r["measurement_id"] for r in table) == sorted(r["measurement_id"] for r in rows)
    with_samples = json.loads(fm(fleet, "results", "--sweep", sweep["sweep_id"], "--json", "--samples").stdout)
    assert all(len(r["samples_ms"]) == r["n"] for r in with_samples)


def test_models_add_json_is_idempotent(fleet):
    path = get_builtin_model("tiny_dilated", "tflite").path
    first = json.loads(fm(fleet, "models", "add", str(path), "--json").stdout)[0]
    again = json.loads(fm(fleet, "models", "add", str(path), "--json").stdout)[0]
    assert first["sha256"] == again["sha256"] and again["already_present"] is True
    assert first["format"] == "tflite"


@pytest.mark.parametrize("args, expected", [
    (("sweep", "status", "sw-doesnotexist"), "unknown sweep"),
    (("sweep", "submit", "--model", "no-such-model"), "unknown model"),
    (("sweep", "submit", "--model", "tiny_resnet.onnx", "--platform", "no/such/platform"), "unknown platform"),
])
def test_bad_requests_fail_with_a_clear_message(fleet, args, expected):
    proc = fm(fleet, *args)
    assert proc.returncode != 0
    assert expected in proc.stderr and "Traceback" not in proc.stderr


def test_malformed_sweep_file_names_the_problem(fleet, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [x]\nplatfroms: {}\n")
    proc = fm(fleet, "sweep", "submit", str(bad))
    assert proc.returncode != 0 and "platfroms" in proc.stderr and "Traceback" not in proc.stderr


def test_corrupt_model_and_wrong_token_exit_nonzero(fleet, tmp_path):
    corrupt = tmp_path / "broken.onnx"
    write_corrupt_model(corrupt)
    proc = fm(fleet, "models", "add", str(corrupt))
    assert proc.returncode == 1 and "broken.onnx" in proc.stderr and "Traceback" not in proc.stderr
    proc = fm(fleet, "devices", token="wrong")
    assert proc.returncode == 1 and "Unauthenticated" in proc.stderr


def test_sweep_watch_shows_per_platform_progress(fleet, tmp_path):
    model = get_builtin_model("tiny_mlp", "onnx").path
    proc = fm(fleet, "sweep", "submit", "--model", str(model), "--runtime", "onnxruntime", "--label", "role=e2e",
              "--repeats", "2", "--min-duration-ms", "30", "--watch")
    assert proc.returncode == 0, proc.stderr
    assert "PLATFORM" in proc.stderr and "ETA" in proc.stderr and "all platforms" in proc.stderr
    sweep_id = proc.stdout.split()[1].rstrip(":")
    status = fm(fleet, "sweep", "status", sweep_id)
    assert status.returncode == 0 and "done" in status.stdout
    again = fm(fleet, "sweep", "cancel", sweep_id, "--json")
    assert json.loads(again.stdout)["progress"]["state"] == "done", "cancelling a finished sweep changes nothing"


def test_import_csv_all_or_nothing_and_idempotent(fleet, tmp_path):
    """Measurements made elsewhere: a good file lands (new platform created), a re-import adds nothing,
    and a file with bad rows names each bad line and imports nothing."""
    import shutil

    for name in ("tiny_mlp", "tiny_squeeze"):
        shutil.copy(get_builtin_model(name, "onnx").path, tmp_path / f"{name}.onnx")
    good = tmp_path / "aihub.csv"
    good.write_text("model,platform,latency_ms,energy_mj,family\n"
                    "tiny_mlp.onnx,pixel8-npu-imported,0.25,0.9,mlp\n"
                    "tiny_squeeze.onnx,pixel8-npu-imported,1.5,,squeezenet\n")
    first = json.loads(fm(fleet, "import", str(good), "--json").stdout)
    assert (first["imported"], first["created_platforms"]) == (2, ["pixel8-npu-imported"])
    again = json.loads(fm(fleet, "import", str(good), "--json").stdout)
    assert (again["imported"], again["already_present"]) == (0, 2)
    rows = json.loads(fm(fleet, "results", "--platform", "pixel8-npu-imported", "--json").stdout)
    assert sorted(r["median_ms"] for r in rows) == [0.25, 1.5]
    assert sorted(r["energy_mj_per_inference"] or 0 for r in rows) == [0, 0.9]

    bad = tmp_path / "bad.csv"
    bad.write_text("model,platform,latency_ms\n"
                   "tiny_mlp.onnx,other-imported,fast\n"       # line 2: not a number
                   "missing.onnx,other-imported,1.0\n"         # line 3: no such file
                   "tiny_mlp.onnx,other-imported,-2\n"         # line 4: not positive
                   "tiny_squeeze.onnx,other-imported,3.0\n")   # line 5: fine
    proc = fm(fleet, "import", str(bad))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    for line in ("line 2", "line 3", "line 4"):
        assert line in proc.stderr, proc.stderr
    assert "line 5" not in proc.stderr
    platforms = json.loads(fm(fleet, "platforms", "--json").stdout)
    assert "other-imported" not in {p["platform_id"] for p in platforms}, "nothing may be half-imported"
