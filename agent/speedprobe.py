"""The speed probe: is the machine itself running slow right now?

Process counters (:mod:`fleetmeter.agent.interference`) see what other
processes on this machine do. They cannot see a host that runs other
tenants' virtual machines on the same cores, a power cap or a throttled
clock: on a shared VM the same model runs 30-60 % slower for a second or two
at a time while every counter inside the VM reads quiet. So around each
timed window the measurement process also times a fixed probe — a small
single-threaded float32 matrix product, about 20 ms — and compares it with
the worker's recent best (the 5th percentile of its last 300 probes). On the
2-vCPU development VM the probe's slowdown tracked the model's with a
correlation of 0.93 and caught 98.7 % of the windows where the model ran
more than 10 % slow (docs/benchmarks.md §9).
"""
from __future__ import annotations

import collections
import time
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional

import numpy as np

__all__ = ["SpeedProbe", "ProbeBaseline", "ProbedGuard"]


class SpeedProbe:
    """Times blocks of 20 products of two 96x96 float32 matrices; ``measure()`` → median µs per block."""

    def __init__(self, duration_s: float = 0.02, clock: Callable[[], float] = time.perf_counter) -> None:
        rng = np.random.default_rng(0)
        self._a = rng.random((96, 96), dtype=np.float32)
        self._b = rng.random((96, 96), dtype=np.float32)
        self.duration_s, self.clock = duration_s, clock

    def measure(self) -> float:
        a, b, clock = self._a, self._b, self.clock
        times: List[float] = []
        end = clock() + self.duration_s
        while True:
            t0 = clock()
            for _ in range(20):
                a @ b
            t1 = clock()
            times.append((t1 - t0) * 1e6)
            if t1 >= end and len(times) >= 3:
                return float(np.median(times))


class ProbeBaseline:
    """The recent best probe time: the ``quantile`` of the last ``size`` probes (None below 5).

    A long memory and a low quantile: on a host that is slow most of the time
    for minutes, a short window would take the slow speed for the usual one.
    A device that became slower for good is followed after ``size`` probes
    (a few hundred sessions)."""

    def __init__(self, size: int = 300, quantile: float = 0.05) -> None:
        self._values: Deque[float] = collections.deque(maxlen=size)
        self.quantile = quantile

    def add(self, values: Iterable[float]) -> None:
        self._values.extend(float(v) for v in values if v and v > 0)

    def best_us(self) -> Optional[float]:
        if len(self._values) < 5:
            return None
        return float(np.quantile(np.asarray(self._values), self.quantile))


class _Probed:
    def __init__(self, figures: Dict[str, Any]) -> None:
        self._figures = figures

    def to_dict(self) -> Dict[str, Any]:
        return dict(self._figures)


class ProbedGuard:
    """An interference guard plus the probe on both sides of the window.

    ``stop()`` returns the inner guard's figures with ``probe_slowdown``
    (the mean of the two probes over ``baseline_us``, minus 1; None
    without a baseline) and ``probe_us`` added; a slowdown above
    ``max_slowdown`` makes the window disturbed.
    """

    def __init__(self, inner: Any, probe: SpeedProbe, baseline_us: Optional[float], max_slowdown: float) -> None:
        self.inner, self.probe = inner, probe
        self.baseline_us, self.max_slowdown = baseline_us, max_slowdown
        self._before: Optional[float] = None

    def start(self) -> None:
        self._before = self.probe.measure()
        self.inner.start()

    def stop(self) -> _Probed:
        figures = self.inner.stop().to_dict()
        after = self.probe.measure()
        probes = [p for p in (self._before, after) if p is not None]
        slowdown = (sum(probes) / len(probes) / self.baseline_us - 1.0) if self.baseline_us and probes else None
        figures["probe_us"] = probes
        figures["probe_slowdown"] = slowdown
        if slowdown is not None and slowdown > self.max_slowdown:
            figures["disturbed"] = True
            figures["reasons"] = list(figures.get("reasons") or []) + [
                f"probe_slowdown {slowdown:.2f} > {self.max_slowdown:.2f}"]
        return _Probed(figures)


def wait_for_speed(probe: SpeedProbe, baseline: ProbeBaseline, max_slowdown: float, max_wait_s: float,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> float:
    """Before a session: probe until the machine runs at its usual speed
    (slowdown <= ``max_slowdown`` against ``baseline``), pausing 0.1 s between
    probes, for at most ``max_wait_s``. Every probe joins the baseline.
    Returns the seconds waited (the session starts either way)."""
    best = baseline.best_us()
    if best is None or max_wait_s <= 0:
        return 0.0
    start = clock()
    while True:
        us = probe.measure()
        baseline.add([us])
        waited = clock() - start
        if us / best - 1.0 <= max_slowdown or waited >= max_wait_s:
            return waited
        sleep(0.1)
