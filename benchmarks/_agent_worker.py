"""The agent side of fidelity.py: ``run_benchmark`` exactly as ``fleetmeter-agent bench`` calls it.

    python benchmarks/_agent_worker.py {onnxruntime,litert} MODEL [--warmup W] [--seed S]

Serves blocks: reads one JSON line ``{"runs": N}`` from stdin per block,
runs one full benchmark (load, first run, W warm-up runs, N timed runs with
the agent's own timed loop) and answers one JSON line. EOF ends it.

Each block is one ``run_benchmark(...)`` call with the arguments
``fleetmeter.agent.cli._cmd_bench`` passes (the default power sensor and
thermal reader included), settings ``--min-runs N --max-runs N
--min-duration-ms 0`` so that the loop is a fixed count. A long-lived process
serving one benchmark after another is also what ``fleetmeter-agent run``
does with the jobs it gets.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main(argv=None) -> int:
    p = _common.model_worker_parser(__doc__)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from fleetmeter.agent.bench import BenchSettings, run_benchmark
    from fleetmeter.agent.cli import _default_power_sensor, _default_thermal_reader

    sensor = _default_power_sensor()
    read_temps = _default_thermal_reader()
    for line in sys.stdin:
        if not line.strip():
            continue
        runs = int(json.loads(line)["runs"])
        settings = BenchSettings(warmup_runs=args.warmup, min_runs=runs, min_duration_ms=0.0, max_runs=runs,
                                 max_duration_ms=3_600_000.0)
        result = run_benchmark(args.model, runtime=args.runtime, threads=args.threads, provider=None,
                               settings=settings, shapes={}, fills={}, power_sensor=sensor,
                               read_temps=read_temps, seed=args.seed)
        if not result.ok:
            out = {"error": f"{result.failure_kind}: {result.failure_message}"}
        else:
            lat = result.latency_ms
            out = {"median": lat["median"], "mean": lat["mean"], "min": lat["min"], "n": lat["n"],
                   "stop_reason": result.stop_reason, "cpu_affinity": result.cpu_affinity,
                   "input_shapes": result.input_shapes, "power_sensor": result.power_sensor,
                   "runtime_version": result.runtime_version, "load_ms": result.load_ms}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
