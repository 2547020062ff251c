"""Pieces that several CLI modules share (``cli``, ``predict_cli``, ``demo``): the client from the
caller flags, strict JSON output, a sweep's progress display (result rows: re-exported from :mod:`fleetmeter.frames`).

Top layer, like the CLI modules themselves; it exists so that none of them imports another in a circle.
"""
from __future__ import annotations

import json
import math
from typing import Optional

from fleetmeter import _net
from fleetmeter.frames import INTERFERENCE_FIELDS, RESULT_COLUMNS, result_rows

__all__ = ["caller_flags", "end_command", "client_from_args", "finite", "print_json", "noise_ceiling_dict",
           "wait_for_sweep",
           "INTERFERENCE_FIELDS", "RESULT_COLUMNS", "result_rows"]


def caller_flags(p) -> None:
    """The flags every command that talks to a controller takes (each falls back to its environment variable)."""
    g = p.add_argument_group("controller connection")
    g.add_argument("--controller", default=None, metavar="HOST:PORT",
                   help="controller address (default: $FLEETMETER_CONTROLLER or 127.0.0.1:50051)")
    g.add_argument("--api-token", default=None, help="API token (default: $FLEETMETER_API_TOKEN)")
    g.add_argument("--tls-ca", default=None,
                   help="CA that signed the controller's certificate; enables TLS (default: $FLEETMETER_TLS_CA)")
    g.add_argument("--tls-cert", default=None, help="client certificate, mutual TLS (default: $FLEETMETER_TLS_CERT)")
    g.add_argument("--tls-key", default=None, help="client key, mutual TLS (default: $FLEETMETER_TLS_KEY)")


def end_command(p, func, json_help: Optional[str] = "machine-readable output") -> None:
    """What a caller command's parser ends with: ``--json``, the connection flags, its handler."""
    p.add_argument("--json", action="store_true", help=json_help)
    caller_flags(p)
    p.set_defaults(func=func)


def client_from_args(args):
    """A :class:`~fleetmeter.client.Client` (fleet and predictor calls) from the caller flags; each flag left out
    falls back to its environment variable (``$FLEETMETER_CONTROLLER``, ``$FLEETMETER_API_TOKEN``,
    ``$FLEETMETER_TLS_CA`` / ``_CERT`` / ``_KEY``)."""
    from fleetmeter.client import Client

    return Client(args.controller, args.api_token, _net.caller_tls(args.tls_ca, args.tls_cert, args.tls_key))


def finite(obj):
    """``obj`` with every NaN or infinite float replaced by None (strict JSON has no NaN/Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def print_json(obj) -> None:
    print(json.dumps(finite(obj), indent=2, sort_keys=True, default=str, allow_nan=False))


def noise_ceiling_dict(platform) -> dict:
    """``{within_5, within_10, pairs}`` of a Platform; the shares are ``None`` while there is no repeat pair."""
    c = platform.noise_ceiling
    return {"within_5": c.within_5 if c.pairs else None, "within_10": c.within_10 if c.pairs else None,
            "pairs": c.pairs}


def wait_for_sweep(client, sweep_id: str, quiet: bool = False, per_platform: bool = False):
    """Follow a sweep until it ends: a progress bar, or (``per_platform``) a live table per platform."""
    from fleetmeter._term import ProgressBar, SweepWatch

    bar = watch = None
    for progress in client.watch_sweep(sweep_id):
        final = progress.state in ("done", "cancelled") and progress.leased == 0
        if quiet:
            continue
        if per_platform:
            watch = watch or SweepWatch()
            watch.update(progress, final=final)
        else:
            bar = bar or ProgressBar(progress.total)
            bar.update(progress.done + progress.failed, progress.leased, progress.failed, final=final)
    return client.get_sweep(sweep_id)
