#!/usr/bin/env python
"""Agent memory footprint: idle RSS of a connected agent vs a bare Python with the same runtimes.

1. A real controller (``LocalFleet``: ``fleetmeter controller`` with its local
   Ray, as a subprocess) and one real agent (``fleetmeter-agent run``,
   default flags: every installed runtime, 1 thread) are started; once the
   controller lists the agent as connected, and after a settle time, the
   agent process's ``VmRSS`` (and RssAnon / RssFile / Pss / threads) is read
   from /proc/PID/status a few times.
2. The baseline, in parallel: a bare ``python -c "import onnxruntime;
   from ai_edge_litert import interpreter"`` that then idles, read the same way.
3. Breakdown: cumulative import steps, each in a fresh process
   (python -> +numpy -> +onnxruntime -> +LiteRT (= the baseline) -> +grpc ->
   +fleetmeter protos -> +fleetmeter.agent modules -> +Agent() constructed
   (device probe, runtime discovery, sensors)), each reading its own VmRSS
   after ``gc.collect()`` and a short settle; the last row is the real,
   connected agent from step 1. The step-to-step differences say what costs
   the memory. Sizes are MiB (2**20 bytes).

Target: agent RSS - baseline RSS <= 20 MiB.

    python benchmarks/footprint.py           # 1-2 min (Ray start/stop, breakdown processes)
    python benchmarks/footprint.py --quick   # ~25 s
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

NAME = "footprint"
TARGET_MIB = 20.0
MIB = 2 ** 20

BASELINE_CODE = "import onnxruntime\nfrom ai_edge_litert import interpreter\n"

# Cumulative breakdown steps: (label, code added at this step).
STEPS = [
    ("python", ""),
    ("+ numpy", "import numpy"),
    ("+ onnxruntime", "import onnxruntime"),
    ("+ ai_edge_litert.interpreter (= baseline)", "from ai_edge_litert import interpreter"),
    ("+ grpc", "import grpc"),
    ("+ protobuf + fleetmeter.v1 messages", "from fleetmeter.v1 import agent_pb2, agent_pb2_grpc, common_pb2"),
    ("+ fleetmeter.agent modules (cli, connection, bench, probe, power, thermal)",
     "import fleetmeter.agent.cli, fleetmeter.agent.connection, fleetmeter.agent.bench, "
     "fleetmeter.agent.probe, fleetmeter.agent.power, fleetmeter.agent.thermal"),
    ("+ Agent() constructed (probe, runtime discovery, sensors; not connected)",
     "import tempfile\nfrom pathlib import Path\nfrom fleetmeter.agent.connection import Agent, AgentConfig\n"
     "_agent = Agent(AgentConfig(data_dir=Path(tempfile.mkdtemp(prefix='fp-agent-')), name='footprint-step'))"),
]

# Appended to every step / the baseline: report (or wait, then report) this process's memory.
READ_SELF = textwrap.dedent("""
    import gc as _gc, json as _json, sys as _sys, time as _time
    _gc.collect()
    _time.sleep({settle})
    _f = {{}}
    for _line in open('/proc/self/status'):
        _k, _, _v = _line.partition(':')
        _f[_k] = _v.strip()
    print(_json.dumps(_f), flush=True)
