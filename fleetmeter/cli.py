"""``fleetmeter``: the operator CLI.

Thin by design: parse, build a config or a request, call the library, print
(human tables by default, ``--json`` for scripts). Exit 0 on success, 1 when
the controller said no (the message says why), 2 on bad usage.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from fleetmeter import _net
from fleetmeter._cli_common import INTERFERENCE_FIELDS, RESULT_COLUMNS, noise_ceiling_dict, wait_for_sweep
from fleetmeter._cli_common import caller_flags, end_command
from fleetmeter._cli_common import client_from_args as _client
from fleetmeter._cli_common import print_json as _print_json
from fleetmeter._version import __version__
from fleetmeter.errors import FleetmeterError, InvalidArgument
from fleetmeter._extras import require
from fleetmeter.frames import data_frame, fetch_result_rows, result_keys, write_parquet

log = logging.getLogger(__name__)

PLAINTEXT_NOTE = ("Without --tls-* the connection is plain text: use that only on loopback or a trusted "
                  "network.")




# ------------------------------------------------------------------ commands
def cmd_controller(args) -> int:
    from fleetmeter.controller.fleet import FleetConfig
    from fleetmeter.controller.server import ControllerConfig, run_controller

    config = ControllerConfig(
        listen=args.listen, data_dir=Path(args.data_dir), ray_address=args.ray_address,
        agent_token=_net.agent_token(args.agent_token), api_token=_net.api_token(args.api_token),
        tls=_net.TlsFiles(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key),
        fleet=FleetConfig(lease_timeout_s=args.lease_timeout_s, heartbeat_interval_s=args.heartbeat_s,
                          restart_grace_s=args.restart_grace_s, reference_interval_s=args.reference_interval_s,
                          max_job_s=args.max_job_s, max_jobs_per_sweep=args.max_sweep_jobs),
        nice=args.nice, ray_node_ip=args.ray_node_ip, read_path=args.read_path,
        no_worker_timeout_s=args.no_worker_timeout_s)
    return run_controller(config)


def cmd_devices(args) -> int:
    from google.protobuf.json_format import MessageToDict

    if getattr(args, "devices_command", None) == "forget":
        with _client(args) as c:
            out = MessageToDict(c.forget_device(args.agent_id), preserving_proto_field_name=True,
                                always_print_fields_with_no_presence=True)
        if args.json:
            _print_json(out)
        else:
            from fleetmeter._term import escape_control

            print(f"forgot device {escape_control(out['agent_id'])} ({out['released_jobs']} open job(s) returned "
                  "to the queue); its measurements are kept")
        return 0
    with _client(args) as c:
        devices = c.list_devices()
    if args.json:
        _print_json([MessageToDict(d, preserving_proto_field_name=True) for d in devices])
        return 0
    from fleetmeter._term import table

    print(table(["NAME", "AGENT", "STATE", "CPU", "RUNTIMES", "POWER SENSOR", "LABELS"], [
        (d.name, d.agent_id, d.state + (f" ({d.suspended_reason})" if d.suspended_reason else ""), d.info.cpu_model,
         ", ".join(f"{r.name} {r.version}" for r in d.info.runtimes),
         ", ".join(d.info.power_sensors) or "none",
         ",".join(f"{k}={v}" for k, v in sorted(d.labels.items()))) for d in devices]))
    return 0


def _token_dict(t) -> dict:
    return {"token_id": t.token_id, "name": t.name, "agent_id": t.agent_id, "created_unix": t.created_unix,
            "last_used_unix": t.last_used_unix or None, "revoked_unix": t.revoked_unix or None,
            "state": "revoked" if t.revoked_unix else "active"}


def cmd_agents_token(args) -> int:
    with _client(args) as c:
        if args.token_command == "create":
            created = c.create_agent_token(args.name or "", args.agent_id or "")
            out = {**_token_dict(created.token), "token": created.secret}
            if args.json:
                _print_json(out)
            else:
                from fleetmeter._term import escape_control

                print(out["token"])
                print(f"agent token {out['token_id']} ({escape_control(out['name'])})"
                      + (f" for agent {out['agent_id']}" if out["agent_id"] else
                         ", bound to the first agent that connects with it")
                      + ". Shown once: give it to the agent (--agent-token or $FLEETMETER_AGENT_TOKEN); "
                        f"revoke with: fleetmeter agents token revoke {out['token_id']}", file=sys.stderr)
            return 0
        if args.token_command == "revoke":
            out = _token_dict(c.revoke_agent_token(args.token_id))
            if args.json:
                _print_json(out)
            else:
                print(f"agent token {out['token_id']} revoked"
                      + (f"; agent {out['agent_id']} is disconnected and refused" if out["agent_id"] else ""))
            return 0
        tokens = [_token_dict(t) for t in c.list_agent_tokens()]
    if args.json:
        _print_json(tokens)
        return 0
    from fleetmeter._term import table

    def when(unix) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix)) if unix else "-"

    print(table(["TOKEN ID", "NAME", "AGENT", "STATE", "CREATED", "LAST USED"], [
        (t["token_id"], t["name"], t["agent_id"] or "(first to connect)", t["state"], when(t["created_unix"]),
         when(t["last_used_unix"])) for t in tokens]))
    return 0


def reference_dict(platform) -> Optional[dict]:
    """The drift canary's latest reading of a Platform, or ``None`` before its first one."""
    if not platform.HasField("reference") or not platform.reference.readings:
        return None
    r = platform.reference
    return {"model_sha256": r.model_sha256, "model_name": r.model_name, "median_ms": r.median_ms,
            "session_spread": r.session_spread, "flags": list(r.flags), "finished_at_unix": r.finished_at_unix,
            "readings": r.readings, "drift": r.drift}


