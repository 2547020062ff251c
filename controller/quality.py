"""How far a platform's readings can be trusted: repeat samples, job kinds, the noise ceiling, the drift record.

Plain functions over the fleet's dicts (no store, no clock), so that each rule
is tested on its own:

- :func:`repeat_share` / :func:`select_repeat_pairs`: which (model, platform)
  pairs of a sweep are measured once more, late in the sweep;
- :func:`job_kind`: ``""`` (a sweep's job), ``"repeat_sample"`` (a job beyond
  the spec's repeats) or ``"reference"`` (the drift canary's job), always
  derived from the job and its sweep, never taken from an agent;
- :func:`platform_quality`: the platform's live noise ceiling (every pair of
  successful readings of the same model and inputs, reference readings left
  out) and its drift canary's latest reading with the drift over its record.
"""
from __future__ import annotations

import math
import random
import statistics
from typing import Callable, Hashable, Iterable, Mapping, Optional

from google.protobuf.descriptor import FieldDescriptor

from fleetmeter.errors import InvalidArgument
from fleetmeter.modeler.metrics import noise_ceiling
from fleetmeter.v1 import common_pb2

#: ``SweepSpec.repeat_sample`` 0 (unset) means this share.
DEFAULT_REPEAT_SAMPLE = 0.1
#: The values of ``Measurement.job_kind``.
JOB_KINDS = ("", "repeat_sample", "reference")
#: Marker in a stored sweep spec (``spec["kind"]``) of the drift canary's internal sweeps.
REFERENCE_KIND = "reference"

#: ReadingSettings field → (type, minimum, maximum or None); the agent owns the defaults. Derived from the
#: proto (every field is a count, a threshold, a duration or a switch: >= 0 unless listed in _READING_BOUNDS),
#: so a field the agent side adds is accepted without another list to edit.
_READING_BOUNDS = {"sessions": (1, None), "max_sessions": (1, None), "max_steal_share": (0, 1)}
_PY_TYPE = {FieldDescriptor.CPPTYPE_INT32: int, FieldDescriptor.CPPTYPE_INT64: int,
            FieldDescriptor.CPPTYPE_DOUBLE: float, FieldDescriptor.CPPTYPE_FLOAT: float,
            FieldDescriptor.CPPTYPE_BOOL: bool}
READING_LIMITS: dict[str, tuple[type, float, Optional[float]]] = {
    f.name: (_PY_TYPE[f.cpp_type], *_READING_BOUNDS.get(f.name, (0, None)))
    for f in common_pb2.ReadingSettings.DESCRIPTOR.fields}


def repeat_share(value: Optional[float]) -> float:
    """``SweepSpec.repeat_sample`` → the share of pairs to re-measure: 0 or unset → 0.1, negative → 0 (none).

    Raises InvalidArgument (naming ``repeat_sample``) when it is not finite or above 1."""
    share = float(value or 0.0)
    if not math.isfinite(share) or share > 1:
        raise InvalidArgument(f"repeat_sample must be a finite share <= 1 (0: the default {DEFAULT_REPEAT_SAMPLE}, "
                              f"negative: none), got {value!r}")
    if share == 0:
        return DEFAULT_REPEAT_SAMPLE
    return max(share, 0.0)


def select_repeat_pairs(n_pairs: int, share: float, seed: str) -> list[int]:
    """Indices (ascending) of the pairs to re-measure: ``ceil(share × n_pairs)`` of them, at least one when
    ``share > 0``, drawn by a generator seeded with ``seed`` (the sweep id), so a sweep's sample is the same
    wherever and whenever it is drawn."""
    if share <= 0 or n_pairs <= 0:
        return []
    k = min(n_pairs, max(1, math.ceil(round(share * n_pairs, 9))))  # round: 0.1 × 30 is 3.0000000000000004
    return sorted(random.Random(seed).sample(range(n_pairs), k))