""")


def read_status(pid: int) -> Dict[str, Any]:
    """Memory fields of /proc/PID/status (KiB -> bytes) plus Pss from smaps_rollup."""
    fields: Dict[str, Any] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return _status_fields(fields, pid)


def _kib(text: Optional[str]) -> Optional[int]:
    if not text:
        return None
    parts = text.split()
    return int(parts[0]) * 1024 if parts and parts[0].isdigit() else None


def _status_fields(fields: Dict[str, str], pid: Optional[int] = None) -> Dict[str, Any]:
    out = {k.lower(): _kib(fields.get(k)) for k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")}
    out["threads"] = int(fields["Threads"]) if fields.get("Threads", "").isdigit() else None
    out["pss"] = None
    if pid is not None:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        out["pss"] = _kib(line.split(":", 1)[1])
                        break
        except OSError:
            pass
    return out


def sample(pid: int, n: int, interval_s: float) -> List[Dict[str, Any]]:
    out = []
    for i in range(n):
        if i:
            time.sleep(interval_s)
        out.append(read_status(pid))
    return out


def summarize(samples: List[Dict[str, Any]]) -> Dict[str, Any]:
    def med(key):
        vals = [s[key] for s in samples if s.get(key) is not None]
        return _common.median(vals) / MIB if vals else None

    return {"vmrss_mib": med("vmrss"), "rss_anon_mib": med("rssanon"), "rss_file_mib": med("rssfile"),
            "pss_mib": med("pss"), "vm_hwm_mib": med("vmhwm"),
            "vmrss_min_mib": min(s["vmrss"] for s in samples) / MIB,
            "vmrss_max_mib": max(s["vmrss"] for s in samples) / MIB,
            "threads": samples[-1]["threads"], "samples": len(samples)}


def start_baseline() -> subprocess.Popen:
    code = BASELINE_CODE + "import sys\nprint('ready', flush=True)\nsys.stdin.read()\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=_common.worker_env())
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("baseline process failed to start")
    return proc


def breakdown(repeats: int, settle_s: float) -> List[Dict[str, Any]]:
    rows = []
    code = ""
    for label, step in STEPS:
        code += step + "\n"
        runs = []
        for _ in range(repeats):
            proc = subprocess.run([sys.executable, "-c", code + READ_SELF.format(settle=settle_s)],
                                  capture_output=True, text=True, timeout=120, env=_common.worker_env())
            if proc.returncode != 0:
                raise RuntimeError(f"breakdown step {label!r} failed:\n{proc.stderr[-2000:]}")
            runs.append(_status_fields(json.loads(proc.stdout.strip().splitlines()[-1])))
        rows.append({"step": label, "code": step, **summarize(runs)})
    return rows


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Idle RSS of a connected agent vs bare Python + runtimes "
                                            f"(target: <= +{TARGET_MIB:g} MiB).",
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke mode: shorter settle, fewer samples, "
                                                        "breakdown measured once per step")
    p.add_argument("--settle-s", type=float, default=None, help="idle time before sampling (default 5; quick 1)")
    p.add_argument("--samples", type=int, default=None, help="RSS readings per process (default 5; quick 3)")
    p.add_argument("--no-breakdown", action="store_true", help="skip the per-import breakdown")
    _common.add_out_dir_argument(p)
    return p.parse_args(argv)


def measure_connected_agent(settle_s: float, n_samples: int, interval_s: float) -> Dict[str, Any]:
    """Steps 1-2: a controller, one connected agent and the baseline process, each read ``n_samples`` times.

    Returns ``agent_samples``, ``base_samples`` (:func:`read_status` each) and ``idle_s`` (connected ->
    last reading)."""
    from fleetmeter.local_fleet import LocalFleet

    with tempfile.TemporaryDirectory(prefix="fleetmeter-footprint-") as tmp:
        fleet = LocalFleet(Path(tmp) / "fleet")
        baseline = None
        try:
            print("footprint: starting a controller (local Ray) ...", file=sys.stderr)
            fleet.start_controller()
            agent = fleet.start_agent("footprint-agent")
            baseline = start_baseline()
            fleet.wait_agents_connected(["footprint-agent"])
            connected_at = time.monotonic()
            print(f"footprint: agent connected; idling {settle_s:g} s, then {n_samples} readings",
                  file=sys.stderr)
            time.sleep(settle_s)
            agent_samples, base_samples = [], []
            for i in range(n_samples):
                if i:
                    time.sleep(interval_s)
                agent_samples.append(read_status(agent.popen.pid))
                base_samples.append(read_status(baseline.pid))
            idle_s = time.monotonic() - connected_at
            with fleet.client() as c:
                connected = [d.name for d in c.list_devices() if d.connected]
            if "footprint-agent" not in connected:
                raise RuntimeError("the agent was not connected while it was measured")
        finally:
            if baseline is not None:
                baseline.stdin.close()
                baseline.wait(30)
            fleet.close()
    return {"agent_samples": agent_samples, "base_samples": base_samples, "idle_s": idle_s}


def breakdown_with_agent(quick: bool, agent_sum: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Step 3: the cumulative import steps, the connected agent last, each with its delta to the one before."""
    print("footprint: breakdown (one fresh process per cumulative step) ...", file=sys.stderr)
    steps = breakdown(1 if quick else 3, 0.2 if quick else 1.0)
    steps.append({"step": "real agent, connected and idle (fleetmeter-agent run)", "code": "",
                  **agent_sum})
    for prev, s in zip([None] + steps[:-1], steps):
        s["delta_mib"] = None if prev is None else s["vmrss_mib"] - prev["vmrss_mib"]
        s["delta_anon_mib"] = None if prev is None else s["rss_anon_mib"] - prev["rss_anon_mib"]
    return steps


