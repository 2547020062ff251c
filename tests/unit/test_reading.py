"""The reading rule: sessions, re-measure on spread, re-run on disturbance, flags.

Sessions are scripted (median, disturbed) pairs; a fake clock stamps them.
"""
from __future__ import annotations

import itertools

import pytest

from fleetmeter.agent.reading import (ReadingSettings, SessionRun, choose_sessions, combine, measure_reading,
                                      relative_spread)

from _support import FakeClock  # tests/ is on sys.path


def ticking_clock() -> FakeClock:
    """Every read is one second after the previous one (1001.0, 1002.0, ...)."""
    return FakeClock(start_s=1000.0, step_s=1.0)


def script(*sessions):
    """(median_ms, disturbed) per session, in the order they will run; a str is a failure kind."""
    it = iter(sessions)
    calls = []

    def run() -> SessionRun:
        spec = next(it)
        calls.append(spec)
        if isinstance(spec, str):
            return SessionRun(samples_ms=[], result={"failure_kind": spec, "failure_message": "boom"},
                              failure_kind=spec)
        median, disturbed = spec if isinstance(spec, tuple) else (spec, False)
        samples = [median * 0.99, median, median * 1.01]
        return SessionRun(samples_ms=samples,
                          result={"samples_ms": samples, "load_ms": 5.0, "first_run_ms": 2.0,
                                  "peak_rss_bytes": 100, "energy_mj_per_inference": None, "avg_power_w": None,
                                  "started_at_unix": 1.0, "finished_at_unix": 2.0, "stop_reason": "stable"},
                          interference={"other_cpu_cores": 0.9 if disturbed else 0.0, "disturbed": disturbed,
                                        "reasons": ["other_cpu_cores 0.90 > 0.25"] if disturbed else []})

    run.calls = calls
    return run


def test_three_agreeing_sessions_make_a_clean_reading():
    run = script(10.0, 10.2, 10.1)
    reading = measure_reading(run, ReadingSettings(sessions=3), clock=ticking_clock())
    assert len(run.calls) == 3, "agreeing sessions must not be re-measured"
    assert reading.accepted == [0, 1, 2] and reading.flags == []
    assert reading.session_spread == pytest.approx(0.2 / 10.1)
    assert reading.started_unix == [1001.0, 1002.0, 1003.0], "each session is stamped by the injected clock"


def test_an_outlier_session_is_re_measured_and_left_out():
    run = script(10.0, 14.0, 10.1, 10.2)
    reading = measure_reading(run, ReadingSettings(sessions=3, max_session_spread=0.05), clock=ticking_clock())
    assert len(run.calls) == 4, "a spread above the threshold must trigger one more session"
    assert reading.accepted == [0, 2, 3], "the three that agree form the reading"
    assert reading.flags == []
    out = combine(reading)
    assert [s["accepted"] for s in out["sessions"]] == [True, False, True, True], "the outlier is kept, unaccepted"
    assert out["latency_ms"]["n"] == 9 and 10.0 <= out["latency_ms"]["median"] <= 10.2


def test_a_reading_that_never_settles_is_flagged_unstable_not_averaged_silently():
    run = script(10.0, 13.0, 16.0, 19.0, 22.0, 25.0, 99.0)
    reading = measure_reading(run, ReadingSettings(sessions=3, max_sessions=6), clock=ticking_clock())
    assert len(run.calls) == 6, "re-measuring is bounded by max_sessions"
    assert reading.flags == ["unstable"]
    assert reading.accepted == list(range(6)), "an unstable reading keeps every session"
    assert reading.session_spread == pytest.approx(relative_spread([10, 13, 16, 19, 22, 25]))
    assert combine(reading)["flags"] == ["unstable"]


def test_a_disturbed_session_is_re_run_and_not_used():
    pauses = []
    run = script(10.0, (30.0, True), 10.1, 10.05)
    reading = measure_reading(run, ReadingSettings(sessions=3), clock=ticking_clock(), sleep=pauses.append)
    assert len(run.calls) == 4
    assert pauses == [0.25], 'a re-run waits a moment for a slow phase to pass'
    assert 1 not in reading.accepted and reading.flags == []


def test_disturbed_beyond_the_rerun_budget_is_flagged():
    run = script((10.0, True), (10.1, True), (10.2, True), (10.0, True), (10.1, True))
    reading = measure_reading(run, ReadingSettings(sessions=3, max_disturbed_reruns=2), clock=ticking_clock(),
                              sleep=lambda s: None)
    assert len(run.calls) == 3, "two re-runs allowed; the third disturbed session ends the attempt"
    assert "disturbed" in reading.flags, "a reading made of disturbed sessions must say so"
    assert combine(reading)["interference"]["disturbed"] is True


