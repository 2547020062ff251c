"""Configuration of ``fleetmeter-agent run``: the frozen config and its flags.

Kept apart from the connection code so that parsing the device CLI's flags
(``bench``, ``probe``) loads no gRPC.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fleetmeter import _net
from fleetmeter._term import key_value_arg

from .cache import DEFAULT_CACHE_BYTES

# The default provider/delegate of each runtime, as platforms name it.
DEFAULT_PROVIDER = {"onnxruntime": "CPUExecutionProvider", "litert": "xnnpack"}


@dataclass(frozen=True)
class AgentConfig:
    controller: str = _net.DEFAULT_CONTROLLER
    token: Optional[str] = None
    tls: _net.TlsFiles = field(default_factory=_net.TlsFiles)
    data_dir: Path = Path.home() / ".fleetmeter-agent"
    name: str = ""
    labels: dict = field(default_factory=dict)
    threads: tuple = (1,)
    runtimes: tuple = ()           # empty: every runtime importable here
    provider: str = ""             # empty: each runtime's default
    cache_bytes: int = DEFAULT_CACHE_BYTES
    use_power_sensor: bool = True
    cpus: tuple = ()               # pin the agent (and so its measurements) to these CPUs; empty: no pinning
    measure_cpus: tuple = ()       # pin every measurement session to these CPUs; empty: no pinning
    control_nice: int = 5          # lower the priority of the agent's own threads (gRPC, heartbeats) by this
    isolation: str = "process"     # "process": sessions in the measurement worker; "thread": in the agent
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.threads or any(int(t) < 1 for t in self.threads):
            raise ValueError(f"--threads must be >= 1, got {list(self.threads)}")
        unknown = set(self.runtimes) - set(DEFAULT_PROVIDER)
        if unknown:
            raise ValueError(f"unknown runtime(s) {sorted(unknown)}; expected {sorted(DEFAULT_PROVIDER)}")
        if self.reconnect_min_s <= 0 or self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect delays must be positive and min <= max")
        if self.isolation not in ("process", "thread"):
            raise ValueError(f"--isolation must be 'process' or 'thread', got {self.isolation!r}")
        if not 0 <= int(self.control_nice) <= 19:
            raise ValueError(f"--control-nice must be 0..19, got {self.control_nice}")
        if any(int(c) < 0 for c in tuple(self.cpus) + tuple(self.measure_cpus)):
            raise ValueError(f"--pin-cpus takes CPU numbers >= 0, got {list(self.cpus)}")




def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--controller", default=None,
                        help="controller HOST:PORT (default: $FLEETMETER_CONTROLLER or 127.0.0.1:50051)")
    parser.add_argument("--agent-token", default=None,
                        help="agent token (default: $FLEETMETER_AGENT_TOKEN); sent as 'authorization: Bearer'")
    parser.add_argument("--label", action="append", type=key_value_arg, default=[], metavar="KEY=VALUE",
                        help="operator label; part of the platform identity (repeatable)")
    parser.add_argument("--threads", action="append", type=int, default=None, metavar="N",
                        help="thread count to offer; repeat for several platforms (default: 1)")
    parser.add_argument("--runtime", action="append", choices=sorted(DEFAULT_PROVIDER), default=None,
                        help="runtime to serve (repeatable; default: every runtime installed)")
    parser.add_argument("--provider", default="",
                        help="execution provider / delegate (default: CPUExecutionProvider / xnnpack)")
    parser.add_argument("--name", default="", help="display name (default: the hostname)")
    parser.add_argument("--data-dir", default=None,
                        help="agent id, result spool and model cache (default: ~/.fleetmeter-agent)")
    parser.add_argument("--cache-mb", type=int, default=DEFAULT_CACHE_BYTES // 2 ** 20,
                        help="model cache size bound in MiB (default: %(default)s)")
    parser.add_argument("--no-power", action="store_true", help="do not use a power sensor (energy absent)")
    parser.add_argument("--pin-cpus", default="", metavar="LIST",
                        help="pin the agent to these CPUs, e.g. 1 or 2,3 (keeps measurements off the cores the "
                             "OS or a co-located controller uses; Linux/Android)")
    parser.add_argument("--measure-cpus", default="", metavar="LIST",
                        help="pin every measurement session (not the agent's own threads) to these CPUs, "
                             "e.g. 1; pair with a controller kept off them")
    parser.add_argument("--control-nice", type=int, default=AgentConfig.control_nice, metavar="N",
                        help="lower the priority of the agent's own threads (gRPC, heartbeats, spool) by N so "
                             "they yield to the measurement (0-19; default: %(default)s)")
    parser.add_argument("--isolation", choices=("process", "thread"), default="process",
                        help="process (default): every session runs in a forked measurement process away from "
                             "the agent's threads; thread: in the agent's own process (the old way; for "
                             "comparison)")
    parser.add_argument("--tls-ca", default=None,
                        help="CA to verify the controller; enables TLS (default: $FLEETMETER_TLS_CA). Without "
                             "TLS the connection is plain text: for loopback and trusted networks only")
    parser.add_argument("--tls-cert", default=None,
                        help="client certificate for mutual TLS (default: $FLEETMETER_TLS_CERT)")
    parser.add_argument("--tls-key", default=None, help="client key for mutual TLS (default: $FLEETMETER_TLS_KEY)")


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    return AgentConfig(
        controller=_net.controller_address(args.controller), token=_net.agent_token(args.agent_token),
        tls=_net.caller_tls(args.tls_ca, args.tls_cert, args.tls_key),
        data_dir=Path(args.data_dir) if args.data_dir else AgentConfig.data_dir, name=args.name,
        labels=dict(args.label), threads=tuple(args.threads or (1,)), runtimes=tuple(args.runtime or ()),
        provider=args.provider, cache_bytes=args.cache_mb * 2 ** 20, use_power_sensor=not args.no_power,
        cpus=_cpu_list(args.pin_cpus), measure_cpus=_cpu_list(args.measure_cpus),
        control_nice=args.control_nice, isolation=args.isolation)


def _cpu_list(text: str) -> tuple:
    """``"1"``, ``"2,3"`` or ``"0-3"`` → CPU numbers."""
    cpus: list[int] = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        lo, sep, hi = part.partition("-")
        try:
            cpus += list(range(int(lo), int(hi) + 1)) if sep else [int(part)]
        except ValueError:
            raise ValueError(f"--pin-cpus: expected CPU numbers like 1 or 2,3 or 0-3, got {text!r}") from None
    return tuple(cpus)
