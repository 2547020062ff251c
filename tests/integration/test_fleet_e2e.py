"""End to end on real processes: a controller (real local Ray, real SQLite) and
agents (real onnxruntime and LiteRT) talking real gRPC over loopback.

One controller serves the whole test session (``fleet`` in conftest.py;
starting Ray costs ~15 s on 2 cores); the restart test restarts it on the same
address.
"""
from __future__ import annotations

import hashlib
import json
import signal
import time
import sqlite3

import pytest

from fleetmeter.client import FleetClient
from fleetmeter.errors import PermissionDenied, InvalidArgument, NotFound, Unauthenticated
from fleetmeter.local_fleet import wait_until
from fleetmeter.modeler.builtin import get_builtin_model
from fleetmeter.modeler.zoo.odd_files import write_corrupt_model, write_large_onnx, write_unsupported_op_onnx
from fleetmeter.v1 import common_pb2, fleet_pb2

pytestmark = pytest.mark.integration

# These tests count jobs exactly: their sweeps leave out the repeat-sample round (test_readings_e2e.py has it).
NO_SAMPLE = -1.0
FAST = common_pb2.BenchSettings(warmup_runs=2, min_runs=5, min_duration_ms=50, max_duration_ms=2000)


def _platform_of(client, agent_name: str) -> str:
    (device,) = [d for d in client.list_devices() if d.name == agent_name]
    return device.platform_ids[0]


def _upload_builtin(client, name: str, fmt: str = "onnx") -> str:
    """Upload a built-in model; its sha256."""
    return client.upload_model(get_builtin_model(name, fmt).path).model.sha256


def _submit(client, models, platform_ids, settings=FAST, **spec):
    """Submit a sweep of ``models`` on ``platform_ids`` (without the repeat-sample round unless asked)."""
    spec.setdefault("repeat_sample", NO_SAMPLE)
    return client.submit_sweep(fleet_pb2.SweepSpec(
        models=models, platforms=fleet_pb2.PlatformSelector(platform_ids=platform_ids), settings=settings, **spec))


def _submit_builtin(client, name: str, platform_id: str, settings, fmt: str = "onnx", **spec):
    """Upload a built-in model and submit a sweep of it on one platform; (its sha256, the sweep)."""
    sha = _upload_builtin(client, name, fmt)
    return sha, _submit(client, [sha], [platform_id], settings, **spec)


def _wait(client, sweep_id: str, timeout_s: float = 120.0):
    """The sweep, once it has ended."""
    for _ in client.watch_sweep(sweep_id, timeout_s=timeout_s):
        pass
    return client.get_sweep(sweep_id)


def _run_sweep(client, models, platform_ids, settings=FAST, timeout_s=120.0, **spec):
    return _wait(client, _submit(client, models, platform_ids, settings, **spec).sweep_id, timeout_s)


def _db(fleet) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{fleet.data_dir / 'fleetmeter.sqlite'}?mode=ro", uri=True)


def test_agents_join_and_measure_both_runtimes(fleet):
    with fleet.client() as c:
        devices = {d.name: d for d in c.list_devices()}
        assert devices["ort"].connected and devices["lite"].connected
        assert devices["ort"].info.runtimes[0].name == "onnxruntime"
        platforms = {p.platform_id: p for p in c.list_platforms()}
        ort_pid, lite_pid = _platform_of(c, "ort"), _platform_of(c, "lite")
        assert platforms[ort_pid].runtime == "onnxruntime" and platforms[ort_pid].threads == 1
        assert platforms[lite_pid].runtime == "litert"
        assert platforms[ort_pid].labels["role"] == "e2e"
        onnx_sha = _upload_builtin(c, "tiny_convnet")
        tfl_sha = _upload_builtin(c, "tiny_convnet", "tflite")
        sweep = _run_sweep(c, [onnx_sha, tfl_sha], [ort_pid, lite_pid], repeats=2)
        # 2 models × 2 platforms, but each format runs on one runtime only → 2 pairs × 2 repeats.
        assert (sweep.progress.total, sweep.progress.done, sweep.progress.failed) == (4, 4, 0)
        results = c.list_measurements(sweep_id=sweep.sweep_id, include_samples=True)
    assert len(results) == 4
    for m in results:
        assert not m.failure_kind, m.failure_message
        assert m.platform_id == (ort_pid if m.model_sha256 == onnx_sha else lite_pid)
        assert m.latency_ms.n == len(m.samples_ms) >= 5
        assert m.latency_ms.min <= m.latency_ms.median <= m.latency_ms.max
        assert m.load_ms > 0 and m.first_run_ms > 0 and m.peak_rss_bytes > 0
        # Energy is present exactly when a sensor measured it; never estimated.
        assert m.HasField("energy_mj_per_inference") == bool(m.power_sensor)
    with _db(fleet) as db:
        stored = db.execute("SELECT record_json FROM measurements WHERE sweep_id=?", (sweep.sweep_id,)).fetchall()
    assert all(len(json.loads(r[0])["samples_ms"]) >= 5 for r in stored), "raw samples must be stored"


