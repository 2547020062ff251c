"""A reading: several independent sessions of one model, aggregated robustly.

One session is one load of the model and one timed loop
(:func:`~fleetmeter.agent.bench.run_benchmark`), run in its own process by
the agent (:mod:`fleetmeter.agent.worker`), with the interference guard
watching its timed window. Two loads of the same model differ by more than
one loop's spread (allocation, arena and thread placement differ per load),
so a reading is made of ``sessions`` of them.

The rule (:func:`measure_reading`), with ``k = sessions``:

1. Run sessions one after another (before each, the worker waits — at most
   ``max_speed_wait_s`` — for its speed probe to say the machine runs at its
   usual speed). A session whose window the guard calls *disturbed* is not
   a candidate; the next one starts after a short pause (n x 0.25 s).
2. Once there are ``k`` undisturbed sessions: if the ``k`` fastest of them
   agree — spread ``(max - min) / median <= max_session_spread`` — they are
   the reading. (Interference only ever slows a run down, so the fastest
   sessions that agree are the machine at its usual speed; a slow phase the
   guards missed shows up as sessions slower than the rest.)
3. Otherwise run one more session and try again, up to ``max_sessions``
   sessions in all, or until more than ``max_disturbed_reruns`` sessions were
   disturbed. Out of budget: among the undisturbed sessions (or, with none,
   the disturbed ones — the reading is then flagged ``disturbed``), the
   first window of ``k`` (or all, if fewer) consecutive medians from the
   fastest up that agrees is the reading; if none agrees, every one of them
   is accepted, the spread over all is reported and the reading is flagged
   ``unstable`` — kept, never silently averaged.

A failed session (the model cannot load or run) ends the reading with that
failure: it is a property of the model, not noise.

The accepted sessions' samples, in run order, are the reading's samples;
its summary is derived from them. Every session, accepted or not, is kept
in ``sessions`` with its median, count, load time and guard figures.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ._checks import require_finite, require_ints

__all__ = ["ReadingSettings", "Reading", "SessionRun", "choose_sessions", "combine", "measure_reading",
           "relative_spread", "session_record"]

FLAG_UNSTABLE = "unstable"
FLAG_DISTURBED = "disturbed"


@dataclass(frozen=True)
class ReadingSettings:
    """How one reading is made (proto ``ReadingSettings``; absent fields take these defaults).

    ``session_min_duration_ms`` is each session's ``min_duration_ms`` when the
    job's ``BenchSettings`` leave it unset: ``k`` short sessions cost about
    what one long loop cost before, and buy independence instead of length.
    """

    sessions: int = 3
    max_sessions: int = 0                 # 0: 2 x sessions
    max_session_spread: float = 0.05
    max_other_cpu_cores: float = 0.25
    max_steal_share: float = 0.05
    max_disturbed_reruns: int = 3
    isolate: bool = True
    session_min_duration_ms: float = 150.0
    max_probe_slowdown: float = 0.10
    max_speed_wait_s: float = 1.5

    def __post_init__(self) -> None:
        require_ints(self, ("sessions", "max_sessions", "max_disturbed_reruns"), at_least=0)
        if self.sessions < 1:
            raise ValueError(f"ReadingSettings.sessions must be >= 1, got {self.sessions}")
        if self.max_sessions and self.max_sessions < self.sessions:
            raise ValueError(f"ReadingSettings.max_sessions ({self.max_sessions}) < sessions ({self.sessions})")
        require_finite(self, ("max_session_spread", "max_other_cpu_cores", "max_steal_share",
                              "session_min_duration_ms", "max_probe_slowdown", "max_speed_wait_s"), at_least=0)

    @property
    def session_cap(self) -> int:
        return self.max_sessions or 2 * self.sessions

    @classmethod
    def from_proto(cls, msg: Any) -> "ReadingSettings":
        """From a ``common_pb2.ReadingSettings`` (unset fields: defaults). Raises ValueError."""
        defaults = cls()
        return cls(**{f: (getattr(msg, f) if msg is not None and msg.HasField(f) else getattr(defaults, f))
                      for f in cls.__dataclass_fields__})

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SessionRun:
    """What one session gave: its samples (ms), or a failure; the guard's figures."""

    samples_ms: Sequence[float]
    result: Mapping[str, Any]                  # the session's BenchResult JSON dict
    interference: Optional[Mapping[str, Any]] = None
    failure_kind: Optional[str] = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def disturbed(self) -> bool:
        return bool(self.interference and self.interference.get("disturbed"))