def _share(value: Optional[float]) -> str:
    return "-" if value is None else f"{100.0 * value:.0f}%"


def cmd_platforms(args) -> int:
    from google.protobuf.json_format import MessageToDict

    with _client(args) as c:
        platforms = c.list_platforms()
    if args.json:
        _print_json([{**MessageToDict(p, preserving_proto_field_name=True), "noise_ceiling": noise_ceiling_dict(p),
                      "reference": reference_dict(p)} for p in platforms])
        return 0
    from fleetmeter._term import fmt_ms, table

    rows = []
    for p in platforms:
        noise, ref = noise_ceiling_dict(p), reference_dict(p)
        rows.append((p.platform_id, p.hardware, f"{p.agents_connected}/{p.agents_total}",
                     f"{_share(noise['within_5'])} / {_share(noise['within_10'])} ({noise['pairs']})",
                     "-" if ref is None else f"{fmt_ms(ref['median_ms'])} ({100.0 * ref['drift']:+.1f}%, "
                                             f"{ref['readings']})" + (" " + ";".join(ref["flags"]) if ref["flags"]
                                                                      else "")))
    print(table(["PLATFORM", "HARDWARE", "AGENTS", "NOISE ±5% / ±10% (PAIRS)", "REFERENCE MS (DRIFT, READINGS)"],
                rows))
    return 0


def cmd_models_add(args) -> int:
    from google.protobuf.json_format import MessageToDict

    out = []
    with _client(args) as c:
        for path in args.files:
            if not Path(path).is_file():
                raise InvalidArgument(f"no such file: {path}")
            resp = c.upload_model(path)
            out.append(resp)
            if not args.json:
                m = resp.model
                print(f"{m.sha256[:12]}  {m.name}  {m.format}  {m.size_bytes} bytes  {m.node_count} nodes"
                      + ("  (already present)" if resp.already_present else ""))
    if args.json:
        _print_json([{**MessageToDict(r.model, preserving_proto_field_name=True),
                      "already_present": r.already_present} for r in out])
    return 0


def cmd_models_list(args) -> int:
    from google.protobuf.json_format import MessageToDict

    with _client(args) as c:
        models = c.list_models()
    if args.json:
        _print_json([MessageToDict(m, preserving_proto_field_name=True) for m in models])
        return 0
    from fleetmeter._term import table

    print(table(["SHA256", "NAME", "FORMAT", "BYTES", "NODES", "FAMILY"],
                [(m.sha256[:12], m.name, m.format, m.size_bytes, m.node_count, m.family) for m in models]))
    return 0