def test_wrong_or_missing_token_is_unauthenticated_and_changes_nothing(fleet, monkeypatch):
    monkeypatch.delenv("FLEETMETER_API_TOKEN", raising=False)
    with fleet.client() as c:
        models_before = len(c.list_models())
    for token in ("not-the-token", None):
        with FleetClient(fleet.address, token=token) as bad:
            with pytest.raises(Unauthenticated):
                bad.list_devices()
            with pytest.raises(Unauthenticated):
                bad.upload_model(get_builtin_model("tiny_mlp", "onnx").path)
    # The agent token is not an API token: a token of the wrong kind is PERMISSION_DENIED (errors.py).
    with FleetClient(fleet.address, token=fleet.agent_token) as c, pytest.raises(PermissionDenied):
        c.list_models()
    with fleet.client() as c:
        assert len(c.list_models()) == models_before


def test_agent_with_wrong_token_never_joins(fleet, tmp_path):
    saved = fleet.agent_token
    fleet.agent_token = "wrong"
    try:
        proc = fleet.start_agent("intruder", "--runtime", "onnxruntime")
    finally:
        fleet.agent_token = saved
    try:
        wait_until(lambda: "refused this agent" in proc.log_tail(), 30, "the agent to report the refusal")
        with fleet.client() as c:
            assert "intruder" not in {d.name for d in c.list_devices()}
    finally:
        fleet.stop_agent("intruder")


def test_corrupt_model_upload_is_rejected_and_nothing_is_stored(fleet, tmp_path):
    bad = tmp_path / "corrupt.onnx"
    write_corrupt_model(bad)
    with fleet.client() as c:
        before = len(c.list_models())
        with pytest.raises(InvalidArgument, match="corrupt.onnx"):
            c.upload_model(bad)
        assert len(c.list_models()) == before
        with pytest.raises(NotFound):
            c.submit_sweep(fleet_pb2.SweepSpec(models=[hashlib.sha256(bad.read_bytes()).hexdigest()]))
        with pytest.raises(InvalidArgument, match="no platform matches"):
            c.submit_sweep(fleet_pb2.SweepSpec(
                models=["tiny_convnet.onnx"], platforms=fleet_pb2.PlatformSelector(labels={"role": "nope"})))
        assert c.list_devices(), "the controller keeps serving"


def test_model_failing_on_device_is_a_measurement_and_agent_keeps_serving(fleet, tmp_path):
    path = tmp_path / "custom_op.onnx"
    write_unsupported_op_onnx(path)
    with fleet.client() as c:
        ort = _platform_of(c, "ort")
        sha = c.upload_model(path).model.sha256
        sweep = _run_sweep(c, [sha], [ort])
        assert (sweep.progress.failed, sweep.progress.done) == (1, 0)
        (m,) = c.list_measurements(sweep_id=sweep.sweep_id)
        assert m.failure_kind == "unsupported_op"
        assert "NoSuchOp" in m.failure_message
        good = _upload_builtin(c, "tiny_mlp")
        after = _run_sweep(c, [good], [ort])
        assert (after.progress.done, after.progress.failed) == (1, 0)


