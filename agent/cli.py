"""``fleetmeter-agent``: the device-side command line.

Subcommands::

    fleetmeter-agent probe [--json]          what this device is and can run
    fleetmeter-agent bench MODEL [...]       benchmark one model, here, now
    fleetmeter-agent run --controller ...    serve a controller (long-lived)

Exit codes: 0 success; 2 bad usage (argparse's code; also a missing model
file or a malformed ``--shape``/``--fill``); 3 the model cannot be
loaded or run here (the reason is one line on stderr; with ``--json`` the
failed reading is still printed on stdout).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from fleetmeter._version import __version__

__all__ = ["EXIT_MODEL_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "format_result", "main"]

logger = logging.getLogger(__name__)

PROG = "fleetmeter-agent"
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_MODEL_FAILED = 3


def _error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


# --------------------------------------------------------------------------
# Argument parsing


def parse_shape(text: str) -> Tuple[str, Tuple[int, ...]]:
    """``"NAME=1x3x224x224"`` (or ``1,3,224,224``) -> ``("NAME", (1, 3, 224, 224))``."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=DIMS such as input=1x3x224x224, got {text!r}")
    try:
        shape = tuple(int(d) for d in dims.replace(",", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad dimensions in {text!r}; expected e.g. 1x3x224x224") from None
    if any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"dimensions must be positive in {text!r}")
    return name, shape


def parse_fill(text: str) -> Tuple[str, float]:
    """``"NAME=VALUE"`` -> ``("NAME", VALUE)``."""
    name, sep, value = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE such as mask=1, got {text!r}")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad value in {text!r}; expected a number") from None


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    from .bench import BenchSettings

    d = BenchSettings()
    parser.add_argument("model", metavar="MODEL", help="model file (.onnx or .tflite)")
    parser.add_argument(
        "--runtime",
        choices=["onnxruntime", "litert"],
        help="runtime to use (default: from the file's content / extension)",
    )
    parser.add_argument("--threads", type=_positive_int, default=1, help="intra-op threads (default: 1)")
    parser.add_argument(
        "--provider",
        help="execution provider / delegate: onnxruntime CPU, CUDA...; "
        "LiteRT xnnpack (default), cpu, delegate:/path/lib.so",
    )
    parser.add_argument("--warmup", type=_non_negative_int, default=d.warmup_runs, metavar="N",
                        help=f"untimed warm-up runs after the first run (default: {d.warmup_runs})")
    parser.add_argument("--min-runs", type=_positive_int, default=d.min_runs, metavar="N",
                        help=f"minimum timed runs (default: {d.min_runs})")
    parser.add_argument("--min-duration-ms", type=_non_negative_float, default=d.min_duration_ms, metavar="MS",
                        help=f"minimum timed duration (default: {d.min_duration_ms:g})")
    parser.add_argument("--max-runs", type=_positive_int, default=d.max_runs, metavar="N",
                        help=f"cap on timed runs (default: {d.max_runs})")
    parser.add_argument("--max-duration-ms", type=_non_negative_float, default=d.max_duration_ms, metavar="MS",
                        help=f"cap on timed duration (default: {d.max_duration_ms:g})")
    parser.add_argument("--stable-rel-tol", type=_non_negative_float, default=d.stable_rel_tol, metavar="X",
                        help="stop early once the median of the last half of the samples is within this "
                        f"relative tolerance of the overall median (default: {d.stable_rel_tol:g})")
    parser.add_argument("--shape", type=parse_shape, action="append", default=[], metavar="NAME=DIMS",
                        help="input shape, e.g. input=1x3x224x224 (sets dynamic dims; repeatable)")
    parser.add_argument("--fill", type=parse_fill, action="append", default=[], metavar="NAME=VALUE",
                        help="fill an input with a constant instead of random data (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    parser.add_argument("--no-power", action="store_true", help="do not measure energy")
    parser.add_argument("--no-thermal", action="store_true", help="do not read temperatures")
    parser.add_argument("--json", action="store_true", help="print the full reading as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="fleetmeter device agent: probe this device, benchmark a model here, "
        "or serve measurement jobs from a fleetmeter controller.",
        epilog="exit codes: 0 ok, 2 usage error / missing file, 3 the model cannot run here",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: info, -vv: debug)")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    probe = sub.add_parser("probe", help="describe this device (hardware, runtimes, sensors)",
                           description="Describe this device: hardware, runtimes, sensors.")
    probe.add_argument("--json", action="store_true", help="print JSON")
    probe.set_defaults(func=_cmd_probe)

    bench = sub.add_parser(
        "bench",
        help="benchmark one model on this device",
        description="Benchmark one model here: load it, time a first run, warm up, then time runs "
        "until both --min-runs and --min-duration-ms are reached and the median is stable, "
        "capped by --max-runs / --max-duration-ms.",
    )
    _add_bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench)

    run = sub.add_parser("run", help="connect to a controller and serve measurement jobs",
                         description="Connect to a fleetmeter controller and serve measurement jobs.")
    try:
        from .runconfig import add_run_arguments
    except ImportError as exc:  # keep probe/bench usable on a partial install
        logger.debug("fleetmeter.agent.connection unavailable: %s", exc)
        run.set_defaults(func=lambda _args, _exc=exc: _unavailable("run", _exc))
    else:
        add_run_arguments(run)
        run.set_defaults(func=_cmd_run)
    return parser