def cmd_models_rm(args) -> int:
    from google.protobuf.json_format import MessageToDict

    with _client(args) as c:
        out = c.delete_model(args.model, force=args.force)
    if args.json:
        _print_json(MessageToDict(out, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))
        return 0
    from fleetmeter._term import escape_control

    print(f"removed model {escape_control(out.model.name)} ({out.model.sha256[:12]}): {out.jobs_removed} job(s) "
          f"removed from their sweeps; its {out.measurements_kept} measurement(s) are kept (listed under its "
          "sha256)")
    return 0


def cmd_sweep_submit(args) -> int:
    from fleetmeter.sweepspec import spec_from_args

    with _client(args) as c:
        spec = spec_from_args(args, upload=lambda path: c.upload_model(path).model.sha256,
                              known_names=lambda: {m.name for m in c.list_models()})
        sweep = c.submit_sweep(spec)
        try:
            if not args.json:
                print(f"sweep {sweep.sweep_id}: {sweep.progress.total} jobs on {len(sweep.platform_ids)} "
                      "platform(s)", flush=True)
            if args.wait or args.watch:
                sweep = _follow_sweep(c, sweep, args)
        except KeyboardInterrupt:
            return _stopped_following(sweep.sweep_id)
    if args.json:
        _print_json(sweep_dict(sweep))
    return 0 if sweep.progress.failed == 0 or not (args.wait or args.watch) else 1


def _sweep_over(progress) -> bool:
    return progress.state in ("done", "cancelled") and progress.leased == 0


def _follow_sweep(c, sweep, args):
    """``--wait``/``--watch``: follow ``sweep`` until it ends, then (without ``--json``) one line on stdout: how it
    ended, how long it took (unless it was over before) and the command to run next. Returns the sweep.

    The following runs in a thread while this one waits for it, so that Ctrl-C (KeyboardInterrupt, re-raised
    here) never lands inside a gRPC call: one interrupted there is never finished, and closing its channel
    would wait for it forever. On Ctrl-C the client is closed, which cancels the watch cleanly."""
    was_running = not _sweep_over(sweep.progress)
    outcome: dict = {}

    def follow() -> None:
        try:
            outcome["sweep"] = wait_for_sweep(c, sweep.sweep_id, quiet=args.json, per_platform=args.watch)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc

    follower = threading.Thread(target=follow, name="follow-sweep", daemon=True)
    follower.start()
    try:
        while follower.is_alive():
            follower.join(0.2)
    except KeyboardInterrupt:
        c.close()  # cancels the watch; the follower ends with the cancellation, which nobody needs
        raise
    if "error" in outcome:
        raise outcome["error"]
    sweep = outcome["sweep"]
    if not args.json:
        print(sweep_summary(sweep, sweep.progress.updated_unix - sweep.created_unix if was_running else None))
    return sweep


def sweep_summary(sweep, elapsed_s: Optional[float] = None) -> str:
    """``sweep SID done: 5 done, 1 failed in 1m23s — next: fleetmeter results --sweep SID``."""
    from fleetmeter._term import fmt_elapsed

    p, sid = sweep.progress, sweep.sweep_id
    counts = f"{p.done} done, {p.failed} failed" + (f", {p.cancelled} cancelled" if p.cancelled else "")
    took = "" if elapsed_s is None else f" in {fmt_elapsed(elapsed_s)}"
    return f"sweep {sid} {p.state}: {counts}{took} \u2014 next: fleetmeter results --sweep {sid}"


def _stopped_following(sweep_id: str) -> int:
    """Ctrl-C while following: only the following stops; say so, and how to follow or cancel. Exit 130."""
    print(f"\nstopped following; sweep {sweep_id} goes on \u2014 follow: fleetmeter sweep status {sweep_id} --wait; "
          f"cancel: fleetmeter sweep cancel {sweep_id}", file=sys.stderr, flush=True)
    return 130