def test_60mb_model_travels_in_chunks_and_is_verified(fleet, tmp_path):
    path = tmp_path / "big.onnx"
    write_large_onnx(path, 60_000_000)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    with fleet.client() as c:
        uploaded = c.upload_model(path).model
        assert (uploaded.sha256, uploaded.size_bytes) == (sha, path.stat().st_size)
        sweep = _run_sweep(c, [sha], [_platform_of(c, "ort")], timeout_s=240)
        assert (sweep.progress.done, sweep.progress.failed) == (1, 0)
    cached = fleet.root / "agents" / "ort" / "models" / sha
    assert cached.stat().st_size == path.stat().st_size
    assert (fleet.data_dir / "blobs" / sha[:2] / sha).stat().st_size == path.stat().st_size


def _job_counts(fleet, sweep_id):
    with _db(fleet) as db:
        per_job = db.execute("SELECT j.job_id, j.state, COUNT(m.measurement_id) FROM jobs j LEFT JOIN measurements m"
                             " ON m.job_id = j.job_id WHERE j.sweep_id=? GROUP BY j.job_id", (sweep_id,)).fetchall()
    return per_job


def test_agent_killed_mid_job_and_restarted(fleet):
    slow = common_pb2.BenchSettings(warmup_runs=1, min_runs=5, min_duration_ms=4000, max_duration_ms=8000)
    with fleet.client() as c:
        ort = _platform_of(c, "ort")
        _, sweep = _submit_builtin(c, "tiny_depthwise", ort, slow, repeats=2)
        wait_until(lambda: any(d.name == "ort" and d.state == "busy" for d in c.list_devices()), 60,
                   "the ort agent to start a job")
        fleet.stop_agent("ort", sig=signal.SIGKILL)
        fleet.start_agent("ort", "--runtime", "onnxruntime", "--threads", "1", "--label", "role=e2e")
        final = _wait(c, sweep.sweep_id)
    assert (final.progress.done, final.progress.failed) == (2, 0)
    per_job = _job_counts(fleet, sweep.sweep_id)
    assert [(state, n) for _, state, n in per_job] == [("done", 1), ("done", 1)], per_job


def test_controller_killed_while_agent_measures_loses_nothing(fleet):
    """The agent finishes while the controller is down, spools the result, and delivers it after the restart."""
    slow = common_pb2.BenchSettings(warmup_runs=1, min_runs=5, min_duration_ms=3000, max_duration_ms=6000)
    spool = fleet.root / "agents" / "lite" / "spool"
    with fleet.client() as c:
        lite = _platform_of(c, "lite")
        sha, sweep = _submit_builtin(c, "tiny_squeeze", lite, slow, fmt="tflite", repeats=2)
        cached = fleet.root / "agents" / "lite" / "models" / sha
        wait_until(lambda: cached.exists() and any(d.name == "lite" and d.state == "busy" for d in c.list_devices()),
                   60, "the lite agent to download the model and start a job")
    fleet.stop_controller(sig=signal.SIGKILL)
    wait_until(lambda: any(spool.glob("*.pb")), 60, "the agent to spool its result while the controller is down")
    fleet.start_controller()  # same address, same data dir
    with fleet.client() as c:
        final = _wait(c, sweep.sweep_id)
    fleet.wait_agents_connected(["ort", "lite"], timeout_s=60)  # both agents find the restarted controller
    assert (final.progress.done, final.progress.failed) == (2, 0)
    per_job = _job_counts(fleet, sweep.sweep_id)
    assert [(state, n) for _, state, n in per_job] == [("done", 1), ("done", 1)], per_job
    wait_until(lambda: not any(spool.glob("*.pb")), 30, "acknowledged results to leave the spool")


