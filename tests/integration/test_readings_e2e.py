"""Readings you can trust, end to end: a real controller (its drift canary on, as by default) and the real
onnxruntime agent of the session's fleet. A sweep with repeat_sample=1.0 re-measures every pair once more, late
in the sweep; ``fleetmeter platforms --json`` then shows the platform's live noise ceiling and the canary's
reference reading, and ``fleetmeter results`` the new per-reading fields.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fleetmeter.local_fleet import wait_until
from fleetmeter.modeler.builtin import get_builtin_model
from fleetmeter.v1 import common_pb2, fleet_pb2

pytestmark = pytest.mark.integration

FAST = common_pb2.BenchSettings(warmup_runs=2, min_runs=5, min_duration_ms=30, max_duration_ms=2000)
MODELS = ("tiny_mlp", "tiny_squeeze", "tiny_convnet")


def _fm(fleet, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetmeter.cli", *args, "--controller", fleet.address,
                           "--api-token", fleet.api_token], capture_output=True, text=True, timeout=120)


def _platform_json(fleet, platform_id: str) -> dict:
    proc = _fm(fleet, "platforms", "--json")
    assert proc.returncode == 0, proc.stderr
    return next(p for p in json.loads(proc.stdout) if p["platform_id"] == platform_id)


def test_repeat_samples_feed_the_noise_ceiling_and_the_canary_reports(fleet):
    with fleet.client() as c:
        (ort,) = [d.platform_ids[0] for d in c.list_devices() if d.name == "ort"]
        shas = [c.upload_model(get_builtin_model(name, "onnx").path).model.sha256 for name in MODELS]
        sweep = c.submit_sweep(fleet_pb2.SweepSpec(
            models=shas, platforms=fleet_pb2.PlatformSelector(platform_ids=[ort]), settings=FAST,
            reading=common_pb2.ReadingSettings(sessions=1), repeat_sample=1.0))
        assert sweep.progress.total == 2 * len(MODELS), "one repeat sample per pair at share 1.0"
        assert sweep.spec.reading.sessions == 1 and sweep.spec.repeat_sample == 1.0
        for _ in c.watch_sweep(sweep.sweep_id, timeout_s=300):
            pass
        final = c.get_sweep(sweep.sweep_id).progress
        assert (final.done, final.failed) == (2 * len(MODELS), 0)
        kinds = sorted((m.model_sha256, m.job_kind) for m in c.list_measurements(sweep_id=sweep.sweep_id))
    assert kinds == sorted([(s, "") for s in shas] + [(s, "repeat_sample") for s in shas])

    # The canary measures the platform as soon as its reference model is built (in the background at start).
    wait_until(lambda: _platform_json(fleet, ort)["reference"] is not None, 180, "the platform's reference reading")
    platform = _platform_json(fleet, ort)
    ceiling, reference = platform["noise_ceiling"], platform["reference"]
    assert ceiling["pairs"] >= len(MODELS), ceiling
    assert 0.0 <= ceiling["within_5"] <= ceiling["within_10"] <= 1.0
    assert reference["model_name"] == "reference-onnx" and reference["median_ms"] > 0
    assert reference["readings"] >= 1 and reference["finished_at_unix"] > 0
    assert isinstance(reference["drift"], float) and isinstance(reference["flags"], list)
    assert platform["runtime"] == "onnxruntime" and platform["agents_connected"] >= 1, "old fields stay"

    rows = json.loads(_fm(fleet, "results", "--platform", ort, "--json").stdout)
    ref_rows = [r for r in rows if r["job_kind"] == "reference"]
    assert ref_rows and all(r["model"] == "reference-onnx" for r in ref_rows)
    ours = [r for r in rows if r["sweep_id"] == sweep.sweep_id]
    assert len(ours) == 2 * len(MODELS)
    for r in ours:
        assert isinstance(r["sessions"], int) and isinstance(r["flags"], list)
        assert r["session_spread"] is None or r["session_spread"] >= 0
    human = _fm(fleet, "platforms")
    assert human.returncode == 0 and "NOISE" in human.stdout and "REFERENCE" in human.stdout, human.stdout
