"""``fleetmeter demo``: the whole measuring half on one machine, in about a minute.

A controller (with its local Ray) and three agents start as real processes:
onnxruntime with 1 thread, onnxruntime with 2 threads and LiteRT with 1
thread — three platforms. The built-in models (ONNX and TFLite emissions of
the same small CNNs) are uploaded, one sweep measures each on every platform
that can run it, and a table of median latency per model and platform is
printed. Everything the demo started is stopped at the end, also on Ctrl-C.
"""
from __future__ import annotations

import json
import logging
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

DEMO_AGENTS = (
    ("demo-onnxruntime-t1", ("--runtime", "onnxruntime", "--threads", "1")),
    ("demo-onnxruntime-t2", ("--runtime", "onnxruntime", "--threads", "2")),
    ("demo-litert-t1", ("--runtime", "litert", "--threads", "1")),
)


@dataclass(frozen=True)
class DemoConfig:
    json_output: bool = False
    data_dir: Optional[str] = None
    min_duration_ms: float = 300.0
    #: Also write ``fleetmeter report``'s HTML page of the run here (while the controller is still up).
    report: Optional[str] = None


def _say(config: DemoConfig, text: str) -> None:
    if not config.json_output:
        print(text, file=sys.stderr, flush=True)


def run_demo(config: DemoConfig) -> int:
    from fleetmeter._cli_common import result_rows, wait_for_sweep
    from fleetmeter.local_fleet import LocalFleet
    from fleetmeter.modeler.builtin import list_builtin_models
    from fleetmeter.v1 import common_pb2, fleet_pb2

    if config.report:
        from fleetmeter.report import check_out_path, require_plotly

        require_plotly()  # before a minute of measuring: the error names the extra
        check_out_path(config.report)
    started = time.monotonic()
    tmp = None if config.data_dir else tempfile.TemporaryDirectory(prefix="fleetmeter-demo-")
    root = Path(config.data_dir or tmp.name)
    fleet = LocalFleet(root, agent_token=secrets.token_urlsafe(16), api_token=secrets.token_urlsafe(16))
    try:
        _say(config, "starting the controller (local Ray) ...")
        # The drift canary stays on (the path users take): one reference reading per platform at connect.
        address = fleet.start_controller()
        _say(config, f"controller on {address}; starting 3 agents ...")
        for name, args in DEMO_AGENTS:
            fleet.start_agent(name, *args)
        fleet.wait_agents_connected([name for name, _ in DEMO_AGENTS])
        with fleet.client() as client:
            platform_ids = sorted({pid for d in client.list_devices() for pid in d.platform_ids})
            models = list_builtin_models()
            _say(config, f"uploading {len(models)} built-in models ...")
            shas = [client.upload_model(m.path, name=m.path.name).model.sha256 for m in models]
            sweep = client.submit_sweep(fleet_pb2.SweepSpec(
                name="demo", models=shas, platforms=fleet_pb2.PlatformSelector(platform_ids=platform_ids),
                repeat_sample=-1.0,  # one measurement per model and platform: the table has one cell each
                settings=common_pb2.BenchSettings(warmup_runs=5, min_runs=20,
                                                  min_duration_ms=config.min_duration_ms,
                                                  max_duration_ms=max(5000.0, 4 * config.min_duration_ms))))
            _say(config, f"sweep {sweep.sweep_id}: {sweep.progress.total} measurements on "
                         f"{len(platform_ids)} platforms (the agents share this host, so they take turns: "
                         "one measurement at a time, never disturbing each other)")
            wait_for_sweep(client, sweep.sweep_id, quiet=config.json_output)
            measurements = client.list_measurements(sweep_id=sweep.sweep_id)
            rows = result_rows(measurements, client.list_models())
            short = {d.platform_ids[0]: d.name.replace("demo-", "") for d in client.list_devices() if d.platform_ids}
            if config.report:
                from fleetmeter.report import write_report

                _say(config, f"writing the report to {config.report} ...")
                write_report(client, config.report, sweep_id=sweep.sweep_id, quiet=config.json_output)
    except KeyboardInterrupt:
        _say(config, "interrupted; stopping everything")
        return 130
    finally:
        fleet.close()
        if tmp is not None:
            tmp.cleanup()
    if config.json_output:
        by_id = {m.measurement_id: m for m in measurements}
        out = []
        for r in rows:
            m = by_id[r["measurement_id"]]
            item = {"model": r["model"], "platform": r["platform"], "runtime": r["runtime"],
                    "threads": r["threads"], "latency_ms": None, "failure_kind": r["failure_kind"]}
            if not r["failure_kind"]:
                item["latency_ms"] = {k: getattr(m.latency_ms, k) for k in
                                      ("median", "mean", "p90", "p99", "std", "min", "max", "n")}
            out.append(item)
        print(json.dumps(out, indent=2))
    else:
        print(_pivot(rows, short))
        _say(config, f"done in {time.monotonic() - started:.0f} s "
                     f"({sum(1 for r in rows if not r['failure_kind'])} measurements, "
                     f"{sum(1 for r in rows if r['failure_kind'])} failures)")
    return 0 if rows and not any(r["failure_kind"] for r in rows) else 1


def _pivot(rows: list[dict], short: dict) -> str:
    """Median latency (ms): one row per model (both formats), one column per platform."""
    from fleetmeter._term import fmt_ms, table

    platforms = sorted({r["platform"] for r in rows}, key=lambda p: short.get(p, p))
    models = sorted({Path(r["model"]).stem for r in rows})
    cell = {}
    for r in rows:
        text = fmt_ms(r["median_ms"]) if not r["failure_kind"] else f"FAILED ({r['failure_kind']})"
        cell[(Path(r["model"]).stem, r["platform"])] = text
    lines = [table(["MODEL"] + [short.get(p, p) + " (median ms)" for p in platforms],
                   [[m] + [cell.get((m, p), "n/a") for p in platforms] for m in models])]
    lines.append("")
    lines += [f"{short.get(p, p)} = {p}" for p in platforms]
    return "\n".join(lines)
