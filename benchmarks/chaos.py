"""Chaos: random kill -9 of an agent, the fleet actor or the whole controller during sweeps.

A real controller (local Ray, SQLite) and two real agents (onnxruntime, 1 thread, one platform) measure
sweeps of short jobs while this script kills, at random moments, one of:

- ``agent``: one agent process (SIGKILL), restarted at once on the same data dir (its spool and identity);
- ``actor``: the fleet actor's Ray worker alone (SIGKILL): Ray restarts it empty and the gateway must register
  the connected agents again; measured: kill → the next job leased (target <= 10 s);
- ``controller``: the controller's whole process group (SIGKILL: gRPC, Ray, the actor), restarted on the same
  address and data dir; measured: controller answering → every agent connected again (target <= 5 s).

At the end every job of every sweep must have exactly one linked measurement or a recorded failure (lost =
jobs without, duplicated = jobs with more than one), the store passes ``PRAGMA integrity_check``, and
nothing stays pending or leased. Extra readings kept unlinked (a late result of a job another agent finished)
are counted, not failed.

    python benchmarks/chaos.py                 # 20 kills
    python benchmarks/chaos.py --kills 40 --seed 3
    python benchmarks/chaos.py --quick         # 3 kills, one of each kind (the test suite runs this)
"""
from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import _common
from fleetmeter.local_fleet import LocalFleet, wait_until
from fleetmeter.modeler.builtin import get_builtin_model
from fleetmeter.v1 import common_pb2, fleet_pb2

KINDS = ("agent", "actor", "controller")
AGENTS = ("a1", "a2")
SETTINGS = common_pb2.BenchSettings(warmup_runs=1, min_runs=5, min_duration_ms=200, max_duration_ms=600)
READING = common_pb2.ReadingSettings(sessions=1, max_sessions=1)


