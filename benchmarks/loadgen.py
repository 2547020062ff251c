"""Load generator: N agents that speak the real protocol against a real controller.

Each simulated agent opens the real ``AgentService.Connect`` stream, says hello
(its own host id, so co-location rules do not serialise them; all share one
platform, so they form one pool), heartbeats, and answers every job at once
with a synthetic measurement (its "runtime" returns immediately). One sweep of
``--jobs`` jobs is submitted for that pool and the run ends when it is done.

Reported: agents held connected, jobs completed per second, the p50/p99 time
from a device becoming free (result sent) to its next assignment, and the
controller's memory per connected agent (RSS of the controller process and its
Ray workers, before and after connecting).

    python benchmarks/loadgen.py --agents 1000 --jobs 20000
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from fleetmeter import _net
from fleetmeter.local_fleet import LocalFleet
from fleetmeter.modeler.builtin import get_builtin_model
from fleetmeter.v1 import agent_pb2, agent_pb2_grpc, common_pb2, fleet_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

HARDWARE = {"arch": "x86_64", "cpu_model": "Loadgen CPU", "cpu_cores_logical": 4, "memory_gib": 8}


def _tree_rss_bytes(pid: int) -> int:
    """RSS of a process and all its descendants (the controller plus its Ray processes)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class Stats:
    def __init__(self) -> None:
        self.connected = 0
        self.results_sent = 0
        self.free_to_assigned_ms: list[float] = []
        self.errors: list[str] = []
        self.sweep_submitted = float("inf")  # perf_counter time the sweep was submitted


async def fake_agent(i: int, channel: grpc.aio.Channel, token: str, run_id: str, stats: Stats,
                     stop: asyncio.Event, heartbeat_s: float) -> None:
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    agent_id = f"load-{run_id}-{i:05d}"
    out: asyncio.Queue = asyncio.Queue()
    device = common_pb2.DeviceInfo(hostname=f"loadhost-{i}", host_id=f"loadhost-{run_id}-{i}", arch="x86_64",
                                   cpu_model="Loadgen CPU", cpu_cores=4, hardware_json=json.dumps(HARDWARE))
    await out.put(agent_pb2.AgentMessage(hello=agent_pb2.Hello(
        agent_id=agent_id, name=f"load-{i}", device=device, labels={"loadgen": run_id},
        offers=[agent_pb2.PlatformOffer(runtime="onnxruntime", runtime_version="loadgen",
                                        provider="CPUExecutionProvider", threads=1)],
        agent_secret=f"secret-{agent_id}")))

    async def requests():
        while True:
            msg = await out.get()
            if msg is None:
                return
            yield msg

    async def heartbeats():
        while not stop.is_set():
            await asyncio.sleep(heartbeat_s)
            await out.put(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(sent_unix=time.time())))

    beat = asyncio.create_task(heartbeats())
    free_since = None
    try:
        call = stub.Connect(requests(), metadata=_net.bearer(token))
        async for msg in call:
            kind = msg.WhichOneof("kind")
            if kind == "welcome":
                stats.connected += 1
                free_since = time.perf_counter()
            elif kind == "job":
                now = time.perf_counter()
                # free since its last result, or since the sweep arrived (a job before it, the controller's
                # reference canary at connect, is not the sweep's: now - inf would make the mean -inf)
                if free_since is not None and now >= stats.sweep_submitted:
                    stats.free_to_assigned_ms.append((now - max(free_since, stats.sweep_submitted)) * 1000)
                job = msg.job
                m = common_pb2.Measurement(
                    measurement_id=uuid.uuid4().hex, job_id=job.job_id, agent_id=agent_id,
                    platform_id=job.platform_id, model_sha256=job.model_sha256, runtime=job.runtime,
                    runtime_version="loadgen", threads=job.threads, samples_ms=[1.0, 1.0, 1.0],
                    latency_ms=common_pb2.LatencySummary(median=1.0, mean=1.0, p90=1.0, p99=1.0, min=1.0, max=1.0,
                                                         n=3),
                    started_at_unix=time.time(), finished_at_unix=time.time())
                await out.put(agent_pb2.AgentMessage(result=agent_pb2.JobResult(measurement=m)))
                stats.results_sent += 1
                free_since = time.perf_counter()
            if stop.is_set():
                break
    except grpc.aio.AioRpcError as exc:
        if not stop.is_set():
            stats.errors.append(f"{exc.code().name}: {exc.details()}")
    finally:
        beat.cancel()
        await out.put(None)


