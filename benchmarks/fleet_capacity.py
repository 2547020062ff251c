"""What each part of the controller costs per device and per job, measured in one process (no Ray, no gRPC).

The numbers docs/scaling.md builds on. Everything runs on this machine's disk and one core:

- **SQLite's write rate**: measurement records committed through ``Store.record_measurement``, in transactions
  of 1, 10, 100 and 1,000 records (the gateway batches results into one transaction per flush).
- **the scheduler** (``Fleet``, the code inside the fleet actor): N agents, each its own host, one sweep of J
  jobs; every agent busy, then rounds of ``record_results`` (``--batch`` results) and ``assign(every agent)``
  as the gateway calls them, until the sweep is done. Reported: jobs/s and the time per job of each call, for
  the scheduler as it is and as it was at a git revision (``--variants HEAD,current``); with
  ``--shards K`` also the same fleet split by host into K schedulers in K processes at once (what sharding
  the fleet actor would give on this machine), once with a store each and once all writing one SQLite store.
- **per device**: ``heartbeats`` of all N agents in one call (what the gateway flushes twice a second),
  ``register_agent``, the read side's ``live_snapshot`` and the store-path ``ListDevices`` answer at N devices.

    python benchmarks/fleet_capacity.py --agents 1000,10000 --jobs 20000
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from fleetmeter.controller.fleet import Fleet, FleetConfig
from fleetmeter.controller.readside import FleetReader, ReadOnlyStore, live_snapshot
from fleetmeter.controller.store import Store
from fleetmeter.v1 import fleet_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

HARDWARE = {"arch": "x86_64", "cpu_model": "Capacity CPU", "cpu_cores_logical": 4, "memory_gib": 8}
MODEL = {"sha256": "ab" * 32, "name": "capacity", "format": "onnx", "size_bytes": 100}
CONFIG = FleetConfig(reference_interval_s=0, max_jobs_per_sweep=10_000_000)


def _hello(i: int) -> dict:
    return {"agent_id": f"cap-{i:06d}", "name": f"cap-{i}", "labels": {}, "agent_secret": f"secret-{i}",
            "device": {"host_id": f"host-{i}", "hostname": f"host-{i}", "hardware": HARDWARE},
            "offers": [{"runtime": "onnxruntime", "runtime_version": "cap", "provider": "CPU", "threads": 1}],
            "current_job_id": "", "spooled_job_ids": []}


def _result(job: dict) -> dict:
    summary = {"median": 1.0, "mean": 1.0, "p90": 1.0, "p99": 1.0, "min": 1.0, "max": 1.0, "std": 0.0, "cv": 0.0,
               "n": 3}
    return {"measurement_id": uuid.uuid4().hex, "job_id": job["job_id"], "sweep_id": job["sweep_id"],
            "agent_id": job["agent_id"], "platform_id": job["platform_id"], "model_sha256": job["model_sha256"],
            "latency_ms": summary, "samples_ms": [1.0, 1.0, 1.0], "failure_kind": "", "failure_message": "",
            "finished_at_unix": time.time()}


def store_write_rate(root: Path, records: int) -> list[dict]:
    """Records committed per second through ``Store.record_measurement``, by transaction size."""
    out = []
    for batch in (1, 10, 100, 1000):
        store = Store(root / f"writes-{batch}.sqlite")
        n = max(batch, min(records, 200 * batch))
        made = [{**_result({"job_id": "", "sweep_id": "", "agent_id": "w", "platform_id": "p",
                            "model_sha256": MODEL["sha256"]}), "job_id": ""} for _ in range(n)]
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            with store.transaction():
                for record in made[start:start + batch]:
                    store.record_measurement(record)
        seconds = time.perf_counter() - t0
        store.close()
        out.append({"batch": batch, "records": n, "records_per_s": round(n / seconds), "commits_per_s":
                    round(n / batch / seconds)})
        print(f"  store: {out[-1]['records_per_s']:>7} records/s in transactions of {batch}", flush=True)
    return out


def fleet_at(rev: str, root: Path) -> type:
    """``Fleet`` as controller/fleet.py was at git revision ``rev`` (over today's store): the scheduler before
    a change, measured in the same run as after it."""
    import importlib.util
    import subprocess

    source = subprocess.run(["git", "show", f"{rev}:controller/fleet.py"], cwd=_common.REPO, check=True,
                            capture_output=True, text=True).stdout
    path = root / "fleet_at_rev.py"  # inside the run's temporary directory, removed with it
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("fleetmeter.controller.fleet_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.Fleet


def scheduler(root: Path, agents: int, jobs: int, batch: int, variant: str = "current", tag: str = "",
              first: int = 0, db: Optional[Path] = None, barrier: Any = None) -> dict:
    """The fleet at ``agents`` devices: registering, heartbeats, and a sweep of ``jobs`` run to the end, every
    agent busy, ``batch`` results recorded then ``assign`` offered every agent (the gateway's rhythm).
    ``first``: the first agent's number; ``db``: a store file other schedulers share (default: its own);
    ``barrier``: shared with the other shards, so that all submit their sweeps, then all start, together."""
    shared = db is not None
    db = db or root / f"fleet-{agents}-{variant}{tag}.sqlite"
    store = Store(db)
    fleet = (Fleet if variant == "current" else fleet_at(variant, root))(store, CONFIG)
    t0 = time.perf_counter()
    for i in range(first, first + agents):
        fleet.register_agent(_hello(i))
    register_s = time.perf_counter() - t0
    ids = list(fleet.agents)
    beats = {a: "" for a in ids}
    t0 = time.perf_counter()
    fleet.heartbeats(beats)
    heartbeats_s = time.perf_counter() - t0
    store.add_model(MODEL)
    [pid] = fleet.agents[ids[0]].platform_ids
    if barrier is not None:
        barrier.wait()
    fleet.submit_sweep({"models": [MODEL["sha256"]], "platforms": {"platform_ids": [pid]}, "repeats": jobs,
                        "repeat_sample": -1})
    if barrier is not None:
        barrier.wait()
    assign_s = record_s = 0.0
    done = rounds = errors = 0
    t_sweep, started_unix = time.perf_counter(), time.time()
    running = fleet.assign(ids)  # every agent busy; from now on as the gateway works: a batch ends, assign
    while shared or done < jobs:  # shared: until the common queue is dry (another shard may finish our jobs)
        finished, running = running[:batch], running[batch:]
        t0 = time.perf_counter()
        outcomes = fleet.record_results([_result(job) for job in finished])
        t1 = time.perf_counter()
        running += fleet.assign(ids)
        t2 = time.perf_counter()
        record_s, assign_s = record_s + t1 - t0, assign_s + t2 - t1
        done += outcomes.count("stored")
        errors += outcomes.count("error")  # not stored this time (e.g. the store was locked by another writer)
        rounds += 1
        if not finished:
            if shared and store.next_pending_job([pid]) is None:  # the others took the rest of the shared queue
                break
            if shared:  # pending jobs another scheduler leased first this round: offer the agents again
                running += fleet.assign(ids)
                continue
            raise RuntimeError(f"nothing running with {jobs - done} jobs left")
    sweep_s, ended_unix = time.perf_counter() - t_sweep, time.time()
    if shared:
        store.close()
        return {"agents": agents, "jobs": done, "jobs_per_s": round(done / sweep_s), "seconds": sweep_s,
                "started_unix": started_unix, "ended_unix": ended_unix, "results_not_stored": errors,
                "us_per_job": {"assign": round(assign_s / max(done, 1) * 1e6, 1),
                               "record_results": round(record_s / max(done, 1) * 1e6, 1)}}
    t0 = time.perf_counter()
    snapshot = live_snapshot(fleet)
    snapshot_s = time.perf_counter() - t0
    reader = FleetReader(ReadOnlyStore(db), CONFIG)
    reader.apply(snapshot)
    t0 = time.perf_counter()
    answer = fleet_pb2.ListDevicesResponse(devices=[_device(d) for d in reader.list_devices()]).SerializeToString()
    list_s = time.perf_counter() - t0
    reader.store.close()
    store.close()
    return {"agents": agents, "variant": variant, "batch": batch, "jobs": jobs, "rounds": rounds,
            "jobs_per_s": round(jobs / sweep_s),
            "us_per_job": {"assign": round(assign_s / jobs * 1e6, 1), "record_results": round(record_s / jobs * 1e6, 1),
                           "total": round(sweep_s / jobs * 1e6, 1)},
            "us_per_agent": {"register_agent": round(register_s / agents * 1e6, 1),
                             "heartbeat": round(heartbeats_s / agents * 1e6, 2),
                             "live_snapshot": round(snapshot_s / agents * 1e6, 2),
                             "list_devices_answer": round(list_s / agents * 1e6, 1)},
            "list_devices_answer_bytes": len(answer), "store_bytes": db.stat().st_size,
            "started_unix": started_unix, "ended_unix": started_unix + sweep_s}


def _shard(job: tuple) -> dict:
    return scheduler(*job)


def shards(root: Path, agents: int, jobs: int, batch: int, k: int, shared: bool = False) -> dict:
    """The same fleet split into ``k`` shards by host (each a ``Fleet`` in its own process, as shard actors
    would be), all running at once: jobs/s together. Each shard has a store file of its own, or (``shared``)
    all of them write one store file, as shard actors over today's single SQLite store would."""
    import multiprocessing

    db = root / f"fleet-{agents}-shared-{k}.sqlite" if shared else None
    if db is not None:
        Store(db).close()  # created (and migrated) once, before the shards open it
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(k) as pool:
        barrier = manager.Barrier(k)
        parts = pool.map(_shard, [(root, agents // k, jobs // k, batch, "current", f"-shard{i}", i * (agents // k),
                                   db, barrier) for i in range(k)])
    # from the first shard's sweep start to the last one's end: the shards start together but not at the same
    # instant, and a shard that ran while another was still registering its agents did not run side by side
    wall_s = max(p["ended_unix"] for p in parts) - min(p["started_unix"] for p in parts)
    done = sum(p["jobs"] for p in parts)
    return {"agents": agents, "variant": f"current, {k} shards" + (", one shared store" if shared else ""),
            "batch": batch, "jobs": done, "wall_s": round(wall_s, 2), "jobs_per_s": round(done / wall_s),
            "shards": parts}


def _device(d: dict):
    from fleetmeter.controller.convert import device_to_proto

    return device_to_proto(d)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default="1000,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--jobs", type=int, default=20000, help="jobs of the sweep at each size")
    parser.add_argument("--records", type=int, default=20000, help="records per transaction size (write rate)")
    parser.add_argument("--batch", type=int, default=100, help="results recorded per assign round")
    parser.add_argument("--variants", default="HEAD,current",
                        help="schedulers to compare: current (the working tree) and git revisions of "
                             "controller/fleet.py (default: %(default)s)")
    parser.add_argument("--shards", type=int, default=0,
                        help="also run each fleet size split into this many shards, in parallel processes")
    parser.add_argument("--quick", action="store_true", help="100 agents, 500 jobs, 500 records")
    _common.add_out_dir_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.jobs, args.records = "100", 500, 500
    started = time.time()
    machine = _common.machine_info()
    with tempfile.TemporaryDirectory(prefix="fleetmeter-capacity-") as tmp:
        writes = store_write_rate(Path(tmp), args.records)
        fleets = []
        for n in (int(x) for x in args.agents.split(",")):
            for variant in args.variants.split(","):
                fleets.append(scheduler(Path(tmp), n, args.jobs, args.batch, variant))
                f = fleets[-1]
                print(f"  fleet of {n} ({variant}): {f['jobs_per_s']} jobs/s (µs per job {f['us_per_job']}); "
                      f"µs per agent {f['us_per_agent']}", flush=True)
            for shared in ((False, True) if args.shards > 1 else ()):
                sharded = shards(Path(tmp), n, args.jobs, args.batch, args.shards, shared)
                fleets.append(sharded)
                print(f"  fleet of {n} in {args.shards} shards (processes, "
                      f"{'one shared store' if shared else 'own store each'}): "
                      f"{sharded['jobs_per_s']} jobs/s together", flush=True)
    payload = {"settings": {k: v for k, v in vars(args).items() if k != "out_dir"}, "store_writes": writes,
               "fleets": fleets, "machine": machine,
               "summary": {"load_average_at_end": _common.loadavg(), "wall_s": time.time() - started}}
    _common.write_and_close("fleet_capacity", payload, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