def _query(fleet: LocalFleet, sql: str, *args) -> list[dict]:
    db = sqlite3.connect(f"file:{fleet.data_dir / 'fleetmeter.sqlite'}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql, args).fetchall()]
    finally:
        db.close()


def _retry(fn, timeout_s: float = 120.0):
    """Call ``fn`` until it stops raising (the controller may be restarting)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except Exception:  # noqa: BLE001 - retried until the deadline
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def actor_pid(fleet: LocalFleet) -> int:
    """The fleet actor's Ray worker: a process of the controller's session whose command line names it."""
    sid = fleet.controller.popen.pid
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "FleetActor" in cmdline and os.getsid(int(entry.name)) == sid:
                return int(entry.name)
        except OSError:
            continue
    raise RuntimeError("no FleetActor worker found")


def connected(fleet: LocalFleet) -> set[str]:
    with fleet.client() as c:
        return {d.name for d in c.list_devices() if d.connected}


def submit(fleet: LocalFleet, sha: str, platform_id: str, repeats: int) -> str:
    def go() -> str:
        with fleet.client() as c:
            return c.submit_sweep(fleet_pb2.SweepSpec(
                models=[sha], repeats=repeats, settings=SETTINGS, reading=READING, repeat_sample=-1,
                platforms=fleet_pb2.PlatformSelector(platform_ids=[platform_id]))).sweep_id
    return _retry(go)


def open_jobs(fleet: LocalFleet, sweeps: list[str]) -> int:
    marks = ",".join("?" * len(sweeps))
    return _query(fleet, f"SELECT COUNT(*) AS n FROM jobs WHERE sweep_id IN ({marks})"
                         " AND state IN ('pending', 'leased')", *sweeps)[0]["n"]


def kill(fleet: LocalFleet, kind: str, agent_args: list[str], rng: random.Random) -> dict:
    t0 = time.time()
    event = {"kind": kind, "at_unix": t0}
    if kind == "agent":
        name = rng.choice(AGENTS)
        fleet.stop_agent(name, signal.SIGKILL)
        _retry(lambda: wait_until(lambda: name not in connected(fleet), 30, f"{name} seen gone"))
        fleet.start_agent(name, *agent_args)
        _retry(lambda: wait_until(lambda: name in connected(fleet), 60, f"{name} back"))
        event.update(agent=name, back_s=time.time() - t0)
    elif kind == "actor":
        os.kill(actor_pid(fleet), signal.SIGKILL)

        def leased_since() -> bool:
            return bool(_query(fleet, "SELECT 1 FROM jobs WHERE started_unix > ? LIMIT 1", t0))

        wait_until(leased_since, 60, "a job leased after the actor kill", poll_s=0.1)
        event["resume_s"] = time.time() - t0
    else:
        fleet.stop_controller(signal.SIGKILL)
        fleet.start_controller(fleet.address)
        ready = time.time()
        wait_until(lambda: set(AGENTS) <= _retry(lambda: connected(fleet)), 60, "agents back", poll_s=0.1)
        event.update(restart_s=ready - t0, agents_back_s=time.time() - ready)
    return event


def verify(fleet: LocalFleet, sweeps: list[str]) -> dict:
    marks = ",".join("?" * len(sweeps))
    jobs = _query(fleet, f"SELECT j.job_id, j.state, j.error, j.measurement_id, COUNT(m.measurement_id) AS linked"
                         f" FROM jobs j LEFT JOIN measurements m ON m.job_id = j.job_id WHERE j.sweep_id IN ({marks})"
                         " GROUP BY j.job_id", *sweeps)
    lost = [j for j in jobs if not ((j["state"] == "done" and j["linked"] == 1)
                                    or (j["state"] == "failed" and j["error"]))]
    duplicated = [j for j in jobs if j["linked"] > 1]
    unlinked = _query(fleet, f"SELECT COUNT(*) AS n FROM measurements WHERE sweep_id IN ({marks}) AND"
                             " (job_id IS NULL OR job_id = '')", *sweeps)[0]["n"]
    db = sqlite3.connect(f"file:{fleet.data_dir / 'fleetmeter.sqlite'}?mode=ro", uri=True)
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()
    return {"jobs": len(jobs), "done": sum(j["state"] == "done" for j in jobs),
            "failed": sum(j["state"] == "failed" for j in jobs), "lost": len(lost), "duplicated": len(duplicated),
            "unlinked_extra_readings": unlinked, "integrity": integrity,
            "lost_jobs": lost[:10], "duplicated_jobs": duplicated[:10],
            "failures": sorted({(j["error"] or "")[:120] for j in jobs if j["state"] == "failed"})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="random kills (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="3 kills, one of each kind, a small sweep")
    ap.add_argument("--gap-s", type=float, nargs=2, default=(2.0, 6.0), metavar=("MIN", "MAX"),
                    help="random pause between kills (default: 2 6)")
    _common.add_out_dir_argument(ap)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    kinds = list(KINDS) if args.quick else [rng.choice(KINDS) for _ in range(args.kills)]
    if not args.quick:
        for i, kind in enumerate(KINDS):  # every kind at least once
            if kind not in kinds:
                kinds[i] = kind
    repeats = 12 if args.quick else 40
    machine = _common.machine_info()
    started = time.time()
    events: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="fm-chaos-") as tmp:
        fleet = LocalFleet(Path(tmp), agent_token=secrets.token_hex(8), api_token=secrets.token_hex(8),
                           lease_timeout_s=6.0, heartbeat_s=1.0)
        with fleet:
            fleet.start_controller(None, 180.0)
            agent_args = ["--runtime", "onnxruntime", "--threads", "1"]
            for name in AGENTS:
                fleet.start_agent(name, *agent_args)
            fleet.wait_agents_connected(list(AGENTS))
            with fleet.client() as c:
                sha = c.upload_model(get_builtin_model("tiny_mlp", "onnx").path).model.sha256
                platform_id = next(d.platform_ids[0] for d in c.list_devices() if d.name == "a1")
            sweeps = [submit(fleet, sha, platform_id, repeats)]
            for i, kind in enumerate(kinds):
                time.sleep(rng.uniform(*args.gap_s))
                if open_jobs(fleet, sweeps) < 5:
                    sweeps.append(submit(fleet, sha, platform_id, repeats))
                event = kill(fleet, kind, agent_args, rng)
                events.append(event)
                print(f"kill {i + 1}/{len(kinds)}: {kind} "
                      + " ".join(f"{k}={v:.2f}" for k, v in event.items() if k.endswith("_s")), flush=True)
            wait_until(lambda: open_jobs(fleet, sweeps) == 0, 600, "every sweep to finish", poll_s=0.5)
            result = verify(fleet, sweeps)
    resume = [e["resume_s"] for e in events if "resume_s" in e]
    back = [e["agents_back_s"] for e in events if "agents_back_s" in e]
    payload = {
        "benchmark": "chaos", "machine": machine, "seed": args.seed, "kills": len(events),
        "kills_by_kind": {k: sum(e["kind"] == k for e in events) for k in KINDS},
        "sweeps": len(sweeps), **result,
        "actor_kill_resume_s": {"max": max(resume, default=None), "median": _common.median(resume) if resume else None,
                                "target_max": 10.0},
        "controller_restart_agents_back_s": {"max": max(back, default=None),
                                             "median": _common.median(back) if back else None, "target_max": 5.0},
        "events": events, "wall_s": round(time.time() - started, 1),
    }
    path = _common.write_json("chaos", payload, args.out_dir)
    print(_common.table(["kills", "jobs", "lost", "duplicated", "unlinked extra", "integrity",
                         "actor→resume max s", "restart→agents back max s"],
                        [(len(events), result["jobs"], result["lost"], result["duplicated"],
                          result["unlinked_extra_readings"], result["integrity"],
                          f"{max(resume):.1f}" if resume else "-", f"{max(back):.1f}" if back else "-")]))
    print(f"wrote {path}")
    ok = (result["lost"] == 0 and result["duplicated"] == 0 and result["integrity"] == "ok"
          and (not resume or max(resume) <= 10.0) and (not back or max(back) <= 5.0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
