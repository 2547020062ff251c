"""The speed probe, its baseline, the probed guard and the wait for a fast machine (fake probes and clocks)."""
from __future__ import annotations

import pytest

from fleetmeter.agent.speedprobe import ProbeBaseline, ProbedGuard, SpeedProbe, wait_for_speed


class ScriptedProbe:
    def __init__(self, values):
        self.values = list(values)
        self.calls = 0

    def measure(self) -> float:
        self.calls += 1
        return self.values.pop(0)


class QuietInner:
    def __init__(self):
        self.started = False

    def start(self):
        self.started = True

    def stop(self):
        class Figures:
            @staticmethod
            def to_dict():
                return {"window_s": 0.2, "other_cpu_cores": 0.0, "disturbed": False, "reasons": []}
        return Figures()


def test_real_probe_measures_something_positive():
    assert SpeedProbe(duration_s=0.005).measure() > 0


def test_baseline_is_a_low_quantile_and_needs_five_probes():
    b = ProbeBaseline(size=10, quantile=0.1)  # small, to test the rolling window
    b.add([300, 310, 305, 900])
    assert b.best_us() is None, "four probes are too few to call anything slow"
    b.add([302, 950, 301, 299, 1000, 980])
    assert 299 <= b.best_us() < 320, "slow probes must not drag the baseline up"
    b.add([600] * 10)
    assert b.best_us() == 600, "the baseline follows a machine that became slower for good (rolling window)"


def test_probed_guard_flags_a_slow_machine_and_adds_its_figures():
    inner = QuietInner()
    guard = ProbedGuard(inner, ScriptedProbe([450.0, 470.0]), baseline_us=300.0, max_slowdown=0.10)
    guard.start()
    assert inner.started
    figures = guard.stop().to_dict()
    assert figures["probe_us"] == [450.0, 470.0]
    assert figures["probe_slowdown"] == pytest.approx(460 / 300 - 1)
    assert figures["disturbed"] and "probe_slowdown" in figures["reasons"][0], \
        "a window where the machine ran 50 % slow must be disturbed, with the reason"


def test_probed_guard_leaves_a_normal_window_alone_and_judges_nothing_without_a_baseline():
    figures = ProbedGuard(QuietInner(), ScriptedProbe([305.0, 310.0]), 300.0, 0.10)
    figures.start()
    out = figures.stop().to_dict()
    assert not out["disturbed"] and out["probe_slowdown"] == pytest.approx(0.025)
    unjudged = ProbedGuard(QuietInner(), ScriptedProbe([900.0, 900.0]), None, 0.10)
    unjudged.start()
    out = unjudged.stop().to_dict()
    assert out["probe_slowdown"] is None and not out["disturbed"], "no baseline yet: no verdict"


def test_wait_for_speed_waits_for_a_fast_probe_and_is_bounded():
    baseline = ProbeBaseline()
    baseline.add([300.0] * 10)
    t = [0.0]
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        t[0] += s

    probe = ScriptedProbe([500.0, 480.0, 310.0])
    waited = wait_for_speed(probe, baseline, 0.10, 5.0, sleep=sleep, clock=lambda: t[0])
    assert probe.calls == 3 and waited == pytest.approx(0.2), "must stop waiting at the first fast probe"
    slow = ScriptedProbe([500.0] * 100)
    waited = wait_for_speed(slow, baseline, 0.10, 1.0, sleep=sleep, clock=lambda: t[0])
    assert 1.0 <= waited < 1.2, "the wait is bounded by max_wait_s"
    assert wait_for_speed(ScriptedProbe([]), ProbeBaseline(), 0.1, 5.0) == 0.0, "no baseline: no wait"