async def drive(fleet: LocalFleet, agents: int, jobs: int, heartbeat_s: float, per_channel: int,
                connect_timeout_s: float) -> dict:
    run_id = secrets.token_hex(3)
    stats, stop = Stats(), asyncio.Event()
    controller_pid = fleet.controller.popen.pid
    rss_before = _tree_rss_bytes(controller_pid)
    channels = [grpc.aio.insecure_channel(fleet.address, options=_net.CHANNEL_OPTIONS)
                for _ in range((agents + per_channel - 1) // per_channel)]
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(fake_agent(i, channels[i // per_channel], fleet.agent_token, run_id, stats, stop,
                                            heartbeat_s)) for i in range(agents)]
    deadline = time.perf_counter() + connect_timeout_s
    while stats.connected < agents and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
    connect_s = time.perf_counter() - t0
    await asyncio.sleep(2 * heartbeat_s)  # let heartbeats run before measuring memory
    rss_connected = _tree_rss_bytes(controller_pid)
    held = stats.connected

    loop = asyncio.get_running_loop()

    def submit():
        with fleet.client() as c:
            pid = next(p.platform_id for p in c.list_platforms() if p.labels.get("loadgen") == run_id)
            sha = c.upload_model(get_builtin_model("tiny_mlp", "onnx").path).model.sha256
            return c.submit_sweep(fleet_pb2.SweepSpec(
                name="loadgen", models=[sha], repeats=jobs,
                platforms=fleet_pb2.PlatformSelector(platform_ids=[pid]))).sweep_id

    stats.sweep_submitted = time.perf_counter()
    sweep_id = await loop.run_in_executor(None, submit)
    t_sweep = time.perf_counter()

    def wait_done():
        with fleet.client() as c:
            for _ in c.watch_sweep(sweep_id, timeout_s=3600):
                pass
            return c.get_sweep(sweep_id).progress

    progress = await loop.run_in_executor(None, wait_done)
    sweep_s = time.perf_counter() - t_sweep
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        await ch.close()
    lat = sorted(stats.free_to_assigned_ms)

    def pct(q):
        return _common.percentile(lat, 100.0 * q) if lat else None

    return {
        "agents_requested": agents, "agents_connected": held, "connect_s": round(connect_s, 2),
        "jobs": progress.total, "jobs_done": progress.done, "jobs_failed": progress.failed,
        "sweep_s": round(sweep_s, 2), "jobs_per_s": round(progress.done / sweep_s, 1) if sweep_s else None,
        "free_to_assigned_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": lat[-1] if lat else None,
                                "mean": statistics.fmean(lat) if lat else None, "n": len(lat)},
        "controller_rss_mb": {"before": round(rss_before / 2**20, 1), "connected": round(rss_connected / 2**20, 1)},
        "controller_kb_per_agent": round((rss_connected - rss_before) / 1024 / max(held, 1), 1),
        "errors": stats.errors[:5], "error_count": len(stats.errors),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--heartbeat-s", type=float, default=2.0)
    parser.add_argument("--agents-per-channel", type=int, default=100)
    parser.add_argument("--connect-timeout-s", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="50 agents, 500 jobs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "loadgen.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.jobs = 50, 500
    with tempfile.TemporaryDirectory(prefix="fleetmeter-loadgen-") as tmp:
        fleet = LocalFleet(tmp, agent_token=secrets.token_hex(8), api_token=secrets.token_hex(8),
                           heartbeat_s=args.heartbeat_s, lease_timeout_s=max(30.0, 4 * args.heartbeat_s))
        try:
            fleet.start_controller()
            report = asyncio.run(drive(fleet, args.agents, args.jobs, args.heartbeat_s, args.agents_per_channel,
                                       args.connect_timeout_s))
        finally:
            fleet.close()
    report["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if report["jobs_done"] == report["jobs"] and report["agents_connected"] == args.agents else 1


if __name__ == "__main__":
    sys.exit(main())
