"""A fleet that connects at once is admitted: the controller's gRPC server options (``SERVER_OPTIONS``) let a
burst of new streams wait for the Python server instead of being refused.

gRPC refuses new calls once more than ``grpc.server.max_pending_requests`` (default 1,000, hard limit 3,000)
wait for the application to pick them up; a one-threaded Python server picks them up more slowly than thousands
of agents open their streams after a controller restart (the load test lost 3,000-4,000 of 10,000 hellos with
INTERNAL "Internal error from Core"). Here a real gRPC server in its own process, with the controller's options
and a servicer that answers each hello, receives 5,000 streams opened at once over 50 connections: every one
must be answered. (With gRPC's default options the same burst loses streams on this machine: run the module
with ``FLEETMETER_STORM_DEFAULT_OPTIONS=1`` to see it.)
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os

import grpc

from fleetmeter import _net
from fleetmeter.v1 import agent_pb2, agent_pb2_grpc

STREAMS = 5000
PER_CONNECTION = 100


class _Welcome(agent_pb2_grpc.AgentServiceServicer):
    async def Connect(self, request_iterator, context):
        await request_iterator.__anext__()
        yield agent_pb2.ControllerMessage(welcome=agent_pb2.Welcome(agent_id="ok"))
        async for _ in request_iterator:
            pass


async def _serve(ports, stop) -> None:
    from fleetmeter.controller.server import SERVER_OPTIONS

    options = () if os.environ.get("FLEETMETER_STORM_DEFAULT_OPTIONS") else SERVER_OPTIONS
    server = grpc.aio.server(options=options)
    agent_pb2_grpc.add_AgentServiceServicer_to_server(_Welcome(), server)
    ports.put(server.add_insecure_port("127.0.0.1:0"))
    await server.start()
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    await server.stop(0)


def _server_process(ports, stop) -> None:
    asyncio.run(_serve(ports, stop))


async def _storm(address: str) -> tuple[int, list[str]]:
    options = _net.CHANNEL_OPTIONS + (("grpc.use_local_subchannel_pool", 1),)  # a connection per channel
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(STREAMS // PER_CONNECTION)]
    welcomed, errors = 0, []
    release = asyncio.Event()

    async def agent(i: int) -> None:
        nonlocal welcomed

        async def messages():
            yield agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id=f"storm-{i}"))
            await release.wait()

        try:
            call = agent_pb2_grpc.AgentServiceStub(channels[i // PER_CONNECTION]).Connect(messages(), timeout=120)
            async for _ in call:
                welcomed += 1
                break
            call.cancel()
        except grpc.aio.AioRpcError as exc:
            errors.append(f"{exc.code().name}: {exc.details()}")

    try:
        await asyncio.gather(*(agent(i) for i in range(STREAMS)))
    finally:
        release.set()
        for channel in channels:
            await channel.close()
    return welcomed, errors


def test_a_burst_of_thousands_of_streams_is_admitted_not_refused():
    ctx = multiprocessing.get_context("spawn")
    ports, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_server_process, args=(ports, stop), daemon=True)
    server.start()
    try:
        address = f"127.0.0.1:{ports.get(timeout=60)}"
        welcomed, errors = asyncio.run(_storm(address))
    finally:
        stop.set()
        server.join(30)
        if server.is_alive():
            server.kill()
    assert (welcomed, errors[:3]) == (STREAMS, []), f"{len(errors)} stream(s) refused"
