"""Read latency: concurrent ``ListDevices`` against a controller whose fleet is busy, both read paths.

For each read path (``fleetmeter controller --read-path actor|store``, in the order given, in this one run):
a real controller (``LocalFleet``: local Ray, SQLite) is started; N simulated agents (the load generator's,
``loadgen.py``: the real ``Connect`` protocol, each its own host, heartbeats at the production interval of
2 s) connect and stay; then reader processes (``--reader-procs``) fire rounds of C concurrent ``ListDevices``
calls between them (spread over several channels, as separate callers would be; a round starts in all of them at
once) and times each call from request to parsed
response. With ``--sweep-jobs`` a sweep runs through the agents while the reads are made, so the fleet actor
is recording results and assigning jobs at full speed meanwhile.

Path ``floor`` (last): no controller, no agents: a bare gRPC server process answers every call with the bytes
of an answer captured on the path before it, so what gRPC and the reader alone cost on this machine, now, is
measured next to the two real paths.

Reported per path: p50/p95/p99/max of the call latency over all rounds, each round's wall time, devices per
answer, the server's CPU (the controller, its Ray processes) during the reads, and the ratio
``actor / store`` of each percentile.

    python benchmarks/read_latency.py --agents 1000 --concurrency 200 --rounds 5
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import secrets
import sys
import tempfile
import time
from pathlib import Path

import grpc

from fleetmeter import _net
from fleetmeter.local_fleet import LocalFleet
from fleetmeter.modeler.builtin import get_builtin_model
from fleetmeter.v1 import fleet_pb2, fleet_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import loadgen  # noqa: E402

READ_PATHS = ("actor", "store", "floor")


async def _read_rounds(address: str, token: str, concurrency: int, rounds: int, channels: int,
                       pause_s: float, barrier) -> dict:
    chans = [grpc.aio.insecure_channel(address, options=_net.CHANNEL_OPTIONS) for _ in range(channels)]
    stubs = [fleet_pb2_grpc.FleetServiceStub(c) for c in chans]
    latencies_ms: list[float] = []
    round_s: list[float] = []
    devices: set[int] = set()
    answer = b""

    async def one(i: int) -> float:
        nonlocal answer
        t0 = time.perf_counter()
        response = await stubs[i % channels].ListDevices(fleet_pb2.ListDevicesRequest(),
                                                         metadata=_net.bearer(token) if token else None, timeout=120)
        elapsed_ms = (time.perf_counter() - t0) * 1000
        devices.add(len(response.devices))
        answer = answer or response.SerializeToString()
        return elapsed_ms

    await asyncio.gather(*(one(i) for i in range(channels)))  # connect every channel before timing
    for _ in range(rounds):
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)  # every reader process at once
        t0 = time.perf_counter()
        latencies_ms += await asyncio.gather(*(one(i) for i in range(concurrency)))
        round_s.append(time.perf_counter() - t0)
        await asyncio.sleep(pause_s)
    for c in chans:
        await c.close()
    return {"latencies_ms": latencies_ms, "round_s": round_s, "devices_per_answer": sorted(devices),
            "answer": answer}


def _reader(address: str, token: str, concurrency: int, rounds: int, channels: int, pause_s: float,
            barrier, queue) -> None:
    """A reader process: its own interpreter, so parsing answers does not share a GIL with the agents."""
    try:
        queue.put(asyncio.run(_read_rounds(address, token, concurrency, rounds, channels, pause_s, barrier)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put({"error": repr(exc)})


def _read(address: str, token: str, args) -> dict:
    """``args.concurrency`` callers spread over ``args.reader_procs`` processes, each round started together
    in all of them; the processes' results merged."""
    ctx = multiprocessing.get_context("spawn")
    procs_n = max(1, min(args.reader_procs, args.concurrency))
    queue, barrier = ctx.Queue(), ctx.Barrier(procs_n)
    procs = [ctx.Process(target=_reader, args=(address, token, args.concurrency // procs_n
                                               + (i < args.concurrency % procs_n), args.rounds,
                                               max(1, args.channels // procs_n), args.pause_s, barrier, queue))
             for i in range(procs_n)]
    for p in procs:
        p.start()
    parts = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    errors = [p["error"] for p in parts if "error" in p]
    if errors:
        return {"error": errors[0]}
    return {"latencies_ms": [x for p in parts for x in p["latencies_ms"]],
            "round_s": [max(r) for r in zip(*(p["round_s"] for p in parts))],
            "devices_per_answer": sorted({d for p in parts for d in p["devices_per_answer"]}),
            "answer": parts[0]["answer"]}


async def _serve_static(answer: bytes, port_queue) -> None:
    server = grpc.aio.server()

    async def list_devices(request, context) -> bytes:
        return answer

    handler = grpc.unary_unary_rpc_method_handler(
        list_devices, request_deserializer=fleet_pb2.ListDevicesRequest.FromString, response_serializer=None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("fleetmeter.v1.FleetService",
                                                                          {"ListDevices": handler}),))
    port_queue.put(server.add_insecure_port("127.0.0.1:0"))
    await server.start()
    await server.wait_for_termination()


def _static_server(answer: bytes, port_queue) -> None:
    """The floor: a bare gRPC server process that answers ListDevices with the same bytes every time."""
    asyncio.run(_serve_static(answer, port_queue))


def _floor(args, answer: bytes) -> dict:
    """What gRPC alone costs here: the same reads against :func:`_static_server` serving ``answer`` (a store-path
    answer captured in this run), no controller, no agents."""
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_static_server, args=(answer, ports), daemon=True)
    server.start()
    try:
        address = f"127.0.0.1:{ports.get(timeout=60)}"
        cpu0, t0 = loadgen.tree_cpu_s(server.pid), time.perf_counter()
        reads = _read(address, "", args)
        cpu_s, wall_s = loadgen.tree_cpu_s(server.pid) - cpu0, time.perf_counter() - t0
    finally:
        server.terminate()
        server.join()
    return _summary("floor", reads, cpu_s=cpu_s, wall_s=wall_s, agents_connected=0)


def _summary(read_path: str, reads: dict, *, cpu_s: float, wall_s: float, **more) -> dict:
    if "error" in reads:
        raise RuntimeError(f"reader failed on the {read_path} path: {reads['error']}")
    lat = reads["latencies_ms"]
    return {
        "read_path": read_path, **more, "calls": len(lat), "devices_per_answer": reads["devices_per_answer"],
        "answer_bytes": len(reads["answer"]),
        "latency_ms": {q: round(_common.percentile(lat, p), 1) for q, p in
                       (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))},
        "round_s": [round(x, 3) for x in reads["round_s"]],
        "server_cpu_s": round(cpu_s, 2), "server_cpu_share": round(cpu_s / wall_s, 2), "read_phase_s": round(wall_s, 2),
    }