@dataclass
class Reading:
    """The outcome: accepted session indices, the spread, flags, every session."""

    runs: List[SessionRun]
    accepted: List[int]
    session_spread: Optional[float]
    flags: List[str] = field(default_factory=list)
    started_unix: List[float] = field(default_factory=list)

    @property
    def failed(self) -> Optional[SessionRun]:
        return next((r for r in self.runs if r.failure_kind), None)

    @property
    def samples_ms(self) -> List[float]:
        return [s for i in self.accepted for s in self.runs[i].samples_ms]


def relative_spread(medians: Sequence[float]) -> float:
    """``(max - min) / median`` of session medians (0 for one session)."""
    mid = statistics.median(medians)
    return (max(medians) - min(medians)) / mid if mid > 0 else math.inf


def choose_sessions(runs: Sequence[SessionRun], k: int, among: Optional[Sequence[int]] = None,
                    tol: Optional[float] = None) -> tuple[List[int], float]:
    """``k`` sessions (of ``among``; default: the undisturbed ones if there
    are ``k`` of them, else all) whose medians agree, and their spread.

    Windows of ``k`` consecutive medians in sorted order are tried from the
    fastest up: the first whose spread is ``<= tol`` wins (interference only
    ever slows a run down, so the fastest sessions that agree are the
    machine at its usual speed); with no such window, or no ``tol``, the
    tightest one. Ties go to the earlier sessions. Indices in run order.
    """
    if among is None:
        clean = [i for i, r in enumerate(runs) if not r.disturbed]
        among = clean if len(clean) >= k else list(range(len(runs)))
    if len(among) < k or k < 1:
        raise ValueError(f"need {k} sessions, have {len(among)}")
    order = sorted(among, key=lambda i: (runs[i].median_ms, i))
    windows = [order[start:start + k] for start in range(len(order) - k + 1)]
    spreads = [relative_spread([runs[i].median_ms for i in w]) for w in windows]
    if tol is not None:
        for window, spread in zip(windows, spreads):
            if spread <= tol:
                return sorted(window), spread
    best = min(range(len(windows)), key=lambda j: (spreads[j], j))
    return sorted(windows[best]), spreads[best]


RERUN_PAUSE_S = 0.25  # before the n-th re-run of a disturbed session, pause n x this (slow phases pass)


def measure_reading(run_session: Callable[[], SessionRun], settings: ReadingSettings,
                    clock: Callable[[], float] = time.time,
                    sleep: Callable[[float], None] = time.sleep) -> Reading:
    """Run sessions under the rule of the module docstring. ``run_session`` runs one."""
    k, tol = settings.sessions, settings.max_session_spread
    runs: List[SessionRun] = []
    started: List[float] = []
    disturbed = 0
    while len(runs) < settings.session_cap:
        started.append(clock())
        run = run_session()
        runs.append(run)
        if run.failure_kind:
            return Reading(runs, [], None, [], started)
        if run.disturbed:
            disturbed += 1
            if disturbed > settings.max_disturbed_reruns:
                break
            sleep(RERUN_PAUSE_S * disturbed)
            continue
        clean = [i for i, r in enumerate(runs) if not r.disturbed]
        if len(clean) >= k:  # done when the k fastest undisturbed sessions agree
            accepted = sorted(sorted(clean, key=lambda i: (runs[i].median_ms, i))[:k])
            spread = relative_spread([runs[i].median_ms for i in accepted])
            if spread <= tol:
                return _reading(runs, accepted, spread, tol, started)
    # Out of budget: the clean sessions if there are any (fewer than k is
    # still a clean reading), else the disturbed ones, flagged.
    clean = [i for i, r in enumerate(runs) if not r.disturbed]
    pool = clean or list(range(len(runs)))
    accepted, spread = choose_sessions(runs, min(k, len(pool)), pool, tol)
    if spread > tol:  # never settled: keep every session of the pool, flagged
        accepted, spread = pool, relative_spread([runs[i].median_ms for i in pool])
    return _reading(runs, accepted, spread, tol, started)