def _mib(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.1f}"


def print_report(agent_sum: Dict[str, Any], base_sum: Dict[str, Any], steps: List[Dict[str, Any]],
                 summary: Dict[str, Any]) -> None:
    f = _mib
    print(_common.table(["PROCESS", "VmRSS MiB", "RssAnon", "RssFile", "Pss", "THREADS"], [
        ("agent (connected, idle)", f(agent_sum["vmrss_mib"]), f(agent_sum["rss_anon_mib"]),
         f(agent_sum["rss_file_mib"]), f(agent_sum["pss_mib"]), agent_sum["threads"]),
        ("baseline (python + onnxruntime + LiteRT)", f(base_sum["vmrss_mib"]), f(base_sum["rss_anon_mib"]),
         f(base_sum["rss_file_mib"]), f(base_sum["pss_mib"]), base_sum["threads"]),
    ]))
    verdict = "within" if summary["within_target"] else f"OVER by {summary['over_target_by_mib']:.1f} MiB"
    print(f"\nagent - baseline: {summary['difference_mib']:+.1f} MiB VmRSS "
          f"({summary['difference_anon_mib']:+.1f} MiB anonymous); target <= +{TARGET_MIB:g} MiB: {verdict}")
    if steps:
        print("\nBreakdown (cumulative; each step a fresh process; DELTA = added by that step):")
        print(_common.table(["STEP", "VmRSS MiB", "DELTA", "ANON DELTA", "THREADS"], [
            (s["step"], f(s["vmrss_mib"]), f(s["delta_mib"]), f(s["delta_anon_mib"]), s["threads"]) for s in steps]))


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse_args(argv)
    settle_s = args.settle_s if args.settle_s is not None else (1.0 if args.quick else 5.0)
    n_samples = args.samples or (3 if args.quick else 5)
    interval_s = 0.5 if args.quick else 1.0

    started = time.monotonic()
    machine = _common.machine_info()
    measured = measure_connected_agent(settle_s, n_samples, interval_s)
    agent_sum = summarize(measured["agent_samples"])
    base_sum = summarize(measured["base_samples"])
    diff = agent_sum["vmrss_mib"] - base_sum["vmrss_mib"]
    steps: List[Dict[str, Any]] = [] if args.no_breakdown else breakdown_with_agent(args.quick, agent_sum)

    summary = {
        "agent_vmrss_mib": agent_sum["vmrss_mib"],
        "baseline_vmrss_mib": base_sum["vmrss_mib"],
        "difference_mib": diff,
        "difference_anon_mib": agent_sum["rss_anon_mib"] - base_sum["rss_anon_mib"],
        "target_mib": TARGET_MIB,
        "within_target": diff <= TARGET_MIB,
        "over_target_by_mib": max(0.0, diff - TARGET_MIB),
        "agent_threads": agent_sum["threads"],
        "baseline_threads": base_sum["threads"],
        "wall_s": round(time.monotonic() - started, 1),
        "load_average_at_end": _common.loadavg(),
    }
    payload = {
        "benchmark": NAME, "quick": args.quick, "machine": machine,
        "settings": {"settle_s": settle_s, "samples": n_samples, "interval_s": interval_s, "unit": "MiB",
                     "agent_command": "fleetmeter-agent run --controller ADDR --name footprint-agent --data-dir DIR",
                     "baseline_code": BASELINE_CODE,
                     "agent_idle_s_at_last_reading": round(measured["idle_s"], 1)},
        "agent": agent_sum, "baseline": base_sum, "breakdown": steps, "summary": summary,
    }
    print_report(agent_sum, base_sum, steps, summary)
    _common.write_and_close(NAME, payload, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
