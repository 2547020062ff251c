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
import subprocess
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


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants (the controller plus its Ray processes)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _tree_rss_bytes(pid: int) -> int:
    """RSS of a process and all its descendants."""
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its living descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


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


def start_agents(address: str, token: str, agents: int, per_channel: int, run_id: str, stats: Stats,
                 stop: asyncio.Event, heartbeat_s: float) -> tuple[list, list]:
    """``agents`` fake agents on channels of ``per_channel`` each: ``(tasks, channels)`` for :func:`stop_agents`."""
    # Each channel its own TCP connection, as separate devices have: gRPC would otherwise share one connection
    # between channels of the same target and arguments, and carry every agent's stream on it (at 10,000 agents,
    # streams past what the server admits on one connection waited unopened: 6,709 of 10,000 connected).
    options = _net.CHANNEL_OPTIONS + (("grpc.use_local_subchannel_pool", 1),)
    channels = [grpc.aio.insecure_channel(address, options=options)
                for _ in range((agents + per_channel - 1) // per_channel)]
    tasks = [asyncio.create_task(fake_agent(i, channels[i // per_channel], token, run_id, stats, stop, heartbeat_s))
             for i in range(agents)]
    return tasks, channels


async def stop_agents(stop: asyncio.Event, tasks: list, channels: list) -> None:
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        await ch.close()


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def cpu_by_process(pid: int) -> dict[str, float]:
    """CPU seconds so far of the controller's process tree, by process (Ray names its workers ``ray::NAME``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "controller" if p == pid else Path(_process_name(p)).name[:40] or str(p)
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def start_profiles(pid: int, seconds: float, out_dir: Path) -> list:
    """py-spy on the controller process and the fleet actor for ``seconds`` (raw collapsed stacks)."""
    targets = {"controller": pid}
    targets.update({"fleet_actor": p for p in tree_pids(pid) if _process_name(p).startswith("ray::Fleet")})
    procs = []
    for name, p in targets.items():
        path = out_dir / f"pyspy-{name}.txt"
        procs.append((name, path, subprocess.Popen(
            ["py-spy", "record", "--nonblocking", "-r", "50", "-d", str(int(seconds)), "-f", "raw", "-o", str(path),
             "-p", str(p)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    return procs


def summarize_profiles(procs: list, top: int = 12) -> dict:
    """Each profile's busiest functions: share of samples a function is on the stack (inclusive) and at the
    top of it (self)."""
    out = {}
    for name, path, proc in procs:
        proc.wait(timeout=120)
        inclusive: dict[str, int] = {}
        own: dict[str, int] = {}
        total = 0
        for line in path.read_text().splitlines() if path.exists() else ():
            stack, _, count = line.rpartition(" ")
            frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].split(":")[0].rstrip(")") for f in stack.split(";")]
            n = int(count)
            total += n
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for f in set(frames):
                inclusive[f] = inclusive.get(f, 0) + n
        share = (lambda d: [(f, round(100 * c / total, 1)) for f, c in
                            sorted(d.items(), key=lambda kv: -kv[1])[:top]]) if total else (lambda d: [])
        out[name] = {"samples": total, "self_pct": share(own), "inclusive_pct": share(inclusive)}
    return out


async def drive(fleet: LocalFleet, agents: int, jobs: int, heartbeat_s: float, per_channel: int,
                connect_timeout_s: float, profile_s: float = 0.0, profile_dir: Path = Path(".")) -> dict:
    run_id = secrets.token_hex(3)
    stats, stop = Stats(), asyncio.Event()
    controller_pid = fleet.controller.popen.pid
    rss_before = _tree_rss_bytes(controller_pid)
    t0 = time.perf_counter()
    tasks, channels = start_agents(fleet.address, fleet.agent_token, agents, per_channel, run_id, stats, stop,
                                   heartbeat_s)
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
    cpu_before, own_before = cpu_by_process(controller_pid), sum(os.times()[:2])
    profiles = start_profiles(controller_pid, profile_s, profile_dir) if profile_s else []

    def wait_done():
        with fleet.client() as c:
            for _ in c.watch_sweep(sweep_id, timeout_s=3600):
                pass
            return c.get_sweep(sweep_id).progress

    progress = await loop.run_in_executor(None, wait_done)
    sweep_s = time.perf_counter() - t_sweep
    cpu_after, own_after = cpu_by_process(controller_pid), sum(os.times()[:2])
    await stop_agents(stop, tasks, channels)
    cpu_cores = {name: round((cpu_after[name] - cpu_before.get(name, 0.0)) / sweep_s, 2) for name in cpu_after}
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
        "controller_cores_during_sweep": dict(sorted(cpu_cores.items(), key=lambda kv: -kv[1])),
        "controller_cores_total": round(sum(cpu_cores.values()), 2),
        "loadgen_cores": round((own_after - own_before) / sweep_s, 2),
        "profiles": summarize_profiles(profiles),
        "errors": stats.errors[:5], "error_count": len(stats.errors),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--heartbeat-s", type=float, default=2.0)
    parser.add_argument("--agents-per-channel", type=int, default=100)
    parser.add_argument("--connect-timeout-s", type=float, default=120.0)
    parser.add_argument("--profile-s", type=float, default=0.0,
                        help="py-spy the controller and the fleet actor this long from the sweep's start")
    parser.add_argument("--quick", action="store_true", help="50 agents, 500 jobs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "loadgen.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.jobs = 50, 500
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fleetmeter-loadgen-") as tmp:
        fleet = LocalFleet(tmp, agent_token=secrets.token_hex(8), api_token=secrets.token_hex(8),
                           heartbeat_s=args.heartbeat_s, lease_timeout_s=max(30.0, 4 * args.heartbeat_s))
        try:
            fleet.start_controller()
            report = asyncio.run(drive(fleet, args.agents, args.jobs, args.heartbeat_s, args.agents_per_channel,
                                       args.connect_timeout_s, args.profile_s, Path(args.out).parent))
        finally:
            fleet.close()
    report["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if report["jobs_done"] == report["jobs"] and report["agents_connected"] == args.agents else 1


if __name__ == "__main__":
    sys.exit(main())