def test_fewer_clean_sessions_beat_disturbed_ones():
    run = script(9.0, (14.0, True), (14.2, True), (14.1, True), (14.3, True))
    reading = measure_reading(run, ReadingSettings(sessions=3, max_disturbed_reruns=3), clock=ticking_clock(),
                              sleep=lambda s: None)
    assert reading.accepted == [0], "the one undisturbed session is the reading, not the slow disturbed ones"
    assert reading.flags == [] and combine(reading)["latency_ms"]["median"] == 9.0


def test_a_failed_session_fails_the_reading_without_retrying():
    run = script(10.0, "unsupported_op", 10.0)
    reading = measure_reading(run, ReadingSettings(sessions=3), clock=ticking_clock())
    assert len(run.calls) == 2, "a model that cannot run is not noise: no more sessions"
    out = combine(reading)
    assert out["failure_kind"] == "unsupported_op" and out["flags"] == []


def test_one_session_is_the_old_single_run():
    run = script(7.0)
    reading = measure_reading(run, ReadingSettings(sessions=1), clock=ticking_clock())
    assert reading.accepted == [0] and reading.session_spread == 0.0 and reading.flags == []


def test_choose_sessions_prefers_undisturbed_and_tightest():
    runs = [SessionRun([m], {}, {"disturbed": d}) for m, d in
            [(10.0, False), (10.0, True), (12.0, False), (10.3, False), (10.1, False)]]
    idx, spread = choose_sessions(runs, 3)
    assert idx == [0, 3, 4], "the disturbed session must not be chosen while 3 clean ones exist"
    assert spread == pytest.approx(0.3 / 10.1)


def test_energy_is_total_energy_over_total_runs():
    def run_with(e, n):
        samples = [1.0] * n
        return SessionRun(samples, {"samples_ms": samples, "energy_mj_per_inference": e, "avg_power_w": e})
    from fleetmeter.agent.reading import Reading

    reading = Reading(runs=[run_with(2.0, 10), run_with(4.0, 30)], accepted=[0, 1], session_spread=0.0)
    out = combine(reading)
    assert out["energy_mj_per_inference"] == pytest.approx((2.0 * 10 + 4.0 * 30) / 40)
    reading = Reading(runs=[run_with(2.0, 10), run_with(None, 30)], accepted=[0, 1], session_spread=0.0)
    assert combine(reading)["energy_mj_per_inference"] is None, "energy is absent unless every session measured it"


@pytest.mark.parametrize("kwargs", [dict(sessions=0), dict(sessions=3, max_sessions=2),
                                    dict(max_session_spread=float("nan")), dict(max_other_cpu_cores=-1.0),
                                    dict(sessions=True)])
def test_settings_are_validated(kwargs):
    with pytest.raises(ValueError):
        ReadingSettings(**kwargs)


def test_settings_from_proto_take_defaults_for_unset_fields():
    from fleetmeter.v1 import common_pb2

    s = ReadingSettings.from_proto(common_pb2.ReadingSettings(sessions=5, isolate=False))
    assert s.sessions == 5 and s.isolate is False and s.max_session_spread == ReadingSettings().max_session_spread
    assert ReadingSettings.from_proto(None) == ReadingSettings()
    assert ReadingSettings(sessions=4).session_cap == 8


def test_every_outcome_is_bounded():
    """Whatever the sessions do, a reading stops within max_sessions."""
    pattern = itertools.cycle([(10.0, True), 20.0, (5.0, True), 40.0])
    reading = measure_reading(lambda: script(next(pattern))(), ReadingSettings(sessions=3, max_sessions=7),
                              clock=ticking_clock())
    assert len(reading.runs) == 7


def test_the_fastest_agreeing_sessions_win_over_a_tighter_slow_cluster():
    """Slow phases the guards miss make tight clusters too; interference only slows runs down."""
    runs = [SessionRun([m], {}, None) for m in (13.00, 10.0, 13.01, 10.3, 13.02, 10.2)]
    idx, spread = choose_sessions(runs, 3, tol=0.05)
    assert idx == [1, 3, 5] and spread == pytest.approx(0.3 / 10.2)
    reading = measure_reading(script(13.0, 10.0, 13.01, 13.02, 10.3, 10.2), ReadingSettings(sessions=3),
                              clock=ticking_clock())
    assert reading.accepted == [1, 4, 5], "only the k fastest undisturbed sessions agreeing end the reading"
    assert reading.flags == [] and reading.session_spread <= 0.05
