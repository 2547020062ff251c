#!/usr/bin/env python
"""Controller memory under rejected model uploads: does a large upload stay out of the controller's RSS?

1. A real controller (``LocalFleet``: ``fleetmeter controller`` with its local
   Ray, as a subprocess) is started, and one small real model is uploaded
   (warms the upload path and starts the Ray worker that inspects models).
2. Baseline: the controller process's ``VmRSS`` and that of every Ray worker
   (processes under the controller whose title starts with ``ray::``) from
   /proc, after a short settle.
3. (a) One upload of ``--size-mb`` MiB of random bytes, streamed from a
   generator in 1 MiB chunks (the client never holds it either), which the
   controller must refuse (``INVALID_ARGUMENT``: not a model); then
   (b) ``--repeat`` more of them in a row. After each phase the processes are
   read again; during the uploads a thread samples the controller's VmRSS
   every 20 ms for its peak.

The controller streams an upload into a staging file while hashing it; a Ray
worker parses that file (its memory is reported apart, and is not the
controller's). Target: controller RSS after (a) and after (b), and its peak
during them, at most 64 MiB above the baseline.

    python benchmarks/upload_rss.py                 # ~1 min: 300 MiB, then 4 more
    python benchmarks/upload_rss.py --size-mb 1000 --repeat 2
    python benchmarks/upload_rss.py --quick         # ~20 s smoke run (16 MiB)
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

NAME = "upload_rss"
TARGET_MIB = 64.0
MIB = 2 ** 20
CHUNK_BYTES = MIB


# ------------------------------------------------------------------------------------------------ /proc
def rss_bytes(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int) -> List[int]:
    """Every process below ``root`` (from the ppid field of /proc/*/stat)."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def snapshot(controller_pid: int) -> Dict[str, Any]:
    """The controller's RSS, and each Ray worker's (by title), in bytes."""
    workers = {}
    for pid in descendants(controller_pid):
        title = _title(pid)
        if title.startswith("ray::"):
            rss = rss_bytes(pid)
            if rss is not None:
                workers[f"{title.split()[0]} (pid {pid})"] = rss
    return {"controller": rss_bytes(controller_pid), "ray_workers": workers}


class PeakSampler:
    """VmRSS of one process every ``interval_s`` on a thread, keeping the peak."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid, self.interval_s, self.peak = pid, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid) or 0)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------------------ uploads
def random_upload(size_bytes: int, name: str) -> Iterator[Any]:
    """Header, then ``size_bytes`` of random bytes in 1 MiB chunks (each drawn afresh; nothing kept)."""
    from fleetmeter.v1 import fleet_pb2

    yield fleet_pb2.UploadModelRequest(header=fleet_pb2.ModelUploadHeader(name=name, size_bytes=size_bytes))
    sent = 0
    while sent < size_bytes:
        n = min(CHUNK_BYTES, size_bytes - sent)
        yield fleet_pb2.UploadModelRequest(chunk=os.urandom(n))
        sent += n


def rejected_upload(stub, token: str, size_bytes: int, name: str) -> Dict[str, Any]:
    import grpc

    from fleetmeter import _net

    started = time.monotonic()
    try:
        stub.UploadModel(random_upload(size_bytes, name), metadata=_net.bearer(token), timeout=600)
    except grpc.RpcError as exc:
        code, details = exc.code().name, exc.details()
    else:
        code, details = "OK", "accepted (random bytes should have been refused)"
    return {"name": name, "size_mib": size_bytes / MIB, "seconds": round(time.monotonic() - started, 2),
            "status": code, "details": (details or "")[:160]}


# ------------------------------------------------------------------------------------------------ main
def run(size_mb: int, repeat: int, settle_s: float) -> Dict[str, Any]:
    from fleetmeter import _net
    from fleetmeter.client import FleetClient
    from fleetmeter.local_fleet import LocalFleet
    from fleetmeter.modeler.builtin import get_builtin_model
    from fleetmeter.v1 import fleet_pb2_grpc

    size_bytes = size_mb * MIB
    token = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="upload-rss-") as tmp:
        fleet = LocalFleet(Path(tmp) / "fleet", api_token=token, agent_token=secrets.token_hex(8))
        try:
            print("upload_rss: starting a controller (local Ray) ...", file=sys.stderr)
            fleet.start_controller()
            pid = fleet.controller.popen.pid
            with FleetClient(fleet.address, token=token) as c:
                c.upload_model(get_builtin_model("tiny_mlp", "onnx").path)  # warm-up: upload path, Ray worker
            time.sleep(settle_s)
            phases: List[Dict[str, Any]] = [{"phase": "baseline (after a small valid upload)", **snapshot(pid)}]
            uploads: List[Dict[str, Any]] = []
            channel = _net.open_channel(fleet.address)
            stub = fleet_pb2_grpc.FleetServiceStub(channel)
            try:
                with PeakSampler(pid) as peak_a:
                    print(f"upload_rss: (a) one rejected {size_mb} MiB upload ...", file=sys.stderr)
                    uploads.append(rejected_upload(stub, token, size_bytes, "random-a.onnx"))
                time.sleep(settle_s)
                phases.append({"phase": f"after (a) one rejected {size_mb} MiB upload", **snapshot(pid),
                               "controller_peak": peak_a.peak})
                with PeakSampler(pid) as peak_b:
                    for i in range(repeat):
                        print(f"upload_rss: (b) rejected upload {i + 1}/{repeat} ...", file=sys.stderr)
                        uploads.append(rejected_upload(stub, token, size_bytes, f"random-b{i + 1}.onnx"))
                time.sleep(settle_s)
                phases.append({"phase": f"after (b) {repeat} more in a row", **snapshot(pid),
                               "controller_peak": peak_b.peak})
            finally:
                channel.close()
            leftovers = sorted(p.name for p in (fleet.data_dir / "blobs").glob(".upload-*"))
        finally:
            fleet.close()
    base = phases[0]["controller"]
    deltas = {
        "after_a_mib": (phases[1]["controller"] - base) / MIB,
        "peak_during_a_mib": (phases[1]["controller_peak"] - base) / MIB,
        "after_b_mib": (phases[2]["controller"] - base) / MIB,
        "peak_during_b_mib": (phases[2]["controller_peak"] - base) / MIB,
    }
    return {"size_mib": size_mb, "repeat": repeat, "target_mib": TARGET_MIB, "phases": phases, "uploads": uploads,
            "controller_delta": {k: round(v, 1) for k, v in deltas.items()},
            "all_rejected": all(u["status"] == "INVALID_ARGUMENT" for u in uploads),
            "staging_files_left": leftovers,
            "meets_target": all(v <= TARGET_MIB for v in deltas.values())
            and all(u["status"] == "INVALID_ARGUMENT" for u in uploads) and not leftovers}


def report(result: Dict[str, Any]) -> str:
    def mib(n: Optional[int]) -> str:
        return "-" if n is None else f"{n / MIB:.1f}"

    lines = [f"Rejected uploads of {result['size_mib']} MiB of random bytes (1 MiB chunks from a generator)", ""]
    lines.append(_common.table(["UPLOAD", "MIB", "SECONDS", "STATUS", "DETAILS"], [
        (u["name"], f"{u['size_mib']:.0f}", u["seconds"], u["status"], u["details"][:70]) for u in result["uploads"]]))
    phases = result["phases"]
    workers = sorted({w for p in phases for w in p["ray_workers"]})
    lines += ["", "RSS in MiB: the controller process alone, then each Ray process under it (the model inspection",
              "runs in a ray:: worker, IDLE between tasks)", ""]
    lines.append(_common.table(["PROCESS", "BASELINE", "AFTER (a)", "AFTER (b)"], [
        ("controller", *(mib(p["controller"]) for p in phases)),
        ("controller, peak while uploading", "-", *(mib(p.get("controller_peak")) for p in phases[1:])),
        *((w, *(mib(p["ray_workers"].get(w)) for p in phases)) for w in workers)]))
    d = result["controller_delta"]
    lines += ["", _common.table(["CONTROLLER RSS vs BASELINE", "MIB", f"TARGET <= {TARGET_MIB:.0f} MIB"], [
        (label, f"{d[key]:+.1f}", "ok" if d[key] <= TARGET_MIB else "MISSED")
        for label, key in (("after (a)", "after_a_mib"), ("peak during (a)", "peak_during_a_mib"),
                           ("after (b)", "after_b_mib"), ("peak during (b)", "peak_during_b_mib"))])]
    lines += ["", f"every upload refused with INVALID_ARGUMENT: {result['all_rejected']}; staging files left in the "
                  f"blob folder: {len(result['staging_files_left'])}; target met: {result['meets_target']}"]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=300, help="size of each rejected upload in MiB (default 300)")
    parser.add_argument("--repeat", type=int, default=4, help="uploads in phase (b) (default 4)")
    parser.add_argument("--settle-s", type=float, default=2.0, help="pause before each reading (default 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 16 MiB, 2 in phase (b)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    _common.add_out_dir_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mb, args.repeat, args.settle_s = 16, 2, 0.5
    if args.size_mb < 1 or args.repeat < 1:
        parser.error("--size-mb and --repeat must be >= 1")
    measured = run(args.size_mb, args.repeat, args.settle_s)
    result = {"benchmark": NAME, "quick": args.quick, "machine": _common.machine_info(),
              "settings": {"size_mib": args.size_mb, "repeat": args.repeat, "settle_s": args.settle_s,
                           "chunk_bytes": CHUNK_BYTES},
              "summary": {"controller_delta_mib": measured["controller_delta"], "target_mib": TARGET_MIB,
                          "all_rejected": measured["all_rejected"],
                          "staging_files_left": len(measured["staging_files_left"]),
                          "meets_target": measured["meets_target"]},
              **measured}
    path = _common.write_json(NAME, result, args.out_dir)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(report(result))
        print(f"\n(full result: {path})")
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
