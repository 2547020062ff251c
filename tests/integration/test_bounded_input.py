"""Bounded input at the controller's front door, over real gRPC on 127.0.0.1:0.

Most tests drive one controller in this process (``LocalEngine``: no Ray, so its blob folder, store and
limits are at hand); the last one uses the shared Ray-backed fleet, where an upload is inspected from its
staging file by a Ray worker. Each refusal must be ``INVALID_ARGUMENT`` naming the field, leave nothing
stored (no measurement, platform, sweep, blob or staging file), and leave the service answering.
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

import grpc
import pytest

from fleetmeter import _net
from fleetmeter._hashing import sha256_file
from fleetmeter.client import FleetClient
from fleetmeter.controller import fleet_service as api_module
from fleetmeter.controller.engine import LocalEngine
from fleetmeter.controller.fleet import FleetConfig
from fleetmeter.controller.server import Controller, ControllerConfig
from fleetmeter.local_fleet import wait_until
from fleetmeter.modeler.builtin import get_builtin_model
from fleetmeter.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc

pytestmark = pytest.mark.integration

TOKEN = "api-token"
MAX_JOBS = 5
NAN = float("nan")


class Running:
    """A controller served from an event loop on a background thread, so the tests can call it synchronously."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="controller-loop")
        self.thread.start()
        self.controller = Controller(ControllerConfig(
            listen="127.0.0.1:0", data_dir=data_dir, api_token=TOKEN, agent_token="agent-token",
            fleet=FleetConfig(reference_interval_s=0, max_jobs_per_sweep=MAX_JOBS)), engine=LocalEngine())
        self.address = self.run(self.controller.start())
        self.channel = _net.open_channel(self.address)
        self.stub = fleet_pb2_grpc.FleetServiceStub(self.channel)

    def run(self, coro, timeout_s: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def call(self, method: str, request, timeout_s: float = 30.0):
        return getattr(self.stub, method)(request, metadata=_net.bearer(TOKEN), timeout=timeout_s)

    def refused(self, method: str, request, match: str) -> str:
        """The details of an INVALID_ARGUMENT answer; fails on any other outcome or a message without ``match``."""
        with pytest.raises(grpc.RpcError) as info:
            self.call(method, request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (info.value.code(), info.value.details())
        assert match in info.value.details(), info.value.details()
        return info.value.details()

    def count(self, table: str) -> int:
        con = sqlite3.connect(str(self.data_dir / "fleetmeter.sqlite"))
        try:
            return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        finally:
            con.close()

    def close(self) -> None:
        self.channel.close()
        self.run(self.controller.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def ctl(tmp_path_factory):
    running = Running(tmp_path_factory.mktemp("bounded"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def tiny(ctl) -> str:
    """sha256 of an uploaded model (the import and sweep tests refer to it)."""
    with FleetClient(ctl.address, token=TOKEN) as c:
        return c.upload_model(get_builtin_model("tiny_mlp", "onnx").path).model.sha256


def staged_files(blobs: Path) -> list[str]:
    return sorted(p.name for p in blobs.glob(".upload-*"))


def stored_blobs(blobs: Path) -> set[str]:
    return {p.name for p in blobs.glob("??/*")}


# ------------------------------------------------------------------------------------------------ imports
def _rows(sha: str, *specs: dict) -> list:
    return [fleet_pb2.ImportedMeasurement(**{"line": 2 + i, "model_sha256": sha, "platform": "lab-phone",
                                             "latency_ms": 1.5, **spec}) for i, spec in enumerate(specs)]


def test_bad_imports_are_refused_naming_the_field_and_store_nothing(ctl, tiny):
    """Fails if a NaN, a negative, a path-like platform or a duplicated line is stored, if the answer is not
    INVALID_ARGUMENT naming it, or if a request half-stores its good rows."""
    cases = [
        (_rows(tiny, {"latency_ms": NAN}), "line 2: latency_ms must be a finite number > 0, got nan"),
        (_rows(tiny, {}, {"latency_ms": -3.0}), "line 3: latency_ms"),
        (_rows(tiny, {"energy_mj": float("inf")}), "line 2: energy_mj"),
        (_rows(tiny, {"peak_rss_bytes": -1}), "line 2: peak_rss_bytes"),
        (_rows(tiny, {"platform": "../../x"}), "line 2: platform must not have an empty, '.' or '..' part"),
        (_rows(tiny, {"platform": "lab\x00phone"}), "line 2: platform"),
        (_rows(tiny, {}, {"line": 2}), "both are line 2"),
        (_rows(tiny, {"line": 0}), "rows[0].line must be an integer >= 1"),
    ]
    platforms_before = {p.platform_id for p in ctl.call("ListPlatforms", fleet_pb2.ListPlatformsRequest()).platforms}
    for rows, match in cases:
        ctl.refused("ImportMeasurements", fleet_pb2.ImportMeasurementsRequest(source="import:t", rows=rows), match)
        assert list(ctl.call("ListMeasurements", fleet_pb2.ListMeasurementsRequest())) == [], match
        assert ctl.count("measurements") == 0
    platforms_after = {p.platform_id for p in ctl.call("ListPlatforms", fleet_pb2.ListPlatformsRequest()).platforms}
    assert platforms_after == platforms_before, "a refused import created a platform"
    # The service keeps running and good rows still land.
    done = ctl.call("ImportMeasurements", fleet_pb2.ImportMeasurementsRequest(
        source="import:good", rows=_rows(tiny, {}, {"latency_ms": 2.5, "energy_mj": 0.7})))
    assert (done.imported, list(done.created_platforms)) == (2, ["lab-phone"])
    medians = sorted(m.latency_ms.median for m in ctl.call("ListMeasurements", fleet_pb2.ListMeasurementsRequest(
        platform_id="lab-phone")))
    assert medians == [1.5, 2.5]


# ------------------------------------------------------------------------------------------------ sweeps
@pytest.fixture(scope="module")
def platform(ctl) -> str:
    """One agent platform (registered through the fleet, as a hello would)."""
    hello = {"agent_id": "ag-bounded", "name": "bounded", "agent_secret": "s" * 32,
             "device": {"host_id": "h-bounded", "hardware": {"cpu_model": "Test CPU", "cores": 2}},
             "labels": {}, "offers": [{"runtime": "onnxruntime", "runtime_version": "1.20.0", "provider": "default",
                                       "threads": 1}], "current_job_id": "", "spooled_job_ids": []}
    answer = ctl.run(ctl.controller.fleet.call("register_agent", hello))
    return answer["platform_ids"][0]


def _spec(sha: str, platform_id: str, **fields) -> fleet_pb2.SweepSpec:
    spec = fleet_pb2.SweepSpec(models=[sha], platforms=fleet_pb2.PlatformSelector(platform_ids=[platform_id]),
                               repeat_sample=-1)
    for key, value in fields.items():
        if key == "settings":
            spec.settings.CopyFrom(common_pb2.BenchSettings(**value))
        else:
            setattr(spec, key, value)
    return spec


def test_bad_sweeps_are_refused_naming_the_field(ctl, tiny, platform):
    """Fails if a sweep with a zero run cap, a NaN or negative wait, or too many jobs is accepted (or stores
    anything), or if the job limit is checked only after expanding the jobs (slow for a huge sweep)."""
    before = ctl.count("sweeps"), ctl.count("jobs")
    for fields, match in [
        ({"settings": {"max_runs": 0}}, "settings.max_runs must be an integer >= 1"),
        ({"cooldown_s": NAN}, "cooldown_s must be a finite number, got nan"),
        ({"cooldown_s": -1.0}, "cooldown_s must be a finite number >= 0"),
        ({"max_thermal_wait_s": float("inf")}, "max_thermal_wait_s"),
        ({"repeats": MAX_JOBS + 1}, f"sweep expands to {MAX_JOBS + 1} jobs, more than the controller's limit of "
                                    f"{MAX_JOBS} (--max-sweep-jobs)"),
    ]:
        ctl.refused("SubmitSweep", fleet_pb2.SubmitSweepRequest(spec=_spec(tiny, platform, **fields)), match)
    started = time.monotonic()
    ctl.refused("SubmitSweep", fleet_pb2.SubmitSweepRequest(spec=_spec(tiny, platform, repeats=2**31 - 1)),
                "more than the controller's limit")
    assert time.monotonic() - started < 5.0, "the job limit must be checked before the jobs are built"
    assert (ctl.count("sweeps"), ctl.count("jobs")) == before, "a refused sweep left rows behind"
    sweep = ctl.call("SubmitSweep", fleet_pb2.SubmitSweepRequest(spec=_spec(tiny, platform, repeats=MAX_JOBS))).sweep
    assert sweep.progress.total == MAX_JOBS, "a sweep at the limit must still be accepted"


# ------------------------------------------------------------------------------------------------ uploads
def _upload(header: fleet_pb2.ModelUploadHeader, *chunks: bytes):
    yield fleet_pb2.UploadModelRequest(header=header)
    for chunk in chunks:
        yield fleet_pb2.UploadModelRequest(chunk=chunk)


def test_bad_uploads_are_refused_and_leave_no_file(ctl, tiny, monkeypatch):
    """Fails if garbage, a cut-short or overlong stream, a wrong hash or an oversized model is stored, answered
    with anything but INVALID_ARGUMENT, or leaves a staging file behind in the blob folder."""
    blobs = ctl.data_dir / "blobs"
    before = stored_blobs(blobs)
    garbage = os.urandom(256 * 1024)
    model = get_builtin_model("tiny_squeeze", "onnx").path.read_bytes()
    half = len(model) // 2
    cases = [
        (_upload(fleet_pb2.ModelUploadHeader(name="junk.onnx", size_bytes=len(garbage)), garbage),
         "junk.onnx: not a valid ONNX or TFLite model"),
        (_upload(fleet_pb2.ModelUploadHeader(name="cut.onnx", size_bytes=len(model)), model[:half]),
         f"cut.onnx: received {half} bytes, the header announced {len(model)}"),
        (_upload(fleet_pb2.ModelUploadHeader(name="long.onnx", size_bytes=half), model),
         f"received more than the {half} bytes the header announced"),
        (_upload(fleet_pb2.ModelUploadHeader(name="hash.onnx", sha256="0" * 64), model),
         "does not match the header's"),
        (_upload(fleet_pb2.ModelUploadHeader(name="bad-sha.onnx", sha256="../x"), model), "header.sha256"),
        (_upload(fleet_pb2.ModelUploadHeader(name="neg.onnx", size_bytes=-5), model), "header.size_bytes"),
        (_upload(fleet_pb2.ModelUploadHeader(name="empty.onnx")), "empty.onnx: empty file"),
        (iter([fleet_pb2.UploadModelRequest(chunk=model)]), "the first message must be the header"),
    ]
    for requests, match in cases:
        ctl.refused("UploadModel", requests, match)
        assert staged_files(blobs) == [], f"staging file left behind after: {match}"
    monkeypatch.setattr(api_module, "MAX_MODEL_BYTES", len(model) - 1)
    ctl.refused("UploadModel", _upload(fleet_pb2.ModelUploadHeader(name="big.onnx"), model[:half], model[half:]),
                f"model larger than {len(model) - 1} bytes")
    monkeypatch.undo()
    assert staged_files(blobs) == [] and stored_blobs(blobs) == before

    # A client that gives up mid-stream: the server drops what it staged.
    def interrupted():
        yield fleet_pb2.UploadModelRequest(header=fleet_pb2.ModelUploadHeader(name="gone.onnx"))
        yield fleet_pb2.UploadModelRequest(chunk=model[:half])
        raise RuntimeError("client gave up")

    with pytest.raises(grpc.RpcError):
        ctl.call("UploadModel", interrupted())
    # The server learns of the cancellation asynchronously.
    wait_until(lambda: staged_files(blobs) == [], 10, "a cancelled upload's staging file to be removed")

    # A valid upload still works, streamed in several chunks, and lands under its hash.
    answer = ctl.call("UploadModel", _upload(fleet_pb2.ModelUploadHeader(name="squeeze.onnx", size_bytes=len(model)),
                                             model[:1000], model[1000:]))
    sha = answer.model.sha256
    assert not answer.already_present and answer.model.format == "onnx" and answer.model.size_bytes == len(model)
    assert sha256_file(blobs / sha[:2] / sha) == sha and stored_blobs(blobs) == before | {sha}
    assert staged_files(blobs) == []
    again = ctl.call("UploadModel", _upload(fleet_pb2.ModelUploadHeader(name="squeeze.onnx"), model))
    assert again.already_present and staged_files(blobs) == []


def test_uploaded_model_row_matches_the_in_memory_inspection(ctl, tiny):
    """Fails if inspecting from the file path gives another row than inspecting the bytes (reference.py's path)."""
    from fleetmeter.controller.inspect_model import inspect_model_bytes, inspect_model_file

    for name, fmt in (("tiny_mlp", "onnx"), ("tiny_mlp", "tflite")):
        path = get_builtin_model(name, fmt).path
        assert inspect_model_file((str(path), path.name)) == inspect_model_bytes((path.read_bytes(), path.name))


# ------------------------------------------------------------------------------------------------ with Ray
def test_upload_through_ray_inspects_the_staged_file(fleet):
    """The shared fleet (a controller subprocess with local Ray): garbage is refused by the Ray worker that
    parses the staged file, nothing stays in the blob folder, and a real model still uploads."""
    blobs = fleet.data_dir / "blobs"
    channel = _net.open_channel(fleet.address)
    try:
        stub = fleet_pb2_grpc.FleetServiceStub(channel)
        garbage = os.urandom(512 * 1024)
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadModel(_upload(fleet_pb2.ModelUploadHeader(name="junk.onnx", size_bytes=len(garbage)),
                                     garbage[:300_000], garbage[300_000:]),
                             metadata=_net.bearer(fleet.api_token), timeout=120)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert "not a valid ONNX or TFLite model" in info.value.details()
        assert staged_files(blobs) == []
        path = get_builtin_model("tiny_squeeze", "tflite").path
        with FleetClient(fleet.address, token=fleet.api_token) as c:
            model = c.upload_model(path).model
        assert (model.format, model.sha256, model.size_bytes) == ("tflite", sha256_file(path), path.stat().st_size)
        assert staged_files(blobs) == [] and (blobs / model.sha256[:2] / model.sha256).is_file()
    finally:
        channel.close()