def validate_reading(reading: Mapping) -> None:
    """InvalidArgument naming ``reading.<field>`` for an unknown field or a value out of range."""
    for key, value in reading.items():
        if key not in READING_LIMITS:
            raise InvalidArgument(f"reading.{key}: unknown setting; allowed: {', '.join(sorted(READING_LIMITS))}")
        kind, low, high = READING_LIMITS[key]
        if kind is bool:
            if not isinstance(value, bool):
                raise InvalidArgument(f"reading.{key}: expected true or false, got {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or (kind is int and value != int(value)):
            raise InvalidArgument(f"reading.{key}: expected {'an integer' if kind is int else 'a number'}, "
                                  f"got {value!r}")
        if value < low or (high is not None and value > high):
            bounds = f">= {low:g}" + (f" and <= {high:g}" if high is not None else "")
            raise InvalidArgument(f"reading.{key}: must be {bounds}, got {value!r}")
    if "sessions" in reading and "max_sessions" in reading and reading["max_sessions"] < reading["sessions"]:
        raise InvalidArgument(f"reading.max_sessions ({reading['max_sessions']}) must be >= reading.sessions "
                              f"({reading['sessions']})")


def job_kind(job: Mapping, sweep: Optional[Mapping]) -> str:
    """``"reference"`` for the drift canary's jobs, ``"repeat_sample"`` for a job whose ``repeat_index`` is
    beyond its sweep's ``repeats``, ``""`` otherwise (also for a job without a known sweep)."""
    spec = (sweep or {}).get("spec") or {}
    if spec.get("kind") == REFERENCE_KIND:
        return "reference"
    if sweep is not None and int(job.get("repeat_index") or 0) >= max(1, int(spec.get("repeats") or 1)):
        return "repeat_sample"
    return ""


def ceiling_of(groups: Mapping[Hashable, list[float]]) -> dict:
    """``{within_5, within_10, pairs}`` from :func:`fleetmeter.modeler.metrics.noise_ceiling` (the shares are
    the mean over groups of each group's share of pairs within 5 % / 10 %; ``None`` without any pair)."""
    c = noise_ceiling(groups)
    return {"within_5": c["share_within_5"], "within_10": c["share_within_10"], "pairs": int(c["n_pairs"])}


def platform_quality(readings: Iterable[Mapping], group_of: Callable[[Mapping], Hashable],
                     model_names: Callable[[str], str]) -> dict:
    """``{"noise_ceiling": {...}, "reference": {...} | None}`` from one platform's successful readings
    (``Store.platform_readings``: ``model_sha256``, ``median_ms``, ``job_kind``, ``session_spread``, ``flags``,
    ``finished_at_unix``).

    Noise ceiling: readings grouped by ``group_of(reading)`` (model and inputs), reference readings left out,
    every pair within a group. Reference: the latest reference reading (by ``finished_at_unix``); its record is
    the platform's reference readings of the same model, ``drift`` = latest median / median of the record's
    medians - 1."""
    groups: dict[Hashable, list[float]] = {}
    references = []
    for r in readings:
        if not r.get("median_ms") or r["median_ms"] <= 0:
            continue
        if r.get("job_kind") == "reference":
            references.append(r)
        else:
            groups.setdefault(group_of(r), []).append(float(r["median_ms"]))
    reference = None
    if references:
        latest = max(references, key=lambda r: (r.get("finished_at_unix") or 0.0))
        record = [float(r["median_ms"]) for r in references if r["model_sha256"] == latest["model_sha256"]]
        reference = {
            "model_sha256": latest["model_sha256"], "model_name": model_names(latest["model_sha256"]),
            "median_ms": float(latest["median_ms"]), "session_spread": latest.get("session_spread"),
            "flags": list(latest.get("flags") or []), "finished_at_unix": latest.get("finished_at_unix"),
            "readings": len(record), "drift": float(latest["median_ms"]) / statistics.median(record) - 1.0,
        }
    return {"noise_ceiling": ceiling_of(groups), "reference": reference}