def sweep_dict(sweep) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(sweep, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def cmd_sweep_status(args) -> int:
    with _client(args) as c:
        sweep = c.get_sweep(args.sweep_id)
        if args.wait or args.watch:
            try:
                sweep = _follow_sweep(c, sweep, args)
            except KeyboardInterrupt:
                return _stopped_following(sweep.sweep_id)
            if args.json:
                _print_json(sweep_dict(sweep))
            return 0 if sweep.progress.failed == 0 else 1
    if args.json:
        _print_json(sweep_dict(sweep))
        return 0
    from fleetmeter._term import SweepWatch

    print(f"{sweep.name}: {sweep.progress.total} jobs")
    print(SweepWatch().render(sweep.progress))
    return 0


def cmd_sweep_list(args) -> int:
    with _client(args) as c:
        sweeps = c.list_sweeps(args.state)
    if args.json:
        _print_json([sweep_dict(s) for s in sweeps])
        return 0
    from fleetmeter._term import table

    print(table(["SWEEP", "NAME", "STATE", "DONE", "FAILED", "RUNNING", "PENDING", "TOTAL", "CREATED"], [
        (s.sweep_id, s.name, s.progress.state, s.progress.done, s.progress.failed, s.progress.leased,
         s.progress.pending, s.progress.total, time.strftime("%Y-%m-%d %H:%M", time.localtime(s.created_unix)))
        for s in sweeps]))
    return 0


def cmd_sweep_control(args) -> int:
    with _client(args) as c:
        sweep = getattr(c, f"{args.verb}_sweep")(args.sweep_id)
    if args.json:
        _print_json(sweep_dict(sweep))
    else:
        p = sweep.progress
        print(f"sweep {sweep.sweep_id}: {p.state} (done {p.done}, running {p.leased}, pending {p.pending}, "
              f"cancelled {p.cancelled})")
    return 0


def _csv_row(row: dict) -> dict:
    out = {**row, "flags": ";".join(row["flags"])}
    for f in INTERFERENCE_FIELDS:
        value = (row["interference"] or {}).get(f)
        out[f"interference_{f}"] = ";".join(value) if isinstance(value, list) else value
    return out


def cmd_results(args) -> int:
    fmt = "json" if args.json else args.format
    out = getattr(args, "out", None)
    if fmt == "parquet":
        if not out:
            raise InvalidArgument("--format parquet writes a file: add --out FILE")
        try:  # before asking the controller anything
            require("pandas", "--format parquet")
            require("pyarrow", "--format parquet")
        except ImportError as exc:
            print(f"fleetmeter: {exc}", file=sys.stderr)
            return 2
    with _client(args) as c:
        rows = fetch_result_rows(c, args.sweep, args.platform, args.samples)
    if fmt == "parquet":
        write_parquet(data_frame(rows, result_keys(args.samples)), out)
        return 0
    with contextlib.ExitStack() as stack:
        if out:
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(out, "w", newline=""))))
        _print_results(rows, fmt)
    return 0