def _reading(runs: List[SessionRun], accepted: List[int], spread: float, tol: float,
             started: List[float]) -> Reading:
    flags: List[str] = []
    if spread > tol:
        flags.append(FLAG_UNSTABLE)
    if any(runs[i].disturbed for i in accepted):
        flags.append(FLAG_DISTURBED)
    return Reading(runs, accepted, spread, flags, started)


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [x for x in values if x is not None]
    return statistics.median(present) if present else None


def session_record(index: int, run: SessionRun, accepted: bool) -> Dict[str, Any]:
    """One entry of a reading's ``sessions`` (JSON-ready; the proto ``SessionSummary``)."""
    r = run.result
    return {"index": index, "median_ms": run.median_ms if run.samples_ms else 0.0, "n": len(run.samples_ms),
            "load_ms": r.get("load_ms") or 0.0, "started_at_unix": r.get("started_at_unix") or 0.0,
            "finished_at_unix": r.get("finished_at_unix") or 0.0,
            "interference": dict(run.interference) if run.interference else None, "accepted": accepted,
            "stop_reason": r.get("stop_reason") or "", "failure_kind": run.failure_kind or ""}


def combine(reading: Reading) -> Dict[str, Any]:
    """The reading as one ``BenchResult``-shaped JSON dict, plus ``sessions``,
    ``session_spread``, ``interference`` (the accepted session the guard saw
    the most other CPU in) and ``flags``.

    Samples are the accepted sessions' samples and the summary is derived
    from them; load and first-run times are medians over the accepted
    sessions; energy per inference is total energy over total runs (only
    when every accepted session measured it); temperatures are the first
    session's before and the last one's after.
    """
    from .stats import summarize

    failed = reading.failed
    sessions = [session_record(i, run, i in reading.accepted) for i, run in enumerate(reading.runs)]
    if failed is not None:
        return {**failed.result, "sessions": sessions, "session_spread": None, "interference": failed.interference,
                "flags": []}
    acc = [reading.runs[i] for i in reading.accepted]
    out = dict(acc[0].result)
    samples = reading.samples_ms
    out["samples_ms"] = samples
    out["latency_ms"] = summarize(samples).to_dict()
    out["load_ms"] = _median([r.result.get("load_ms") for r in acc])
    out["first_run_ms"] = _median([r.result.get("first_run_ms") for r in acc])
    rss = [r.result.get("peak_rss_bytes") for r in acc if r.result.get("peak_rss_bytes") is not None]
    out["peak_rss_bytes"] = max(rss) if rss else None
    energies = [(r.result.get("energy_mj_per_inference"), len(r.samples_ms), r.result.get("avg_power_w"),
                 sum(r.samples_ms)) for r in acc]
    if all(e is not None for e, _, _, _ in energies):
        out["energy_mj_per_inference"] = sum(e * n for e, n, _, _ in energies) / sum(n for _, n, _, _ in energies)
        powered = [(p, t) for _, _, p, t in energies if p is not None]
        out["avg_power_w"] = (sum(p * t for p, t in powered) / sum(t for _, t in powered)
                              if powered and sum(t for _, t in powered) > 0 else None)
    else:
        out["energy_mj_per_inference"] = out["avg_power_w"] = None
    first, last = reading.runs[0].result, reading.runs[-1].result
    out["temps_c_before"] = first.get("temps_c_before") or {}
    out["temps_c_after"] = last.get("temps_c_after") or {}
    out["started_at_unix"] = first.get("started_at_unix")
    out["finished_at_unix"] = last.get("finished_at_unix")
    guarded = [r.interference for r in acc if r.interference]
    out["interference"] = (dict(max(guarded, key=lambda g: g.get("other_cpu_cores") or 0.0))
                           if guarded else None)
    out["sessions"] = sessions
    out["session_spread"] = reading.session_spread
    out["flags"] = list(reading.flags)
    return out
