"""Listings over real gRPC, read both ways (``--read-path``): from the store and the fleet's live snapshot
(readside.py, the default) and through the fleet actor (the old path). Both must say the same thing about a
fleet that connected an agent, ran a sweep and forgot the agent. The controller runs with ``LocalEngine``
(the fleet in-process, no Ray); the agent speaks the real ``Connect`` protocol and answers each job at once."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import grpc
import pytest

from fleetmeter import _net
from fleetmeter.client import FleetClient
from fleetmeter.local_fleet import wait_until
from fleetmeter.controller.engine import LocalEngine
from fleetmeter.controller.fleet import FleetConfig
from fleetmeter.controller.server import Controller, ControllerConfig
from fleetmeter.modeler.builtin import get_builtin_model
from fleetmeter.v1 import agent_pb2, agent_pb2_grpc, common_pb2, fleet_pb2

pytestmark = pytest.mark.integration


async def _agent(address: str, stop: asyncio.Event) -> None:
    """One agent: hello, then a synthetic measurement for every job, until ``stop``."""
    out: asyncio.Queue = asyncio.Queue()
    hardware = {"arch": "x86_64", "cpu_model": "Read CPU", "cpu_cores_logical": 2, "memory_gib": 4}
    await out.put(agent_pb2.AgentMessage(hello=agent_pb2.Hello(
        agent_id="reader-1", name="reader-1", agent_secret="secret-reader-1",
        device=common_pb2.DeviceInfo(hostname="h", host_id="host-r", hardware_json=json.dumps(hardware)),
        offers=[agent_pb2.PlatformOffer(runtime="onnxruntime", runtime_version="t", provider="CPU", threads=1)])))

    async def requests():
        while (msg := await out.get()) is not None:
            yield msg

    async with grpc.aio.insecure_channel(address, options=_net.CHANNEL_OPTIONS) as channel:
        call = agent_pb2_grpc.AgentServiceStub(channel).Connect(requests(), metadata=_net.bearer("agent"))
        stopping = asyncio.ensure_future(stop.wait())
        messages = call.__aiter__()
        while True:
            nxt = asyncio.ensure_future(messages.__anext__())
            done, _ = await asyncio.wait({nxt, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                nxt.cancel()
                await out.put(None)
                call.cancel()
                return
            msg = nxt.result()
            if msg.WhichOneof("kind") == "job":
                job = msg.job
                summary = common_pb2.LatencySummary(median=1.0, mean=1.0, p90=1.0, p99=1.0, min=1.0, max=1.0, n=1)
                await out.put(agent_pb2.AgentMessage(result=agent_pb2.JobResult(measurement=common_pb2.Measurement(
                    measurement_id=uuid.uuid4().hex, job_id=job.job_id, agent_id="reader-1",
                    platform_id=job.platform_id, model_sha256=job.model_sha256, runtime=job.runtime,
                    threads=job.threads, samples_ms=[1.0], latency_ms=summary, finished_at_unix=time.time()))))


def _scenario(address: str, stop_agent) -> dict:
    """What the listings say along the way (values that depend on time left out)."""
    model = get_builtin_model("tiny_mlp", "onnx").path
    with FleetClient(address, token="api") as c:
        wait_until(lambda: any(d.connected for d in c.list_devices()), 20.0, "the agent connected", poll_s=0.05)
        sha = c.upload_model(model).model.sha256
        [platform] = c.list_platforms()
        sweep = c.submit_sweep(fleet_pb2.SweepSpec(models=[sha], repeats=3, repeat_sample=-1,
                                                   platforms=fleet_pb2.PlatformSelector(
                                                       platform_ids=[platform.platform_id])))
        for _ in c.watch_sweep(sweep.sweep_id, timeout_s=60):
            pass
        progress = c.get_sweep(sweep.sweep_id).progress
        [device] = c.list_devices()
        seen = {"device": (device.agent_id, device.connected, device.state),
                "platform": (platform.agents_connected, platform.agents_total),
                "progress": (progress.total, progress.done, progress.state),
                "sweeps": [s.sweep_id for s in c.list_sweeps(["done"])] == [sweep.sweep_id],
                "models": [m.sha256 for m in c.list_models()] == [sha],
                "measurements": len(list(c.list_measurements(sweep_id=sweep.sweep_id)))}
        stop_agent()
        wait_until(lambda: not c.list_devices()[0].connected, 20.0, "the agent shown offline", poll_s=0.05)
        c.forget_device("reader-1")
        seen["after_forget"] = [d.agent_id for d in c.list_devices()]  # read at once: the caller's own write
    return seen


@pytest.mark.parametrize("read_path", ["store", "actor"])
def test_listings_read_either_way_say_the_same(tmp_path, read_path):
    async def main() -> dict:
        controller = Controller(ControllerConfig(listen="127.0.0.1:0", data_dir=tmp_path, api_token="api",
                                                 agent_token="agent", read_path=read_path,
                                                 fleet=FleetConfig(reference_interval_s=0)), engine=LocalEngine())
        address = await controller.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        agent = asyncio.ensure_future(_agent(address, stop))
        try:
            return await loop.run_in_executor(None, _scenario, address, lambda: loop.call_soon_threadsafe(stop.set))
        finally:
            stop.set()
            await asyncio.gather(agent, return_exceptions=True)
            await controller.stop()

    assert asyncio.run(main()) == {
        "device": ("reader-1", True, "idle"), "platform": (1, 1), "progress": (3, 3, "done"), "sweeps": True,
        "models": True, "measurements": 3, "after_forget": []}
