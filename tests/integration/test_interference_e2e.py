"""Readings through a real controller and agent: sessions in isolated processes,
the interference guard's figures, and a CPU hog that must not yield a clean reading.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fleetmeter.modeler.builtin import get_builtin_model
from fleetmeter.v1 import common_pb2, fleet_pb2

pytestmark = pytest.mark.integration

FAST = common_pb2.BenchSettings(warmup_runs=2, min_runs=5, min_duration_ms=200, max_duration_ms=2000)


def _platform_of(client, agent_name: str) -> str:
    (device,) = [d for d in client.list_devices() if d.name == agent_name]
    return device.platform_ids[0]


def _measure(client, sha, platform_id, reading):
    sweep = client.submit_sweep(fleet_pb2.SweepSpec(
        models=[sha], platforms=fleet_pb2.PlatformSelector(platform_ids=[platform_id]), settings=FAST,
        reading=reading, repeat_sample=-1.0))
    for _ in client.watch_sweep(sweep.sweep_id, timeout_s=180):
        pass
    (m,) = [m for m in client.list_measurements(sweep_id=sweep.sweep_id, include_samples=True)
           if m.job_kind != "reference"]
    return m


def test_a_reading_is_several_isolated_sessions_with_the_guards_figures(fleet):
    with fleet.client() as c:
        sha = c.upload_model(get_builtin_model("tiny_convnet", "onnx").path).model.sha256
        m = _measure(c, sha, _platform_of(c, "ort"), common_pb2.ReadingSettings(sessions=3, max_sessions=6))
    assert not m.failure_kind, m.failure_message
    accepted = [s for s in m.sessions if s.accepted]
    assert len(m.sessions) >= 1 and len(accepted) >= 1, "a reading must record its sessions"
    assert m.latency_ms.n == sum(s.n for s in accepted) == len(m.samples_ms), \
        "the reading's samples must be exactly the accepted sessions' samples"
    assert len({round(s.load_ms, 6) for s in m.sessions}) == len(m.sessions), \
        "every session must load the model itself (independent loads)"
    assert m.interference.window_s > 0 and m.interference.HasField("other_cpu_cores"), \
        "the guard's figures must travel with the reading"
    assert m.sessions[0].interference.HasField("probe_slowdown") or m.sessions[0].index == 0
    if "unstable" not in m.flags and len(accepted) > 1:
        assert m.session_spread <= 0.05 + 1e-9


def test_a_cpu_hog_during_the_job_is_never_stored_as_clean(fleet):
    """Two busy processes (one per core here) run for the whole job: every session is disturbed,
    re-runs cannot escape it, so the reading must be flagged 'disturbed' with the figure that says why."""
    with fleet.client() as c:
        sha = c.upload_model(get_builtin_model("tiny_depthwise", "onnx").path).model.sha256
        pid = _platform_of(c, "ort")
        hogs = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 120\n"
                                                         "while time.time() < end: pass"])
                for _ in range(max(1, os.cpu_count() or 1))]
        try:
            m = _measure(c, sha, pid, common_pb2.ReadingSettings(sessions=2, max_sessions=3, max_disturbed_reruns=1,
                                                                 max_speed_wait_s=0.0))
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    assert not m.failure_kind, m.failure_message
    assert "disturbed" in m.flags, f"a reading taken under a CPU hog was stored as clean: {m}"
    assert m.interference.disturbed and m.interference.reasons, "the reading must say why it is disturbed"
    assert all(s.interference.disturbed for s in m.sessions), "every session ran under the hog"
    assert len(m.sessions) == 2, "one disturbed re-run allowed, then the reading is kept and flagged"
