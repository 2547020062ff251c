"""Rows of ``fleetmeter results --json``, defined once, and the same rows as a pandas DataFrame or a parquet file.

:func:`result_rows` is the one definition of a result row: the CLI prints it (json; csv through
:data:`RESULT_COLUMNS`), :meth:`fleetmeter.Client.results_df` and ``results --format parquet`` turn the same
dicts into a frame whose columns are exactly their keys (:func:`result_keys`), one row per measurement.

pandas and pyarrow are an optional extra (``pip install 'fleetmeter[data]'``), imported only when a frame
is asked for; without them those calls raise ImportError naming the extra. Top layer (it reads results
through a client); it imports only core modules, so the client and the CLI both import it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from fleetmeter._extras import require
from fleetmeter.v1 import common_pb2

__all__ = ["INTERFERENCE_FIELDS", "RESULT_COLUMNS", "result_rows", "result_keys", "fetch_result_rows",
           "data_frame", "write_parquet"]

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


def result_rows(measurements, models, samples: bool = False) -> list[dict]:
    """One dict per measurement (what ``results --json`` prints; ``samples``: with ``samples_ms``, every
    latency sample, as ``--samples`` adds it); see RESULT_COLUMNS for the csv shape."""
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
        if samples:
            rows[-1]["samples_ms"] = list(m.samples_ms)
    return rows


def result_keys(samples: bool = False) -> List[str]:
    """The keys of a result row, in order (the columns of :meth:`~fleetmeter.Client.results_df`): those of the
    row :func:`result_rows` makes of an empty measurement, so there is no second list to keep in step."""
    return list(result_rows([common_pb2.Measurement()], [], samples)[0])


def fetch_result_rows(client, sweep: Optional[str] = None, platform: Optional[str] = None,
                      samples: bool = False) -> list[dict]:
    """The result rows of the measurements ``client`` (a :class:`~fleetmeter.client.FleetClient`) lists, of one
    sweep and/or platform when given: what ``fleetmeter results --json`` prints."""
    measurements = client.list_measurements(sweep_id=sweep or "", platform_id=platform or "",
                                            include_samples=samples)
    return result_rows(measurements, client.list_models(), samples)


def data_frame(rows: Sequence[Dict[str, Any]], columns: Sequence[str], what: str = "a DataFrame"):
    """``rows`` as a pandas DataFrame with exactly ``columns``, in order (also when there is no row)."""
    pd = require("pandas", what)
    return pd.DataFrame.from_records(list(rows), columns=list(columns))


def write_parquet(frame, path) -> None:
    """Write ``frame`` to ``path`` as parquet (pyarrow), without the index."""
    require("pyarrow", "writing parquet")
    frame.to_parquet(path, index=False)
