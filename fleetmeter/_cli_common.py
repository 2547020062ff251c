"""Pieces that several CLI modules share (``cli``, ``predict_cli``, ``demo``): the client from the
caller flags, strict JSON output, a sweep's progress display, result rows.

Top layer, like the CLI modules themselves; it exists so that none of them imports another in a circle.
"""
from __future__ import annotations

import json
import math

from fleetmeter import _net
from fleetmeter.v1 import common_pb2

__all__ = ["client_from_args", "finite", "print_json", "noise_ceiling_dict", "wait_for_sweep",
           "INTERFERENCE_FIELDS", "RESULT_COLUMNS", "result_rows"]


def client_from_args(args):
    """A :class:`~fleetmeter.client.Client` (fleet and predictor calls) from the caller flags."""
    from fleetmeter.client import Client

    return Client(args.controller, args.api_token, _net.TlsFiles(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key))


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


#: The interference guard's figures (Measurement.interference: the worst accepted session's window). In json a
#: row's ``interference`` is a dict of these (without the prefix) or null; in csv they are flattened into these
#: columns (``reasons`` ";"-joined, an unreadable figure empty).
INTERFERENCE_FIELDS = tuple(f.name for f in common_pb2.Interference.DESCRIPTOR.fields)
#: csv columns, in order. ``sessions``: how many independent sessions the reading aggregates (its accepted
#: ones; 0 for a reading made before sessions, or imported); ``sessions_run``: how many ran, re-runs and
#: rejected ones included; ``session_spread``: (max-min)/median of the accepted sessions' medians, a fraction,
#: empty with fewer than 2 accepted sessions; ``flags``: ";"-joined ("unstable", "disturbed"); ``job_kind``: "" (a
#: sweep's job), "repeat_sample" or "reference".
RESULT_COLUMNS = ("model", "model_sha256", "platform", "runtime", "threads", "median_ms", "mean_ms", "p90_ms",
                  "p99_ms", "std_ms", "n", "load_ms", "first_run_ms", "peak_rss_bytes", "energy_mj_per_inference",
                  "avg_power_w", "failure_kind", "failure_message", "sweep_id", "measurement_id",
                  "sessions", "sessions_run", "session_spread", "flags", "job_kind",
                  *(f"interference_{f}" for f in INTERFERENCE_FIELDS))


def _interference(i) -> dict:
    """Every figure of an Interference; one the device could not read (an absent optional) is ``None``."""
    return {f.name: list(getattr(i, f.name)) if f.is_repeated else
            getattr(i, f.name) if not f.has_presence or i.HasField(f.name) else None for f in i.DESCRIPTOR.fields}


def result_rows(measurements, models) -> list[dict]:
    """One dict per measurement (what ``results --json`` prints); see RESULT_COLUMNS for the csv shape."""
    names = {m.sha256: m.name for m in models}
    rows = []
    for m in measurements:
        accepted = sum(s.accepted for s in m.sessions)
        ok = not m.failure_kind
        lat = m.latency_ms
        rows.append({
            "model": names.get(m.model_sha256, m.model_sha256[:12]), "model_sha256": m.model_sha256,
            "platform": m.platform_id, "runtime": m.runtime, "threads": m.threads,
            "median_ms": lat.median if ok else None, "mean_ms": lat.mean if ok else None,
            "p90_ms": lat.p90 if ok else None, "p99_ms": lat.p99 if ok else None,
            "std_ms": lat.std if ok else None, "n": lat.n if ok else 0,
            "load_ms": m.load_ms, "first_run_ms": m.first_run_ms, "peak_rss_bytes": m.peak_rss_bytes,
            "energy_mj_per_inference": m.energy_mj_per_inference if m.HasField("energy_mj_per_inference") else None,
            "avg_power_w": m.avg_power_w if m.HasField("avg_power_w") else None,
            "failure_kind": m.failure_kind or None, "failure_message": m.failure_message or None,
            "sweep_id": m.sweep_id, "measurement_id": m.measurement_id,
            "sessions": accepted, "sessions_run": len(m.sessions),
            "session_spread": m.session_spread if accepted >= 2 else None,
            "interference": _interference(m.interference) if m.HasField("interference") else None,
            "flags": list(m.flags), "job_kind": m.job_kind,
        })
    return rows