def test_job_of_a_vanished_agent_returns_to_the_queue_when_its_lease_expires(fleet):
    """An agent dies mid-job and never comes back; another agent of the same pool (same platform) takes the
    job, but only after the lease expired: it shares the dead agent's host, whose lease keeps the host busy."""
    slow = common_pb2.BenchSettings(warmup_runs=1, min_runs=5, min_duration_ms=3000, max_duration_ms=6000)
    fleet.start_agent("doomed", "--runtime", "onnxruntime", "--threads", "1", "--label", "role=pool")
    fleet.wait_agents_connected(["doomed"])
    with fleet.client() as c:
        pool = _platform_of(c, "doomed")
        _, sweep = _submit_builtin(c, "tiny_convnet", pool, slow)
        wait_until(lambda: any(d.name == "doomed" and d.state == "busy" for d in c.list_devices()), 60,
                   "the doomed agent to start the job")
        fleet.stop_agent("doomed", sig=signal.SIGKILL)
        killed_at = time.monotonic()
        fleet.start_agent("heir", "--runtime", "onnxruntime", "--threads", "1", "--label", "role=pool")
        fleet.wait_agents_connected(["heir"])
        assert _platform_of(c, "heir") == pool, "same hardware, runtime, threads and labels: one pool"
        for _ in c.watch_sweep(sweep.sweep_id, timeout_s=120):
            pass
        waited_s = time.monotonic() - killed_at
        final = c.get_sweep(sweep.sweep_id)
        (m,) = c.list_measurements(sweep_id=sweep.sweep_id)
        devices = {d.name: d for d in c.list_devices()}
    fleet.stop_agent("heir")
    assert (final.progress.done, final.progress.failed) == (1, 0)
    assert m.agent_id == devices["heir"].agent_id
    assert waited_s >= fleet.lease_timeout_s, "the heir must not measure while the dead agent's lease is open"
    assert devices["doomed"].state == "offline"


def test_operator_profiles_come_from_a_separate_pass(fleet):
    """profile_operators adds per-node kernel times; the latency samples stay those of the unprofiled loop."""
    with fleet.client() as c:
        ort = _platform_of(c, "ort")
        sha = _upload_builtin(c, "tiny_resnet")
        sweep = _run_sweep(c, [sha], [ort], profile_operators=True)
        assert (sweep.progress.done, sweep.progress.failed) == (1, 0)
        (m,) = c.list_measurements(sweep_id=sweep.sweep_id, include_samples=True)
    assert len(m.operators) >= 5
    assert "Conv" in {o.op_type for o in m.operators}  # onnxruntime may fuse Add/Relu into Conv
    assert all(o.runs >= 1 and o.median_us > 0 and o.output_shapes for o in m.operators)
    assert m.latency_ms.n == len(m.samples_ms)


def test_cancel_and_pause_a_running_sweep(fleet):
    slow = common_pb2.BenchSettings(warmup_runs=1, min_runs=5, min_duration_ms=1500, max_duration_ms=4000)
    with fleet.client() as c:
        ort = _platform_of(c, "ort")
        _, sweep = _submit_builtin(c, "tiny_convnet", ort, slow, repeats=6)
        wait_until(lambda: c.get_sweep(sweep.sweep_id).progress.leased == 1, 60, "the first job to start")
        paused = c.pause_sweep(sweep.sweep_id)
        assert paused.progress.state == "paused"
        wait_until(lambda: c.get_sweep(sweep.sweep_id).progress.leased == 0, 60, "the running job to finish")
        after_pause = c.get_sweep(sweep.sweep_id).progress
        assert after_pause.done == 1 and after_pause.pending == 5, "a paused sweep starts no new job"
        c.resume_sweep(sweep.sweep_id)
        wait_until(lambda: c.get_sweep(sweep.sweep_id).progress.leased == 1, 60, "the sweep to resume")
        cancelled = c.cancel_sweep(sweep.sweep_id)
        assert cancelled.progress.state == "cancelled" and cancelled.progress.pending == 0
        states = [p.state for p in c.watch_sweep(sweep.sweep_id, timeout_s=60)]
        final = c.get_sweep(sweep.sweep_id).progress
    assert states[-1] == "cancelled", "watching a cancelled sweep ends once its running job finished"
    assert (final.done, final.cancelled, final.leased, final.pending) == (2, 4, 0, 0)
    assert [(p.done, p.cancelled) for p in final.platforms] == [(2, 4)]