def _print_results(rows: list, fmt: str) -> None:
    if fmt == "json":
        _print_json(rows)
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(RESULT_COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(_csv_row(r) for r in rows)
        sys.stdout.write(buf.getvalue())
    else:
        from fleetmeter._term import fmt_ms, table

        print(table(["MODEL", "PLATFORM", "MEDIAN MS", "P90 MS", "N", "SPREAD", "FLAGS", "ENERGY MJ", "FAILURE"], [
            (r["model"], r["platform"], fmt_ms(r["median_ms"]), fmt_ms(r["p90_ms"]), r["n"],
             "-" if r["session_spread"] is None else f"{100.0 * r['session_spread']:.1f}%",
             ";".join(r["flags"]) or "-",
             "-" if r["energy_mj_per_inference"] is None else f"{r['energy_mj_per_inference']:.3f}",
             f"{r['failure_kind']}: {r['failure_message']}" if r["failure_kind"] else "") for r in rows]))


def cmd_import(args) -> int:
    """Validate every row first (nothing is sent if any row is bad), upload the models, then import."""
    from fleetmeter._hashing import sha256_file
    from fleetmeter.modeler.dataset import read_csv
    from fleetmeter.v1 import fleet_pb2

    rows = read_csv(args.file)
    with _client(args) as c:
        uploaded = {}
        for row in rows:
            if row.model_path not in uploaded:
                uploaded[row.model_path] = c.upload_model(row.model_path).model.sha256
        result = c.import_measurements(f"import:{sha256_file(args.file)[:16]}", [
            fleet_pb2.ImportedMeasurement(
                line=row.line, model_sha256=uploaded[row.model_path], platform=row.platform_id,
                latency_ms=row.values["latency_ms"], family=row.family,
                **{k: row.values[v] for k, v in (("energy_mj", "energy_mj"), ("peak_rss_bytes", "peak_rss_bytes"))
                   if row.values.get(v) is not None})
            for row in rows])
    out = {"rows": len(rows), "models_uploaded": len(uploaded), "imported": result.imported,
           "already_present": result.already_present, "created_platforms": list(result.created_platforms)}
    if args.json:
        _print_json(out)
    else:
        print(f"imported {out['imported']} measurement(s) of {out['models_uploaded']} model(s) from {args.file}"
              + (f" ({out['already_present']} already present)" if out["already_present"] else "")
              + (f"; new platforms: {', '.join(out['created_platforms'])}" if out["created_platforms"] else ""))
    return 0


def cmd_demo(args) -> int:
    from fleetmeter.demo import DemoConfig, run_demo

    return run_demo(DemoConfig(json_output=args.json, data_dir=args.data_dir, min_duration_ms=args.min_duration_ms,
                               report=args.report))


def cmd_report(args) -> int:
    from fleetmeter.report import load_search_result, write_report

    search = load_search_result(args.search) if args.search else None
    with _client(args) as c:
        data = write_report(c, args.out, sweep_id=args.sweep or "", platforms=args.platform or (), search=search)
    print(f"wrote {args.out}: {len(data.rows)} reading(s) on {len(data.platforms)} platform(s), "
          f"{len(data.predictors)} predictor(s)")
    return 0


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetmeter",
        description="Measure what neural networks cost (latency, energy, memory) on a fleet of devices.",
        epilog="Caller commands reach the controller at --controller or $FLEETMETER_CONTROLLER with the token "
               "from --api-token or $FLEETMETER_API_TOKEN. " + PLAINTEXT_NOTE)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("--version", action="version", version=f"fleetmeter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from fleetmeter.adapt_cli import add_adapt_command
    from fleetmeter.predict_cli import add_predictor_commands
    from fleetmeter.zoo_cli import add_zoo_commands
    from fleetmeter.search_cli import add_search_command

    _add_controller_command(sub)
    _add_fleet_listings(sub)
    _add_agents_commands(sub)
    _add_models_commands(sub)
    _add_sweep_commands(sub)
    _add_data_commands(sub)
    add_zoo_commands(sub)
    add_predictor_commands(sub)
    add_adapt_command(sub)
    add_search_command(sub)
    _add_demo_command(sub)
    _add_completion_command(sub)
    _add_report_command(sub)
    return parser


def _add_controller_command(sub) -> None:
    from fleetmeter.controller.engine import DEFAULT_NO_WORKER_TIMEOUT_S

    p = sub.add_parser("controller", help="run the controller (Ray + gRPC services)",
                       description="Start the controller: a local Ray instance (or --ray-address), the fleet "
                                   "registry and scheduler, the SQLite store, and the agent- and caller-facing "
                                   "gRPC services on one port. " + PLAINTEXT_NOTE)
    p.add_argument("--listen", default=_net.DEFAULT_CONTROLLER, metavar="HOST:PORT",
                   help="address to serve on (default: %(default)s; 0.0.0.0:50051 for every interface)")
    p.add_argument("--data-dir", default=".fleetmeter", help="store and model blobs (default: %(default)s)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster instead of starting Ray locally")
    p.add_argument("--ray-node-ip", default=None, metavar="ADDR",
                   help="the address Ray advertises; when it is loopback Ray listens on loopback only "
                        "(default: the host of --listen; 0.0.0.0 there or here: Ray's choice, every interface)")
    p.add_argument("--agent-token", default=None, help="token agents must present ($FLEETMETER_AGENT_TOKEN)")
    p.add_argument("--api-token", default=None, help="token callers must present ($FLEETMETER_API_TOKEN)")
    p.add_argument("--tls-cert", default=None, help="server certificate (PEM); enables TLS")
    p.add_argument("--tls-key", default=None, help="server key (PEM)")
    p.add_argument("--tls-ca", default=None, help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument("--lease-timeout-s", type=float, default=30.0,
                   help="a job returns to the queue when its agent is silent this long (default: %(default)s)")
    p.add_argument("--heartbeat-s", type=float, default=2.0, help="agent heartbeat period (default: %(default)s)")
    p.add_argument("--max-sweep-jobs", type=int, default=100_000, metavar="N",
                   help="refuse a sweep that expands to more jobs than this (default: %(default)s)")
    p.add_argument("--max-job-s", type=float, default=3600.0, metavar="S",
                   help="longest a job may be held, heartbeats or not; an agent that holds one longer without a "
                        "result loses it and gets no work for a while (default: %(default)s)")
    p.add_argument("--restart-grace-s", type=float, default=60.0,
                   help="after a restart, how long open jobs wait for their agents to reconnect "
                        "(default: %(default)s)")
    p.add_argument("--reference-interval-s", type=float, default=1800.0, metavar="S",
                   help="drift canary: measure each served platform's reference model when an agent serving it "
                        "connects and then every S seconds, at most once per S (default: %(default)s; 0: off)")
    p.add_argument("--nice", type=int, default=10, metavar="N",
                   help="lower the priority of the controller and its local Ray by N (0-19; default: "
                        "%(default)s), so that on a host shared with agents it yields the CPU to their "
                        "measurements; 0 keeps the normal priority")
    p.add_argument("--no-worker-timeout-s", type=float, default=DEFAULT_NO_WORKER_TIMEOUT_S, metavar="S",
                   help="a training run, feature extraction or upload whose Ray tasks find no alive Ray node with "
                        "CPUs for S seconds (every worker died, none joined) fails with an error saying so instead "
                        "of waiting; leave an autoscaler time to add a node (default: %(default)s; 0: wait "
                        "forever)")
    p.add_argument("--read-path", choices=("store", "actor"), default="store",
                   help="where listings and sweep progress are read: store (the store and a snapshot of the "
                        "agents' live state, never queued behind the scheduler; default) or actor (through the "
                        "scheduler's actor, the old path; for comparisons)")
    p.set_defaults(func=cmd_controller)


def _add_fleet_listings(sub) -> None:
    for name, func, help_ in (("devices", cmd_devices, "list the agents and their state"),
                              ("platforms", cmd_platforms, "list platforms (hardware + runtime + threads)")):
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        caller_flags(p)
        p.set_defaults(func=func)
        if name == "devices":
            forget = p.add_subparsers(dest="devices_command", metavar="SUBCOMMAND").add_parser(
                "forget", help="remove an offline device and its enrolment (its measurements stay)",
                description="Remove an offline device: its record and the binding of its agent id to its "
                            "secret, so that the id may enrol again (e.g. a reinstalled device). Its open jobs "
                            "return to the queue; its measurements are kept. A connected agent is refused: "
                            "stop it first.")
            forget.add_argument("agent_id", metavar="AGENT_ID")
            forget.add_argument("--json", action="store_true", help="machine-readable output")
            caller_flags(forget)


def _add_agents_commands(sub) -> None:
    agents = sub.add_parser("agents", help="agent credentials (per-agent tokens)").add_subparsers(
        dest="agents_command", required=True, metavar="SUBCOMMAND")
    tokens = agents.add_parser(
        "token", help="issue, list and revoke per-agent tokens",
        description="Per-agent tokens: each is bound to one agent id (given with --agent-id, or the first "
                    "agent that connects with it) and can be revoked on its own, which disconnects that agent. "
                    "Only a hash is stored. Once a per-agent token exists, a controller started without "
                    "--agent-token no longer accepts agents without a token.").add_subparsers(
        dest="token_command", required=True, metavar="ACTION")
    p = tokens.add_parser("create", help="issue a token (printed once)")
    p.add_argument("--name", default="", help="a label for listings (default: the token id)")
    p.add_argument("--agent-id", default="", help="bind it to this agent id now")
    p.add_argument("--json", action="store_true", help="machine-readable output (includes the token)")
    caller_flags(p)
    p.set_defaults(func=cmd_agents_token)
    p = tokens.add_parser("list", help="tokens, their agents and state (never the tokens themselves)")
    end_command(p, cmd_agents_token)
    p = tokens.add_parser("revoke", help="revoke a token: its agent is disconnected and refused")
    p.add_argument("token_id", metavar="TOKEN_ID")
    end_command(p, cmd_agents_token)


def _add_models_commands(sub) -> None:
    models = sub.add_parser("models", help="upload, list and remove models").add_subparsers(
        dest="models_command", required=True, metavar="SUBCOMMAND")
    p = models.add_parser("add", help="upload .onnx / .tflite files (content-addressed by sha256)")
    p.add_argument("files", nargs="+", metavar="FILE")
    end_command(p, cmd_models_add)
    p = models.add_parser("list", help="list uploaded models")
    end_command(p, cmd_models_list)
    p = models.add_parser(
        "rm", help="remove an uploaded model (its measurements stay)",
        description="Remove an uploaded model: its file on the controller and its entry in the model list. Its "
                    "measurements stay in the store: `fleetmeter results` lists them under the model's sha256 "
                    "(upload the same file again and they carry its name again). Its finished jobs leave their "
                    "sweeps' job counts. Refused while jobs of the model are pending (cancel their sweeps, or "
                    "--force) or running (wait for them), and for the drift canary's reference models.")
    p.add_argument("model", metavar="SHA_OR_NAME", help="sha256, a unique sha256 prefix, or the model's name")
    p.add_argument("--force", action="store_true",
                   help="drop the model's pending jobs instead of refusing (running jobs still refuse)")
    end_command(p, cmd_models_rm)


def _add_sweep_commands(sub) -> None:
    sweep = sub.add_parser("sweep", help="submit and follow measurement sweeps").add_subparsers(
        dest="sweep_command", required=True, metavar="SUBCOMMAND")
    p = sweep.add_parser("submit", help="models × platforms × threads × repeats → jobs",
                         description="Submit a sweep from a file (YAML, TOML or JSON) and/or flags; flags add to "
                                     "the file's values. Model references are sha256 (or a prefix), names of "
                                     "uploaded models, or paths of files to upload first.")
    from fleetmeter.sweepspec import add_sweep_arguments

    add_sweep_arguments(p)
    p.add_argument("--wait", action="store_true", help="follow progress (a bar) until the sweep ends")
    p.add_argument("--watch", action="store_true",
                   help="follow live progress per platform (done, running, failed, remaining, ETA) until it ends")
    end_command(p, cmd_sweep_submit)
    p = sweep.add_parser("status", help="progress of one sweep, per platform")
    p.add_argument("sweep_id")
    p.add_argument("--wait", action="store_true", help="follow progress (a bar) until the sweep ends")
    p.add_argument("--watch", action="store_true", help="follow live progress per platform until the sweep ends")
    end_command(p, cmd_sweep_status)
    p = sweep.add_parser("list", help="sweeps, newest first, with their progress",
                         description="Sweeps, newest first, with their progress (the drift canary's per-platform "
                                     "reference sweeps included, named reference:PLATFORM).")
    p.add_argument("--state", action="extend", nargs="+", default=[], metavar="STATE",
                   help="only sweeps in these states: running, paused, cancelled, done (repeatable)")
    end_command(p, cmd_sweep_list)
    for verb, help_ in (("cancel", "drop a sweep's pending jobs (running ones finish and are kept)"),
                        ("pause", "start no new job of this sweep until it is resumed"),
                        ("resume", "let a paused sweep continue")):
        p = sweep.add_parser(verb, help=help_, description=help_)
        p.add_argument("sweep_id")
        p.add_argument("--json", action="store_true")
        caller_flags(p)
        p.set_defaults(func=cmd_sweep_control, verb=verb)


def _add_data_commands(sub) -> None:
    p = sub.add_parser("results", help="measurements (one row per measurement)")
    p.add_argument("--sweep", default=None, help="only this sweep")
    p.add_argument("--platform", default=None, help="only this platform id")
    p.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table",
                   help="parquet: the json rows as a table file (needs --out and pip install 'fleetmeter[data]')")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument("--out", default=None, metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--samples", action="store_true", help="include every latency sample (json, parquet)")
    caller_flags(p)
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("import", help="import measurements made elsewhere from a CSV file",
                       description="Import measurements made elsewhere (benchmark_model, AI Hub, LoadGen ...) from "
                                   "a CSV with columns model (path to an .onnx/.tflite file, relative to the CSV), "
                                   "platform (created if new), latency_ms, and optionally energy_mj, peak_rss_bytes, "
                                   "family. Every row is checked first; one bad row imports nothing, and the "
                                   "report names each bad line. Importing the same file again adds nothing.")
    p.add_argument("file", metavar="FILE.csv")
    end_command(p, cmd_import)


def _add_demo_command(sub) -> None:
    p = sub.add_parser("demo", help="controller + 3 local agents measure the built-in models",
                       description="Start a controller and three local agents (onnxruntime 1 thread, onnxruntime "
                                   "2 threads, LiteRT 1 thread), measure the built-in models, print a table of "
                                   "median latency per model and platform, then stop everything it started.")
    p.add_argument("--json", action="store_true",
                   help="print a list of {model, platform, latency_ms: {median, ...}} instead of a table")
    p.add_argument("--data-dir", default=None, help="keep the demo's store here (default: a temporary folder)")
    p.add_argument("--min-duration-ms", type=float, default=300.0,
                   help="minimum timed duration per measurement (default: %(default)s)")
    p.add_argument("--report", default=None, metavar="FILE",
                   help="also write the HTML report of the demo's run to FILE (as `fleetmeter report` does)")
    p.set_defaults(func=cmd_demo)


def _add_report_command(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page of the readings, predictions and fleet",
                       description="Write one HTML file (it opens with no network: plotly.js is inlined) with "
                                   "latency per model across platforms, each reading's samples, predicted vs "
                                   "measured per platform (±10%% band, prediction intervals), accuracy of the "
                                   "predictors vs the baselines, noise ceilings, drift over time and the fleet. "
                                   "Needs plotly: pip install 'fleetmeter[report]'.")
    p.add_argument("--sweep", default=None, metavar="ID", help="only this sweep's readings (default: all)")
    p.add_argument("--platform", action="extend", nargs="+", default=None, metavar="P",
                   help="only these platform ids (or unique prefixes); repeatable (default: the sweep's, or all)")
    p.add_argument("--out", required=True, metavar="report.html", help="the HTML file to write")
    p.add_argument("--search", default=None, metavar="RESULT.json",
                   help="also draw this search's Pareto front (fleetmeter search --pareto --json > RESULT.json)")
    caller_flags(p)
    p.set_defaults(func=cmd_report)


def cmd_completion(args) -> int:
    from fleetmeter.completion import completion_script

    sys.stdout.write(completion_script(build_parser(), args.shell))
    return 0


def _add_completion_command(sub) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                       description="Print a completion script for COMMANDs, their flags and the flags' choices. "
                                   "bash: eval \"$(fleetmeter completion bash)\" in ~/.bashrc; zsh: eval "
                                   "\"$(fleetmeter completion zsh)\" in ~/.zshrc (after compinit).")
    p.add_argument("shell", choices=("bash", "zsh"))
    p.set_defaults(func=cmd_completion)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    if args.command in ("controller",):
        level = min(level, logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except FleetmeterError as exc:
        print(f"fleetmeter: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"fleetmeter: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