# --------------------------------------------------------------------------
# Commands


def _cmd_probe(args: argparse.Namespace) -> int:
    try:
        from .probe import probe_device
    except ImportError as exc:
        return _unavailable("probe", exc)
    info = probe_device()
    if args.json:
        print(json.dumps(info.to_json_dict(), indent=2, sort_keys=True))
    elif hasattr(info, "format_text"):
        print(info.format_text())
    else:
        for key, value in info.to_json_dict().items():
            print(f"{key:<16} {value}")
    return EXIT_OK


def _default_power_sensor():
    try:
        from .power import default_power_sensor
    except ImportError as exc:
        logger.warning("no power sensing in this installation (%s); energy will be absent", exc)
        return None
    try:
        return default_power_sensor()
    except Exception:
        logger.warning("could not open a power sensor; energy will be absent", exc_info=True)
        return None


def _default_thermal_reader() -> Optional[Callable[[], Dict[str, float]]]:
    try:
        from .thermal import read_thermal_zones
    except ImportError as exc:
        logger.warning("no thermal sensing in this installation (%s); temperatures will be absent", exc)
        return None
    return read_thermal_zones


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchSettings, run_benchmark

    if not os.path.isfile(args.model):
        _error(f"no such model file: {args.model}")
        return EXIT_USAGE
    try:
        settings = BenchSettings(
            warmup_runs=args.warmup,
            min_runs=args.min_runs,
            min_duration_ms=args.min_duration_ms,
            max_runs=args.max_runs,
            max_duration_ms=args.max_duration_ms,
            stable_rel_tol=args.stable_rel_tol,
        )
    except ValueError as exc:
        _error(str(exc))
        return EXIT_USAGE
    shapes = dict(args.shape)
    fills = dict(args.fill)
    sensor = None if args.no_power else _default_power_sensor()
    read_temps = None if args.no_thermal else _default_thermal_reader()
    result = run_benchmark(
        args.model,
        runtime=args.runtime,
        threads=args.threads,
        provider=args.provider,
        settings=settings,
        shapes=shapes,
        fills=fills,
        power_sensor=sensor,
        read_temps=read_temps,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(result.to_json_dict(), indent=2))
    elif result.ok:
        print(format_result(result))
    if not result.ok:
        _error(f"cannot run {args.model}: {result.failure_message}")
        return EXIT_MODEL_FAILED
    return EXIT_OK


def _unavailable(command: str, exc: BaseException) -> int:
    _error(f"{command} is not available in this installation ({exc})")
    return 1


def _cmd_run(args: argparse.Namespace) -> int:
    from .connection import run_command

    return int(run_command(args) or 0)


# --------------------------------------------------------------------------
# Human output


def _mib(size_bytes: Optional[int]) -> str:
    return "n/a" if size_bytes is None else f"{size_bytes / 2**20:.1f} MiB"


def _temps(temps: Dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f} °C" for k, v in sorted(temps.items())) or "n/a"


def format_result(result) -> str:
    """A short human-readable summary of a successful :class:`BenchResult`."""
    lat = result.latency_ms or {}
    lines: List[str] = [
        f"model       {result.model_path}  (sha256 {result.model_sha256[:12]})",
        f"runtime     {result.runtime} {result.runtime_version}  provider {result.provider}  "
        f"threads {result.threads}",
        f"latency     median {lat['median']:.4f} ms  mean {lat['mean']:.4f}  p90 {lat['p90']:.4f}  "
        f"p99 {lat['p99']:.4f}  std {lat['std']:.4f}  (cv {lat['cv'] * 100:.1f}%)",
        f"            min {lat['min']:.4f} ms  max {lat['max']:.4f} ms  n {lat['n']}  "
        f"stopped: {result.stop_reason}",
        f"load        {result.load_ms:.2f} ms   first run {result.first_run_ms:.3f} ms",
        f"peak RSS    {_mib(result.peak_rss_bytes)}"
        + ("" if result.peak_rss_reset else "  (process lifetime peak)"),
    ]
    if result.energy_mj_per_inference is not None:
        power = "n/a" if result.avg_power_w is None else f"{result.avg_power_w:.2f} W"
        lines.append(
            f"energy      {result.energy_mj_per_inference:.4f} mJ/inference  avg power {power}  "
            f"({result.power_sensor})"
        )
    else:
        why = "no power sensor" if result.power_sensor is None else f"{result.power_sensor} gave no reading"
        lines.append(f"energy      not measured ({why})")
    lines.append(f"temps       before: {_temps(result.temps_c_before)}")
    lines.append(f"            after:  {_temps(result.temps_c_after)}")
    shapes = "  ".join(f"{k} {'x'.join(map(str, v))}" for k, v in result.input_shapes.items())
    lines.append(f"inputs      {shapes}")
    return "\n".join(lines)


# --------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    fmt = "%(levelname)s %(name)s: %(message)s"
    if args.command == "run":  # a long-running service: say what it does, with timestamps
        level, fmt = min(level, logging.INFO), "%(asctime)s " + fmt
    logging.basicConfig(level=level, stream=sys.stderr, format=fmt)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except BrokenPipeError:  # e.g. `fleetmeter-agent bench m.onnx | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