def _submit(fleet: LocalFleet, run_id: str, jobs: int) -> str:
    with fleet.client() as c:
        pid = next(p.platform_id for p in c.list_platforms() if p.labels.get("loadgen") == run_id)
        sha = c.upload_model(get_builtin_model("tiny_mlp", "onnx").path).model.sha256
        return c.submit_sweep(fleet_pb2.SweepSpec(name="read-latency", models=[sha], repeats=jobs,
                                                  platforms=fleet_pb2.PlatformSelector(platform_ids=[pid]))).sweep_id


async def _measure_path(fleet: LocalFleet, args, read_path: str) -> dict:
    run_id = secrets.token_hex(3)
    stats, stop = loadgen.Stats(), asyncio.Event()
    tasks, channels = loadgen.start_agents(fleet.address, fleet.agent_token, args.agents, 100, run_id, stats, stop,
                                           args.heartbeat_s)
    loop = asyncio.get_running_loop()
    try:
        deadline = time.monotonic() + 180
        while stats.connected < args.agents and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2 * args.heartbeat_s)  # heartbeats flowing before the reads
        sweep_id = await loop.run_in_executor(None, _submit, fleet, run_id, args.sweep_jobs) \
            if args.sweep_jobs else ""
        results_before = stats.results_sent
        pid = fleet.controller.popen.pid
        cpu0, t0 = loadgen.tree_cpu_s(pid), time.perf_counter()
        reads = await loop.run_in_executor(None, _read, fleet.address, fleet.api_token, args)
        wall_s = time.perf_counter() - t0
        cpu_s = loadgen.tree_cpu_s(pid) - cpu0
        jobs_during = stats.results_sent - results_before
    finally:
        await loadgen.stop_agents(stop, tasks, channels)
    return {**_summary(read_path, reads, cpu_s=cpu_s, wall_s=wall_s, agents_connected=stats.connected,
                       sweep_id=sweep_id, jobs_during_reads=jobs_during, agent_errors=stats.errors[:3]),
            "answer": reads["answer"]}


def _one_path(args, read_path: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="fleetmeter-reads-") as tmp:
        fleet = LocalFleet(tmp, agent_token=secrets.token_hex(8), api_token=secrets.token_hex(8),
                           heartbeat_s=args.heartbeat_s, lease_timeout_s=30.0)
        try:
            fleet.start_controller(None, 180.0, "--read-path", read_path)
            return asyncio.run(_measure_path(fleet, args, read_path))
        finally:
            fleet.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200, help="calls in flight at once, per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--channels", type=int, default=20, help="gRPC connections the calls are spread over")
    parser.add_argument("--reader-procs", type=int, default=4, help="processes the callers are spread over")
    parser.add_argument("--pause-s", type=float, default=1.0, help="between rounds")
    parser.add_argument("--heartbeat-s", type=float, default=2.0, help="agents' heartbeat (production: 2 s)")
    parser.add_argument("--sweep-jobs", type=int, default=0, help="run a sweep of this many jobs during the reads")
    parser.add_argument("--paths", default=",".join(READ_PATHS), help="read paths, in order (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="50 agents, 20 concurrent, 2 rounds")
    _common.add_out_dir_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.concurrency, args.rounds, args.channels, args.reader_procs = 50, 20, 2, 4, 2
    paths = [p for p in args.paths.split(",") if p]
    if not paths or set(paths) - set(READ_PATHS):
        parser.error(f"--paths: a comma-separated list of {', '.join(READ_PATHS)}")
    started = time.time()
    machine = {**_common.machine_info()}
    runs, answer = [], b""
    for read_path in paths:
        if read_path == "floor":
            if not answer:
                parser.error("--paths: floor replays an answer of the store or actor path: list one before it")
            runs.append(_floor(args, answer))
        else:
            runs.append(_one_path(args, read_path))
            answer = runs[-1].pop("answer")
        r = runs[-1]
        print(f"{read_path:>6}: {r['calls']} calls, {r['devices_per_answer']} devices each ({r['answer_bytes']} "
              f"bytes): p50 {r['latency_ms']['p50']} ms, p95 {r['latency_ms']['p95']}, p99 {r['latency_ms']['p99']}, "
              f"max {r['latency_ms']['max']}; server CPU {r['server_cpu_share']:.2f} cores; "
              f"{r.get('jobs_during_reads', 0)} jobs during the reads", flush=True)
    by_path = {r["read_path"]: r for r in runs}
    ratio = ({q: round(by_path["actor"]["latency_ms"][q] / by_path["store"]["latency_ms"][q], 1)
              for q in ("p50", "p95", "p99")} if {"actor", "store"} <= set(by_path) else None)
    if ratio:
        print(f"actor / store: {ratio}")
    payload = {"settings": {k: v for k, v in vars(args).items() if k != "out_dir"}, "runs": runs,
               "ratio_actor_over_store": ratio, "machine": machine,
               "summary": {"load_average_at_end": _common.loadavg(), "wall_s": time.time() - started}}
    _common.write_and_close("read_latency", payload, args.out_dir)
    return 0 if all(r["agents_connected"] == args.agents for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
